"""The one SQLite migration helper, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from pbxlink.toolkit.sqlite_schema import (
    ForeignDatabase,
    MigrationFailed,
    Schema,
    SchemaTooNew,
    migrate,
    split_statements,
)

APP = 0x74657374  # "test"
V1 = "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
V2 = """
ALTER TABLE things ADD COLUMN colour TEXT;
CREATE TABLE log (line TEXT);
CREATE TRIGGER thing_added AFTER INSERT ON things BEGIN
    INSERT INTO log VALUES ('added ' || NEW.name);
END;
"""
SCHEMA = Schema("test file", (V1, V2), application_id=APP)


def _pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


async def _migrate(path: Path, schema: Schema = SCHEMA) -> int:
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA busy_timeout = 5000")
        return await migrate(conn, schema, path=path)


async def test_a_new_file_gets_every_migration_its_version_and_application_id(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    assert await _migrate(path) == 0
    assert _pragma(path, "user_version") == 2
    assert _pragma(path, "application_id") == APP
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO things (name, colour) VALUES ('a', 'red')")
        assert conn.execute("SELECT line FROM log").fetchall() == [("added a",)]


async def test_an_old_file_gets_only_the_missing_steps_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    await _migrate(path, Schema("test file", (V1,), application_id=APP))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO things (name) VALUES ('kept')")
    assert await _migrate(path) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name, colour FROM things").fetchall() == [("kept", None)]
    assert await _migrate(path) == 2  # already current: nothing to do


async def test_a_file_from_a_newer_pbxlink_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    await _migrate(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 3")
    with pytest.raises(SchemaTooNew) as caught:
        await _migrate(path)
    assert (caught.value.found, caught.value.known) == (3, 2)
    assert str(path) in str(caught.value)
    assert _pragma(path, "user_version") == 3


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 42")
        conn.execute("CREATE TABLE precious (x)")
    with pytest.raises(ForeignDatabase, match="another application"):
        await _migrate(path)
    assert _pragma(path, "user_version") == 0


async def test_a_failing_step_rolls_back_every_step_of_the_run(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    broken = Schema("test file", (V1, "ALTER TABLE things ADD COLUMN x TEXT; SELECT * FROM missing;"))
    with pytest.raises(MigrationFailed, match="nothing was changed") as caught:
        await _migrate(path, broken)
    assert (caught.value.found, caught.value.target) == (0, 2)
    assert _pragma(path, "user_version") == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


async def test_a_second_process_that_waited_for_the_lock_finds_the_file_migrated(tmp_path: Path) -> None:
    """Two processes open a new file together: the one that waits re-reads the version under the lock.

    The other process holds the write lock with the schema created but not committed while this
    one reads version 0; it commits the moment this one asks for the write lock. Without the
    re-read, this one would run ``CREATE TABLE things`` a second time and fail.
    """
    path = tmp_path / "t.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    for script in SCHEMA.migrations:
        for statement in split_statements(script):
            other.execute(statement)
    other.execute("PRAGMA user_version = 2")
    other.execute(f"PRAGMA application_id = {APP}")

    def commit_the_other_on_begin(statement: str) -> None:
        if statement.startswith("BEGIN IMMEDIATE") and other.in_transaction:
            other.execute("COMMIT")

    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.set_trace_callback(commit_the_other_on_begin)
        assert await migrate(conn, SCHEMA, path=path) == 2  # found done under the lock
    other.close()
    assert _pragma(path, "user_version") == 2


def test_statements_split_keeps_trigger_bodies_whole() -> None:
    statements = split_statements(V2)
    assert len(statements) == 3
    assert statements[2].startswith("CREATE TRIGGER")
    assert statements[2].endswith("END;")
