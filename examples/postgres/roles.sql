-- Tessera on PostgreSQL with an application role that owns nothing (docs/audit.md,
-- "Append-only"). Run ONCE, as a superuser or a role with CREATEROLE, before `tessera init`:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -v schema=tessera \
--        -v owner=tessera_owner -v owner_password="$OWNER_PW" \
--        -v app=tessera_app -v app_password="$APP_PW" -f examples/postgres/roles.sql
--
-- Then run `tessera init` as the owner role, then grants.sql as the owner role, then
-- `tessera serve` as the application role. tests/contract/test_audit_pg_roles.py runs these
-- files as they are.

-- Owns the schema and every table; used only for migrations (`tessera init`).
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
-- Runs `tessera serve` and the CLI; owns nothing, so it cannot ALTER, DISABLE TRIGGER,
-- DROP TRIGGER or DROP anything, and gets only the privileges grants.sql gives it.
CREATE ROLE :"app" LOGIN PASSWORD :'app_password' NOINHERIT;

CREATE SCHEMA :"schema" AUTHORIZATION :"owner";
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE ON SCHEMA :"schema" TO :"app";  -- USAGE, not CREATE: no new tables or functions

-- Both roles find Tessera's tables without a search_path in TESSERA_DATABASE_URL.
ALTER ROLE :"owner" SET search_path = :"schema";
ALTER ROLE :"app" SET search_path = :"schema";
