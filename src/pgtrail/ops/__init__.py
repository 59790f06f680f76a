"""Operations: the schema, partitions, retention, tenants and throwaway services."""
