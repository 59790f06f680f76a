-- Statements of pgtrail.writer: the batch writer's checks and the price table.
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: sink_bypasses_rls
-- Whether row-level security passes the connected role by: it is (a member of) the owner
-- of the tables, a superuser, or has BYPASSRLS. True when the tables are missing.
SELECT coalesce(pg_has_role((SELECT relowner FROM pg_class
                             WHERE oid = to_regclass('pgtrail_prompt')), 'MEMBER'), true)
    OR (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user);

-- name: sink_probe
-- One round trip, to learn whether PostgreSQL answers.
SELECT 1;

-- name: pricing_prices
-- Every row of the price table.
SELECT model, match_pattern, input_per_mtok, output_per_mtok,
cached_input_per_mtok, valid_from, valid_to FROM pgtrail_model_price;
