"""Schema versions of the outbox: migrations from old files, refusal of files it cannot use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pbxlink.daemon.envelope import MessageKind
from pbxlink.daemon.outbox import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    JournalEntry,
    JournalKind,
    MessageStatus,
    Outbox,
    OutboxSchemaError,
)

V1_DUMP = Path(__file__).parent / "data" / "outbox_v1.sql"
V2_DUMP = Path(__file__).parent / "data" / "outbox_v2.sql"


def _load_dump(path: Path, dump: Path = V1_DUMP) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(dump.read_text())
    conn.close()


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_new_outbox_has_current_schema_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    async with await Outbox.open(path) as outbox:
        assert outbox.migrated_from == 0
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    assert _pragma(path, "application_id") == APPLICATION_ID
    assert _pragma(path, "journal_mode") == "wal"


async def test_version_1_file_is_migrated_keeping_pending_and_sent_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    _load_dump(path)
    assert _pragma(path, "user_version") == 1

    async with await Outbox.open(path) as outbox:
        assert outbox.migrated_from == 1
        pending = await outbox.pending(limit=10)
        assert [(m.seq, m.message_id, m.kind) for m in pending] == [
            (2, "pbx1:1763852010.15:1", MessageKind.EVENT),
            (3, "pbx1:1763852010.15", MessageKind.OUTCOME),
        ]
        assert pending[1].attempts == 2
        assert pending[1].answered is False
        assert pending[0].expires_at is None  # v1 rows had no expiry: they never expire
        assert await outbox.status_of("pbx1:1763852000.11") is MessageStatus.SENT
        # New rows continue the sequence after the old ones.
        await outbox.save_tracker_state("calls", b"{}", now=1.0)
        assert await outbox.load_tracker_state("calls") == b"{}"
    assert _pragma(path, "user_version") == SCHEMA_VERSION


async def test_database_from_a_newer_pbxlink_is_refused_with_the_versions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    async with await Outbox.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    with pytest.raises(OutboxSchemaError) as caught:
        await Outbox.open(path)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"supports ({SCHEMA_VERSION})" in message
    assert str(path) in message
    assert _pragma(path, "user_version") == SCHEMA_VERSION + 1  # left untouched


async def test_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 42")
    conn.execute("CREATE TABLE precious (x)")
    conn.commit()
    conn.close()

    with pytest.raises(OutboxSchemaError, match="another application"):
        await Outbox.open(path)


async def test_failed_migration_leaves_the_old_schema_and_rows_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    _load_dump(path)
    # A second step that fails half-way: its first statement succeeds, the second cannot.
    broken = (MIGRATIONS[0], "ALTER TABLE outbox ADD COLUMN extra TEXT; SELECT * FROM missing;")

    with pytest.raises(OutboxSchemaError, match="nothing was changed"):
        await Outbox.open(path, migrations=broken)

    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(outbox)")]
    count = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    conn.close()
    assert "extra" not in columns
    assert count == 3
    assert _pragma(path, "user_version") == 1
    # And the real migration still works afterwards.
    async with await Outbox.open(path) as outbox:
        assert len(await outbox.pending(limit=10)) == 2


async def test_version_2_file_is_migrated_keeping_expiry_status_and_gaining_the_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    _load_dump(path, V2_DUMP)
    async with await Outbox.open(path) as outbox:
        assert outbox.migrated_from == 2
        (pending,) = await outbox.pending(limit=10)
        assert pending.message_id == "pbx1:1763900100.4:2"
        assert pending.expires_at == 1763900800.0
        assert await outbox.status_of("pbx1:1763900000.1") is MessageStatus.SENT
        assert await outbox.load_tracker_state("calls") == b"{}"
        assert await outbox.journal() == []
    assert _pragma(path, "user_version") == SCHEMA_VERSION


async def test_version_3_file_is_migrated_keeping_its_journal_which_then_takes_cel_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    _load_dump(path, Path(__file__).parent / "data" / "outbox_v3.sql")
    async with await Outbox.open(path) as outbox:
        assert outbox.migrated_from == 3
        journal = await outbox.journal()
        assert [(e.kind, e.at) for e in journal] == [
            (JournalKind.CLOCK, 1764000000.5),
            (JournalKind.FRAME, None),
        ]
        assert journal[1].data.startswith(b"Event: Newchannel\r\n")
        await outbox.add(
            [], now=1764000002.0, event_ttl=None, journal=[JournalEntry(JournalKind.CEL, b"[]", 2.0)]
        )
        assert [e.kind for e in await outbox.journal()] == [
            JournalKind.CLOCK,
            JournalKind.FRAME,
            JournalKind.CEL,
        ]
    assert _pragma(path, "user_version") == SCHEMA_VERSION
