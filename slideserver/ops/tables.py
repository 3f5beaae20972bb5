"""What a database holds, read the same way on SQLite and PostgreSQL: row counts and versions."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text

from slideserver.annotations import migrations as annotation_migrations
from slideserver.catalog import migrations as catalog_migrations
from slideserver.security import migrations as security_migrations

VERSION_TABLES = {
    "catalog": catalog_migrations.CHAIN.version_table,
    "security": security_migrations.CHAIN.version_table,
    "annotations": annotation_migrations.CHAIN.version_table,
}
"""The version table of each Alembic chain sharing the database."""


@dataclass(frozen=True)
class Contents:
    """Row counts per table and the revision of each migration chain, from one snapshot."""

    tables: dict[str, int]
    schema_versions: dict[str, str | None]


def table_names(connection: Connection) -> list[str]:
    """Return the tables of the connection's default schema, sorted."""
    return sorted(inspect(connection).get_table_names())


def read_contents(connection: Connection) -> Contents:
    """Count every table's rows and read both chains' revisions, in the connection's snapshot."""
    quote = connection.dialect.identifier_preparer.quote
    names = table_names(connection)
    tables = {
        name: int(connection.execute(text(f"SELECT count(*) FROM {quote(name)}")).scalar_one())
        for name in names
    }
    versions: dict[str, str | None] = {}
    for chain, table in VERSION_TABLES.items():
        versions[chain] = (
            connection.execute(text(f"SELECT version_num FROM {quote(table)}")).scalar()
            if table in names
            else None
        )
    return Contents(tables, versions)


def differences(
    expected: dict[str, int], found: dict[str, int]
) -> dict[str, tuple[int | None, int | None]]:
    """Return the tables whose counts differ: ``{table: (expected, found)}``."""
    return {
        name: (expected.get(name), found.get(name))
        for name in sorted(set(expected) | set(found))
        if expected.get(name) != found.get(name)
    }
