"""The one SQLite migration helper: schema versions in ``PRAGMA user_version``.

A :class:`Schema` is an ordered tuple of migration scripts: ``migrations[0]`` creates version 1,
and so on. :func:`migrate` brings an open connection to ``len(migrations)``:

* a database from a newer pbxlink (``user_version`` above what we know) is refused;
* a database that belongs to another application (``application_id``) is refused;
* the missing migrations run in ONE transaction (``BEGIN IMMEDIATE``), together with the new
  ``user_version``: a failing step leaves the file exactly as it was;
* the version is read again under the write lock, so two processes opening a new file at the
  same time migrate it once (the second finds it done).

The connection must be in autocommit mode (``isolation_level=None``) or have no transaction open.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from pbxlink.foundation.errors import PbxlinkError

__all__ = [
    "ForeignDatabase",
    "MigrationFailed",
    "Schema",
    "SchemaError",
    "SchemaTooNew",
    "migrate",
    "split_statements",
]


class SchemaError(PbxlinkError):
    """The database cannot be brought to the schema this pbxlink knows."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class SchemaTooNew(SchemaError):
    """The file was written by a newer pbxlink (``user_version`` above ours)."""

    def __init__(self, path: Path, *, found: int, known: int, what: str) -> None:
        super().__init__(
            path,
            f"the {what} has schema version {found}, newer than this pbxlink supports ({known}); "
            "upgrade pbxlink or use another file",
        )
        self.found = found
        self.known = known


class ForeignDatabase(SchemaError):
    """The file is another application's SQLite database (``application_id``)."""

    def __init__(self, path: Path, *, application_id: int, what: str) -> None:
        super().__init__(
            path,
            f"the file belongs to another application, not a pbxlink {what} "
            f"(application_id {application_id:#x})",
        )
        self.application_id = application_id


class MigrationFailed(SchemaError):
    """A migration step failed; the transaction was rolled back, nothing changed."""

    def __init__(self, path: Path, *, found: int, target: int, error: BaseException) -> None:
        super().__init__(
            path,
            f"migrating the schema from version {found} to {target} failed, nothing was changed: {error}",
        )
        self.found = found
        self.target = target


@dataclass(frozen=True, slots=True)
class Schema:
    """What a file must look like: its migrations, in order, and optionally its application_id."""

    what: str  # "outbox", "adapter database", "directory": named in error messages
    migrations: tuple[str, ...]
    application_id: int | None = None

    @property
    def version(self) -> int:
        return len(self.migrations)


def split_statements(script: str) -> list[str]:
    """One migration script as statements (trigger bodies contain semicolons)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


async def _pragma(conn: aiosqlite.Connection, name: str) -> int:
    async with conn.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(conn: aiosqlite.Connection, schema: Schema, *, path: Path) -> int:
    """Bring ``conn`` to ``schema.version``; return the version found before (0 for a new file).

    Raises :class:`SchemaTooNew`, :class:`ForeignDatabase` or :class:`MigrationFailed`;
    ``sqlite3.Error`` from the first reads (not a database, I/O) passes through.
    """
    found = await _pragma(conn, "user_version")
    if schema.application_id is not None:
        application_id = await _pragma(conn, "application_id")
        if application_id not in (0, schema.application_id):
            raise ForeignDatabase(path, application_id=application_id, what=schema.what)
    if found > schema.version:
        raise SchemaTooNew(path, found=found, known=schema.version, what=schema.what)
    if found == schema.version:
        return found
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock.
        found = await _pragma(conn, "user_version")
        if found > schema.version:
            raise SchemaTooNew(path, found=found, known=schema.version, what=schema.what)
        for number, script in enumerate(schema.migrations[found:], start=found + 1):
            for statement in split_statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
        if schema.application_id is not None:
            await conn.execute(f"PRAGMA application_id = {schema.application_id}")
        await conn.execute("COMMIT")
    except sqlite3.Error as exc:
        await _rollback(conn)
        raise MigrationFailed(path, found=found, target=schema.version, error=exc) from exc
    except BaseException:
        await _rollback(conn)
        raise
    return found


async def _rollback(conn: aiosqlite.Connection) -> None:
    if conn.in_transaction:
        await conn.execute("ROLLBACK")
