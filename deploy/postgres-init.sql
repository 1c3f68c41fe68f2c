-- Catalog and billing own separate databases; no table is shared between services.
CREATE DATABASE catalog;
CREATE DATABASE billing;
