"""The writer: what happens to a record between the caller's call and a committed row."""
