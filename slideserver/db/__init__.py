"""The database layer shared by the catalog and security: engine, upserts, migrations."""
