"""The outbox: every outcome and live event is written here, durably, before it is published.

One SQLite file in WAL mode with ``synchronous=FULL``: a committed row survives a crash or a power
cut. The publisher reads pending rows in order, publishes them and marks them sent only after the
broker's PUBACK (publisher.py). Sent rows are pruned after a retention period.

The schema version lives in the database (``PRAGMA user_version``). Opening a file runs the missing
migrations in one transaction; a file written by a newer pbxlink is refused, as is an SQLite file
that belongs to another application.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import aiosqlite

from pbxlink.daemon.envelope import Envelope, MessageKind
from pbxlink.foundation.errors import PbxlinkError
from pbxlink.toolkit.sqlite_schema import Schema, SchemaError, migrate

APPLICATION_ID: Final = 0x70626C6B  # "pblk": marks the file as a pbxlink outbox

# Each entry upgrades the schema by one version: MIGRATIONS[0] creates version 1, and so on.
# Never edit a released entry; append a new one.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the outbox as first released.
    """
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT    NOT NULL UNIQUE,
        kind       TEXT    NOT NULL,
        topic      TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        direction  TEXT,
        answered   INTEGER,
        created_at REAL    NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        sent_at    REAL
    );
    CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
    """,
    # 2: live events expire (MQTT message expiry), an explicit status, and a table for the
    #    tracker's in-flight state across restarts.
    """
    ALTER TABLE outbox ADD COLUMN expires_at REAL;
    ALTER TABLE outbox ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'expired'));
    UPDATE outbox SET status = 'sent' WHERE sent_at IS NOT NULL;
    DROP INDEX outbox_unsent;
    CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
    CREATE INDEX outbox_done ON outbox (sent_at) WHERE status != 'pending';
    CREATE TABLE tracker_state (
        name       TEXT PRIMARY KEY,
        state      BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 3: the AMI journal - the events of the calls in progress, so that a restarted daemon can
    #    rebuild its tracker by replaying them (the tracker is a pure fold over events).
    """
    CREATE TABLE ami_journal (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('frame', 'resync', 'clock')),
        data BLOB NOT NULL,
        at   REAL
    );
    """,
    # 4: the journal also keeps the CEL records folded in after an AMI gap ('cel'), so that a
    #    restart rebuilds those calls too.
    """
    CREATE TABLE ami_journal_v4 (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('frame', 'resync', 'clock', 'cel')),
        data BLOB NOT NULL,
        at   REAL
    );
    INSERT INTO ami_journal_v4 (seq, kind, data, at) SELECT seq, kind, data, at FROM ami_journal;
    DROP TABLE ami_journal;
    ALTER TABLE ami_journal_v4 RENAME TO ami_journal;
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class OutboxError(PbxlinkError):
    """The outbox cannot do its job; the message says why and where."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{message} (outbox {path})")
        self.path = path


class OutboxSchemaError(OutboxError):
    """The file is not an outbox this code can use (newer schema, other application)."""


class OutboxWriteError(OutboxError):
    """A write did not reach the disk (disk full, read-only, I/O error); nothing was committed."""


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A committed row waiting for its PUBACK."""

    seq: int
    message_id: str
    kind: MessageKind
    topic: str
    payload: bytes
    direction: str | None
    answered: bool | None
    created_at: float
    expires_at: float | None
    attempts: int


class JournalKind(StrEnum):
    FRAME = "frame"  # one AMI event frame, raw bytes
    RESYNC = "resync"  # a CoreShowChannels snapshot: length-prefixed raw frames, ``at`` = time
    CLOCK = "clock"  # the tracker's clock (AMI time) when the journal was last emptied
    CEL = "cel"  # CEL records of an AMI gap folded into the tracker: JSON, ``at`` = the gap's end


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One step of the tracker's input, kept so that a restart can replay it."""

    kind: JournalKind
    data: bytes
    at: float | None = None


def pack_frames(frames: Iterable[bytes]) -> bytes:
    """Raw frames as one blob: a 4-byte big-endian length before each."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in frames)


def unpack_frames(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        size = int.from_bytes(blob[pos : pos + 4], "big")
        out.append(blob[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_outcomes: int
    pending_events: int
    oldest_pending_created_at: float | None


async def _apply_migrations(conn: aiosqlite.Connection, path: Path, migrations: Sequence[str]) -> int:
    """Bring the schema to ``len(migrations)`` in one transaction; return the version found."""
    schema = Schema("outbox", tuple(migrations), application_id=APPLICATION_ID)
    try:
        return await migrate(conn, schema, path=path)
    except SchemaError as exc:
        raise OutboxSchemaError(exc.reason, path=path) from exc


async def _one(conn: aiosqlite.Connection, sql: str) -> tuple[int, ...]:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


class Outbox:
    """The durable queue between the call tracker and the publisher. Open with :meth:`open`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, migrated_from: int) -> None:
        self._conn = conn
        # One connection, several tasks (writer, publisher, metrics): a read must never see
        # another task's transaction half-done, so every operation takes the lock.
        self._lock = asyncio.Lock()
        self.path = path
        self.migrated_from = migrated_from

    @classmethod
    async def open(cls, path: Path, *, migrations: Sequence[str] = MIGRATIONS) -> Outbox:
        """Open (creating if needed) and migrate the outbox at ``path``.

        Raises :class:`OutboxError` with a clear message when the directory is missing or not
        writable, the disk is full, or the schema is unknown.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise OutboxError(f"the state directory {path.parent} does not exist", path=path)
        if not os.access(path.parent, os.W_OK):
            raise OutboxError(
                f"the state directory {path.parent} is not writable (read-only file system or "
                "permissions); the outbox needs it to store outcomes before publishing them",
                path=path,
            )
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the database: {exc}", path=path) from exc
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise OutboxError(f"cannot switch the database to WAL mode (got {row!r})", path=path)
            await conn.execute("PRAGMA synchronous = FULL")
            migrated_from = await _apply_migrations(conn, path, migrations)
        except sqlite3.Error as exc:
            await conn.close()
            raise _write_error(exc, path) from exc
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, migrated_from)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def add(
        self,
        envelopes: Iterable[Envelope],
        *,
        now: float,
        event_ttl: float | None,
        journal: Sequence[JournalEntry] = (),
        reset_journal: bool = False,
    ) -> int:
        """Commit the envelopes (and journal entries) in one transaction; return how many
        envelopes were new.

        A message whose id is already in the outbox is ignored: the first copy is the one
        published. Live events get ``expires_at = now + event_ttl``. ``reset_journal`` empties
        the AMI journal before ``journal`` is appended (the tracker had no call left).
        """
        rows = [
            (
                e.message_id,
                e.kind.value,
                e.topic,
                e.payload,
                e.direction,
                None if e.answered is None else int(e.answered),
                now,
                None if (e.kind is MessageKind.OUTCOME or event_ttl is None) else now + event_ttl,
            )
            for e in envelopes
        ]
        steps: list[tuple[str, Sequence[tuple[object, ...]]]] = []
        if reset_journal:
            steps.append(("DELETE FROM ami_journal WHERE ?", [(1,)]))
        if journal:
            steps.append(
                (
                    "INSERT INTO ami_journal (kind, data, at) VALUES (?, ?, ?)",
                    [(j.kind.value, j.data, j.at) for j in journal],
                )
            )
        if rows:
            steps.append(
                (
                    "INSERT OR IGNORE INTO outbox (message_id, kind, topic, payload, direction,"
                    " answered, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            )
        if not steps:
            return 0
        async with self._lock:
            changes = await self._transaction(steps)
        return changes[-1] if rows else 0

    async def journal(self) -> list[JournalEntry]:
        """The AMI journal in the order it was written."""
        async with (
            self._lock,
            self._conn.execute("SELECT kind, data, at FROM ami_journal ORDER BY seq") as cursor,
        ):
            rows = await cursor.fetchall()
        return [JournalEntry(JournalKind(r[0]), bytes(r[1]), r[2]) for r in rows]

    async def pending(self, *, limit: int, after_seq: int = 0) -> list[PendingMessage]:
        """Pending rows in the order they were committed."""
        async with (
            self._lock,
            self._conn.execute(
                "SELECT seq, message_id, kind, topic, payload, direction, answered, created_at,"
                " expires_at, attempts FROM outbox WHERE status = 'pending' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [
            PendingMessage(
                seq=int(r[0]),
                message_id=str(r[1]),
                kind=MessageKind(r[2]),
                topic=str(r[3]),
                payload=bytes(r[4]),
                direction=r[5],
                answered=None if r[6] is None else bool(r[6]),
                created_at=float(r[7]),
                expires_at=None if r[8] is None else float(r[8]),
                attempts=int(r[9]),
            )
            for r in rows
        ]

    async def mark_sent(self, seqs: Sequence[int], *, now: float) -> None:
        """Record PUBACKs: the rows leave the pending set."""
        await self._finish(seqs, MessageStatus.SENT, now)

    async def mark_expired(self, seqs: Sequence[int], *, now: float) -> None:
        """Live events whose expiry passed before they could be published are not sent."""
        await self._finish(seqs, MessageStatus.EXPIRED, now)

    async def count_attempt(self, seqs: Sequence[int]) -> None:
        """Count a publish attempt that got no PUBACK."""
        await self._write("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])

    async def prune(self, *, done_before: float) -> int:
        """Delete rows sent (or expired) before ``done_before``; return how many."""
        before = self._conn.total_changes
        await self._write("DELETE FROM outbox WHERE status != 'pending' AND sent_at < ?", [(done_before,)])
        return self._conn.total_changes - before

    async def stats(self) -> OutboxStats:
        async with (
            self._lock,
            self._conn.execute(
                "SELECT kind, count(*), min(created_at) FROM outbox WHERE status = 'pending' GROUP BY kind"
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        counts = {MessageKind(r[0]): int(r[1]) for r in rows}
        oldest = [float(r[2]) for r in rows if r[2] is not None]
        return OutboxStats(
            pending_outcomes=counts.get(MessageKind.OUTCOME, 0),
            pending_events=counts.get(MessageKind.EVENT, 0),
            oldest_pending_created_at=min(oldest) if oldest else None,
        )

    async def known_ids(self, message_ids: Iterable[str]) -> set[str]:
        """Which of these message ids the outbox already holds (any status)."""
        wanted = list(dict.fromkeys(message_ids))
        found: set[str] = set()
        async with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async with self._conn.execute(
                    f"SELECT message_id FROM outbox WHERE message_id IN ({marks})",  # noqa: S608 - only marks
                    chunk,
                ) as cursor:
                    found.update(str(row[0]) for row in await cursor.fetchall())
        return found

    async def status_of(self, message_id: str) -> MessageStatus | None:
        async with (
            self._lock,
            self._conn.execute("SELECT status FROM outbox WHERE message_id = ?", (message_id,)) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else MessageStatus(row[0])

    async def save_tracker_state(self, name: str, state: bytes, *, now: float) -> None:
        await self._write(
            "INSERT INTO tracker_state (name, state, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            [(name, state, now)],
        )

    async def load_tracker_state(self, name: str) -> bytes | None:
        async with (
            self._lock,
            self._conn.execute("SELECT state FROM tracker_state WHERE name = ?", (name,)) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])

    async def _finish(self, seqs: Sequence[int], status: MessageStatus, now: float) -> None:
        await self._write(
            "UPDATE outbox SET status = ?, sent_at = ? WHERE seq = ? AND status = 'pending'",
            [(status.value, now, s) for s in seqs],
        )

    async def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        """One committed transaction, or :class:`OutboxWriteError` and nothing changed."""
        if not rows:
            return
        async with self._lock:
            await self._transaction([(sql, rows)])

    async def _transaction(self, steps: Sequence[tuple[str, Sequence[tuple[object, ...]]]]) -> list[int]:
        """Run the steps in one transaction; return the rows each step changed."""
        changes: list[int] = []
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for sql, rows in steps:
                before = self._conn.total_changes
                await self._conn.executemany(sql, rows)
                changes.append(self._conn.total_changes - before)
            await self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                # SQLite may already have rolled back by itself (e.g. on SQLITE_FULL).
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.execute("ROLLBACK")
            raise _write_error(exc, self.path) from exc
        return changes


def _write_error(exc: sqlite3.Error, path: Path) -> OutboxWriteError:
    text = str(exc)
    if "disk is full" in text:
        reason = "the disk is full"
    elif "readonly" in text or "read-only" in text:
        reason = "the database or its directory is read-only"
    elif "unable to open" in text:
        reason = "the database file cannot be opened (is the state directory writable?)"
    else:
        reason = "SQLite refused the write"
    return OutboxWriteError(f"{reason}: {text}", path=path)
