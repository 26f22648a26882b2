"""Whole batches of database work in one thread hop.

aiosqlite sends every statement to its worker thread and back: about 100 µs a hop on a busy
machine, and the CRM work of one outcome takes some 30 statements. `BatchDb` offers the part of
the `aiosqlite.Connection` interface that the inbox, the embedded CRM and the directory use,
over a plain `sqlite3.Connection`, and never suspends: a coroutine written against it runs to
its end in one `send(None)`. `Store.in_thread` runs such a coroutine, inside one transaction,
in a worker thread, so the same code applies a batch of many messages with one hop instead of
thousands.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class Suspended(RuntimeError):
    """A coroutine given to `run_to_end` awaited something that really suspends."""


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it only awaits `BatchDb`) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise Suspended("a batch coroutine awaited real I/O; only BatchDb calls are allowed")


class BatchCursor:
    """An executed statement: aiosqlite's cursor interface, answered at once."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def close(self) -> None:
        self._cursor.close()


class _Result:
    """What `BatchDb.execute` returns: awaitable (the cursor) and an async context manager."""

    def __init__(self, cursor: BatchCursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Generator[Any, None, BatchCursor]:
        return self._cursor
        yield  # pragma: no cover - makes this a generator that never suspends

    async def __aenter__(self) -> BatchCursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()


class BatchDb:
    """The aiosqlite calls our SQL code makes, run at once on a `sqlite3.Connection`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _Result:
        return _Result(BatchCursor(self.connection.execute(sql, tuple(parameters))))

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> BatchCursor:
        return BatchCursor(self.connection.executemany(sql, [tuple(p) for p in parameters]))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        return self.connection.execute(sql, tuple(parameters)).fetchall()

    async def execute_insert(self, sql: str, parameters: Iterable[Any] = ()) -> tuple[int] | None:
        cursor = self.connection.execute(sql, tuple(parameters))
        return None if cursor.lastrowid is None else (cursor.lastrowid,)


def connect(path: str) -> sqlite3.Connection:
    """A second connection to the adapter database, for `Store.in_thread` (same pragmas)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    # A batch looks up numbers all over a CRM of a million clients: keep the hot part of the
    # indexes in memory (64 MiB of page cache, and reads through a 1 GiB memory map).
    connection.execute("PRAGMA cache_size = -65536")
    connection.execute("PRAGMA mmap_size = 1073741824")
    return connection
