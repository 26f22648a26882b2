"""The ownership directory on disk (SQLite) and in memory, so a restart has it at once.

Every message is written to SQLite (one transaction per batch) before memory changes, so a
lookup never sees what a crash could lose. At start `load()` reads the table into a
`DirectoryIndex` in chunks (the event loop keeps running); lookups are pure dict reads.
Each row keeps the payload as received plus a compact form of what routing needs, so a load
reads the compact form only and a million rows load in about a second.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from pbxlink.routing.directory import DirectoryIndex, DirectoryUpdate
from pbxlink.routing.model import Responsible, RoutingEntry
from pbxlink.toolkit.sqlite_schema import Schema, SchemaError, migrate

__all__ = ["SCHEMA_VERSION", "DirectoryStore", "DirectoryStoreError"]

_MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE IF NOT EXISTS directory (
    number     INTEGER PRIMARY KEY,  -- E.164 digits without '+'
    payload    BLOB NOT NULL,        -- the retained message as received
    route      TEXT NOT NULL,        -- compact RoutingEntry (see _encode_route)
    updated_at TEXT NOT NULL
);
""",
)
SCHEMA = Schema("directory", _MIGRATIONS)
SCHEMA_VERSION = SCHEMA.version
_UPSERT = """
INSERT INTO directory (number, payload, route, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT(number) DO UPDATE SET
    payload = excluded.payload, route = excluded.route, updated_at = excluded.updated_at
WHERE directory.payload IS NOT excluded.payload
"""
_LOAD_CHUNK = 20_000


class DirectoryStoreError(RuntimeError):
    """The directory database cannot be used (newer schema, not a database…)."""


def _encode_route(entry: RoutingEntry) -> str:
    def people(rs: tuple[Responsible, ...]) -> list[list[Any]]:
        return [
            [r.employee, r.extension, int(r.is_employee) | int(r.blocked) << 1 | int(r.deleted) << 2]
            for r in rs
        ]

    newest = None if entry.newest == entry.first else people(entry.newest)
    return json.dumps(
        [entry.employee, people(entry.first), newest, entry.clients],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _decode_route(text: str) -> RoutingEntry:
    employee, first, newest, clients = json.loads(text)

    def people(rows: list[list[Any]]) -> tuple[Responsible, ...]:
        return tuple(Responsible(e, x, bool(f & 1), bool(f & 2), bool(f & 4)) for e, x, f in rows)

    first_people = people(first)
    return RoutingEntry(
        employee=employee,
        first=first_people,
        newest=first_people if newest is None else people(newest),
        clients=clients,
    )


class DirectoryStore:
    """SQLite-backed directory; `lookup()` answers from memory (implements `DirectoryView`).

    Use as ``async with DirectoryStore(path) as store: await store.load()``.
    """

    def __init__(self, path: Path | str, index: DirectoryIndex | None = None) -> None:
        self.path = Path(path)
        self.index = index if index is not None else DirectoryIndex()
        self._db: aiosqlite.Connection | None = None
        self._loaded = asyncio.Event()
        self._write_lock = asyncio.Lock()
        # numbers written while load() runs: its read snapshot may be older, so it skips them
        self._touched_during_load: set[int] | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA journal_mode=WAL")
            # the directory is re-sent by the broker (retained), so NORMAL durability is enough
            await db.execute("PRAGMA synchronous=NORMAL")
            await migrate(db, SCHEMA, path=self.path)
        except SchemaError as exc:
            await db.close()
            raise DirectoryStoreError(str(exc)) from exc
        except aiosqlite.DatabaseError as exc:
            await db.close()
            raise DirectoryStoreError(f"{self.path}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise DirectoryStoreError("directory store is not open")
        return self._db

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    async def load(self) -> int:
        """Read every row into memory; returns the number of entries. Idempotent."""
        db = self._conn()
        decoded: dict[str, RoutingEntry] = {}
        count = 0
        touched = self._touched_during_load = set()
        try:
            async with db.execute("SELECT number, route FROM directory") as cursor:
                while rows := list(await cursor.fetchmany(_LOAD_CHUNK)):
                    put = self.index.put_int
                    for number, route in rows:
                        if number in touched:
                            continue  # a newer message arrived meanwhile; memory has it
                        entry = decoded.get(route)
                        if entry is None:
                            entry = decoded[route] = _decode_route(route)
                        put(number, entry)
                    count += len(rows)
                    await asyncio.sleep(0)  # let AGI sessions and AMI run between chunks
        finally:
            self._touched_during_load = None
        self._loaded.set()
        return count

    async def apply(self, updates: Sequence[DirectoryUpdate]) -> None:
        """Persist a batch in one transaction, then make it visible in memory."""
        if not updates:
            return
        db = self._conn()
        upserts: list[tuple[int, bytes, str, str]] = []
        deletes: list[tuple[int]] = []
        routes: list[tuple[str, RoutingEntry | None]] = []
        # only the last message per number counts (a set then a delete, or the reverse)
        last = {update.digits: update for update in updates}
        for update in last.values():
            if update.entry is None:
                deletes.append((int(update.digits),))
                routes.append((update.digits, None))
                continue
            route = RoutingEntry.from_entry(update.entry)
            upserts.append(
                (
                    int(update.digits),
                    update.payload,
                    _encode_route(route),
                    update.entry.updated_at.isoformat(),
                )
            )
            routes.append((update.digits, route))
        async with self._write_lock:
            try:
                if upserts:
                    await db.executemany(_UPSERT, upserts)
                if deletes:
                    await db.executemany("DELETE FROM directory WHERE number = ?", deletes)
                await db.commit()
            except BaseException:
                await db.rollback()
                raise
        for digits, maybe_route in routes:
            if self._touched_during_load is not None:
                self._touched_during_load.add(int(digits))
            if maybe_route is None:
                self.index.remove(digits)
            else:
                self.index.put(digits, maybe_route)

    async def count_rows(self) -> int:
        row = await (await self._conn().execute("SELECT count(*) FROM directory")).fetchone()
        return int(row[0]) if row else 0

    def lookup(self, e164: str) -> RoutingEntry | None:
        return self.index.lookup(e164)
