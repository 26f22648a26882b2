"""The gateway's SQLite file: requests kept until the broker has them, and where each source is.

* ``outbox``: every request (and every dead letter) is written here, in one committed transaction
  with its source's new position, **before** the source is told (the IMAP message marked seen, the
  Telegram offset confirmed, the web client answered 202). The publisher sends the rows in order
  with QoS 1 and deletes each one after its PUBACK. A crash between the two sends it again with the
  same id: the adapter's inbox drops the second copy.
* ``cursors``: one row per source: the IMAP mailbox's UIDVALIDITY and last UID, a bot's update
  offset.
* ``threads``: Message-ID → the id of the request it became, so that a reply names the requests
  of its thread (the adapter links it to the interest they made).

WAL, ``synchronous=FULL`` (the same durability as the daemon's outbox); schema versions by the
toolkit's one migration helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiosqlite

from pbxlink.toolkit.sqlite_schema import Schema, migrate

__all__ = ["GatewayStore", "OutboxRow", "open_store"]

SCHEMA: Final = Schema(
    what="gateway database",
    application_id=0x50424C47,  # "PBLG"
    migrations=(
        """
        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            id         TEXT NOT NULL UNIQUE,
            topic      TEXT NOT NULL,
            payload    BLOB NOT NULL,
            source     TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE cursors (source TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE threads (
            message_id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX threads_created ON threads (created_at);
        CREATE TABLE published (id TEXT PRIMARY KEY, published_at TEXT NOT NULL);
        CREATE INDEX published_at ON published (published_at);
        """,
    ),
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    topic: str
    payload: bytes


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class GatewayStore:
    """One open gateway database. Tasks take turns with whole transactions (one connection)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):
                    await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def store(
        self,
        messages: Sequence[tuple[str, str, bytes, str]],
        now: datetime,
        *,
        cursor: tuple[str, Mapping[str, Any]] | None = None,
        threads: Sequence[tuple[str, str]] = (),
    ) -> list[bool]:
        """Store ``(id, topic, payload, source)`` rows, a source's new cursor and Message-ID links in
        ONE committed transaction; True per row that is new (False: that id was stored before)."""
        fresh: list[bool] = []
        async with self.transaction() as db:
            for message_id, topic, payload, source in messages:
                seen = await db.execute_fetchall("SELECT 1 FROM published WHERE id = ?", (message_id,))
                if seen:
                    fresh.append(False)
                    continue
                cur = await db.execute(
                    "INSERT OR IGNORE INTO outbox (id, topic, payload, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (message_id, topic, payload, source, _iso(now)),
                )
                fresh.append(cur.rowcount == 1)
            if cursor is not None:
                await db.execute(
                    "INSERT INTO cursors (source, state, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET state = excluded.state, "
                    "updated_at = excluded.updated_at",
                    (cursor[0], json.dumps(dict(cursor[1]), sort_keys=True), _iso(now)),
                )
            for mail_id, request_id in threads:
                await db.execute(
                    "INSERT OR IGNORE INTO threads (message_id, request_id, created_at) VALUES (?, ?, ?)",
                    (mail_id, request_id, _iso(now)),
                )
        return fresh

    async def cursor(self, source: str) -> dict[str, Any] | None:
        rows = list(await self.db.execute_fetchall("SELECT state FROM cursors WHERE source = ?", (source,)))
        return dict(json.loads(rows[0][0])) if rows else None

    async def requests_of_thread(self, message_ids: Sequence[str]) -> tuple[str, ...]:
        """The request ids that the given Message-IDs became, in the order given."""
        found: list[str] = []
        for message_id in message_ids:
            rows = list(
                await self.db.execute_fetchall(
                    "SELECT request_id FROM threads WHERE message_id = ?", (message_id,)
                )
            )
            if rows and rows[0][0] not in found:
                found.append(str(rows[0][0]))
        return tuple(found)

    async def recent_of_conversation(self, prefix: str, limit: int = 20) -> tuple[str, ...]:
        """The newest request ids stored under keys starting with ``prefix`` (a messenger chat's
        ``<source>/chat/<id>/``), newest first."""
        rows = await self.db.execute_fetchall(
            "SELECT request_id FROM threads WHERE message_id >= ? AND message_id < ? "
            "ORDER BY rowid DESC LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return tuple(str(r[0]) for r in rows)

    async def pending(self, limit: int = 100) -> list[OutboxRow]:
        rows = await self.db.execute_fetchall(
            "SELECT seq, id, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    async def backlog(self) -> int:
        rows = list(await self.db.execute_fetchall("SELECT count(*) FROM outbox"))
        return int(rows[0][0])

    async def published(self, row: OutboxRow, now: datetime) -> None:
        """The broker has it (PUBACK): the row goes, its id is remembered for a while (a source that
        offers the same message again, e.g. a web client retrying with its Idempotency-Key)."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM outbox WHERE seq = ?", (row.seq,))
            await db.execute(
                "INSERT OR REPLACE INTO published (id, published_at) VALUES (?, ?)", (row.id, _iso(now))
            )

    async def prune(self, now: datetime, *, keep_ids: timedelta, keep_threads: timedelta) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM published WHERE published_at < ?", (_iso(now - keep_ids),))
            await db.execute("DELETE FROM threads WHERE created_at < ?", (_iso(now - keep_threads),))

    async def close(self) -> None:
        await self.db.close()


async def open_store(path: Path | str) -> GatewayStore:
    """Open (creating and migrating) the gateway database at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await migrate(db, SCHEMA, path=path)
    except BaseException:
        await db.close()
        raise
    return GatewayStore(db, path)
