#!/bin/sh
# One role per database, each with its own password from the environment; neither
# role can connect to the other's database (docker-compose.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v catalog_password="$CATALOG_DB_PASSWORD" -v billing_password="$BILLING_DB_PASSWORD" <<'SQL'
CREATE ROLE catalog LOGIN PASSWORD :'catalog_password';
CREATE ROLE billing LOGIN PASSWORD :'billing_password';
CREATE DATABASE catalog OWNER catalog;
CREATE DATABASE billing OWNER billing;
REVOKE ALL ON DATABASE catalog FROM PUBLIC;
REVOKE ALL ON DATABASE billing FROM PUBLIC;
SQL
