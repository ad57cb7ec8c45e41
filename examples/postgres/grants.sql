-- The application role's privileges (docs/audit.md, "Append-only"). Run as the owner role
-- after `tessera init` AND again after every upgrade (`tessera init` runs the migrations;
-- GRANT ... ON ALL TABLES covers only the tables that exist when it runs):
--
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 -v schema=tessera -v app=tessera_app \
--        -f examples/postgres/grants.sql

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"app";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA :"schema" TO :"app";

-- The ledger and its checkpoints: read and append only.
REVOKE UPDATE, DELETE, TRUNCATE ON :"schema".audit_ledger, :"schema".audit_checkpoints
  FROM :"app";
-- Ledger segments (migration 0012): `tessera audit archive` appends a row; `purge` runs as
-- the owner role.
REVOKE UPDATE, DELETE, TRUNCATE ON :"schema".audit_segments FROM :"app";
-- The outbox: DELETE stays (the chainer removes chained entries; a trigger refuses the
-- deletion of an entry the ledger does not hold).
REVOKE UPDATE, TRUNCATE ON :"schema".audit_outbox FROM :"app";
-- The migration bookkeeping: read only (the server checks the schema version).
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON :"schema".alembic_version FROM :"app";
