"""The adapter's SQLite file: the inbox and the embedded CRM live in one database, so a message
is marked processed in the same transaction that writes its CRM effect (exactly once).

WAL mode, `synchronous=FULL`. The schema version is `PRAGMA user_version`; opening a file runs
the missing migrations in one transaction and refuses a file from a newer pbxlink or another
application.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import aiosqlite

from pbxlink.adapters.batchdb import BatchDb, connect, run_to_end
from pbxlink.toolkit.sqlite_schema import Schema, SchemaError, migrate

T = TypeVar("T")

APPLICATION_ID: Final = 0x70626C63  # "pblc": a pbxlink CRM adapter database

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: inbox, embedded CRM, notification and directory outboxes.
    """
    CREATE TABLE inbox (
        id          TEXT PRIMARY KEY,
        topic       TEXT NOT NULL,
        payload     BLOB NOT NULL,
        received_at TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        finished_at TEXT,
        dead_published INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX inbox_pending ON inbox (state) WHERE state = 'pending';
    CREATE INDEX inbox_dead_unpublished ON inbox (state) WHERE state = 'dead' AND dead_published = 0;
    CREATE INDEX inbox_finished ON inbox (finished_at) WHERE state != 'pending';

    CREATE TABLE employees (
        id        TEXT PRIMARY KEY,
        name      TEXT NOT NULL,
        extension TEXT UNIQUE,
        roles     TEXT NOT NULL DEFAULT '',
        phone_e164 TEXT,
        blocked   INTEGER NOT NULL DEFAULT 0,
        deleted   INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE clients (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        creator     TEXT,
        source_line TEXT,
        origin_call TEXT
    );
    CREATE INDEX clients_origin_call ON clients (origin_call) WHERE origin_call IS NOT NULL;
    CREATE TABLE client_phones (
        client_id INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        e164      TEXT NOT NULL,
        raw       TEXT NOT NULL,
        PRIMARY KEY (client_id, e164)
    );
    CREATE INDEX client_phones_e164 ON client_phones (e164);
    CREATE TABLE client_responsibles (
        client_id INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        position  INTEGER NOT NULL,
        employee  TEXT NOT NULL,
        PRIMARY KEY (client_id, position)
    );
    CREATE INDEX client_responsibles_employee ON client_responsibles (employee);
    CREATE TABLE orders (
        id          INTEGER PRIMARY KEY,
        client_id   INTEGER NOT NULL REFERENCES clients (id),
        status      TEXT NOT NULL,
        closed      INTEGER NOT NULL DEFAULT 0,
        responsible TEXT,
        rule        TEXT,
        call_id     TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX orders_open ON orders (client_id) WHERE closed = 0;
    CREATE TABLE inquiries (
        id          INTEGER PRIMARY KEY,
        number      TEXT NOT NULL,
        type        TEXT,
        manager     TEXT,
        client_id   INTEGER REFERENCES clients (id),
        client_name TEXT NOT NULL,
        phone       TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        closed      INTEGER NOT NULL DEFAULT 0,
        call_id     TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX inquiries_open ON inquiries (client_id) WHERE closed = 0;
    CREATE TABLE deals (
        id          INTEGER PRIMARY KEY,
        client_id   INTEGER NOT NULL REFERENCES clients (id),
        type        TEXT NOT NULL,
        stage       TEXT NOT NULL,
        closed      INTEGER NOT NULL DEFAULT 0,
        responsible TEXT,
        call_id     TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX deals_open ON deals (client_id) WHERE closed = 0;
    CREATE TABLE tasks (
        id         INTEGER PRIMARY KEY,
        title      TEXT NOT NULL,
        mode       TEXT NOT NULL,
        author     TEXT NOT NULL,
        deadline   TEXT NOT NULL,
        client_id  INTEGER REFERENCES clients (id),
        order_id   INTEGER REFERENCES orders (id),
        inquiry_id INTEGER REFERENCES inquiries (id),
        call_id    TEXT,
        created_at TEXT NOT NULL,
        done_by    TEXT,
        done_at    TEXT
    );
    CREATE TABLE task_assignees (
        task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        employee TEXT NOT NULL,
        PRIMARY KEY (task_id, position)
    );
    CREATE INDEX task_assignees_employee ON task_assignees (employee);
    CREATE TABLE call_records (
        client_id INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        call_id   TEXT NOT NULL,
        summary   TEXT NOT NULL,
        at        TEXT NOT NULL,
        PRIMARY KEY (client_id, call_id)
    );
    CREATE TABLE call_stages (
        call_id    TEXT NOT NULL,
        stage      TEXT NOT NULL,
        PRIMARY KEY (call_id, stage)
    );
    CREATE TABLE numbering (
        id               INTEGER PRIMARY KEY CHECK (id = 1),
        next_counter     INTEGER NOT NULL,
        configured_start INTEGER,
        last_type        TEXT
    );
    INSERT INTO numbering (id, next_counter) VALUES (1, 1);
    CREATE TABLE notifications (
        id           INTEGER PRIMARY KEY,
        employee     TEXT NOT NULL,
        about        TEXT NOT NULL,
        text         TEXT NOT NULL,
        subject_id   TEXT,
        call_id      TEXT,
        reason       TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        published_at TEXT
    );
    CREATE INDEX notifications_unpublished ON notifications (id) WHERE published_at IS NULL;

    -- Ownership directory: numbers whose retained entry must be (re)published.
    CREATE TABLE directory_dirty (e164 TEXT PRIMARY KEY, gen INTEGER NOT NULL);
    CREATE TRIGGER phone_added AFTER INSERT ON client_phones BEGIN
        INSERT INTO directory_dirty VALUES (NEW.e164, 1) ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER phone_removed AFTER DELETE ON client_phones BEGIN
        INSERT INTO directory_dirty VALUES (OLD.e164, 1) ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER responsible_added AFTER INSERT ON client_responsibles BEGIN
        INSERT INTO directory_dirty
            SELECT e164, 1 FROM client_phones WHERE client_id = NEW.client_id
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER responsible_removed AFTER DELETE ON client_responsibles BEGIN
        INSERT INTO directory_dirty
            SELECT e164, 1 FROM client_phones WHERE client_id = OLD.client_id
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER client_renamed AFTER UPDATE OF name ON clients BEGIN
        INSERT INTO directory_dirty
            SELECT e164, 1 FROM client_phones WHERE client_id = NEW.id
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER employee_changed AFTER UPDATE ON employees BEGIN
        INSERT INTO directory_dirty
            SELECT p.e164, 1 FROM client_responsibles r JOIN client_phones p USING (client_id)
            WHERE r.employee = NEW.id
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
        INSERT INTO directory_dirty
            SELECT NEW.phone_e164, 1 WHERE NEW.phone_e164 IS NOT NULL
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
        INSERT INTO directory_dirty
            SELECT OLD.phone_e164, 1 WHERE OLD.phone_e164 IS NOT NULL
            ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    CREATE TRIGGER employee_added AFTER INSERT ON employees WHEN NEW.phone_e164 IS NOT NULL BEGIN
        INSERT INTO directory_dirty VALUES (NEW.phone_e164, 1) ON CONFLICT (e164) DO UPDATE SET gen = gen + 1;
    END;
    """,
    # 2: A7 requests (email, messengers, web forms): potential clients with e-mail addresses,
    #    support tickets, the request log and round-robin queues.
    """
    ALTER TABLE clients ADD COLUMN potential INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE client_emails (
        client_id INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        email     TEXT NOT NULL,
        PRIMARY KEY (client_id, email)
    );
    CREATE INDEX client_emails_email ON client_emails (email);
    CREATE TABLE tickets (
        id         INTEGER PRIMARY KEY,
        client_id  INTEGER REFERENCES clients (id),
        subject    TEXT NOT NULL,
        body       TEXT NOT NULL,
        assignees  TEXT NOT NULL,
        closed     INTEGER NOT NULL DEFAULT 0,
        request_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE requests (
        id         TEXT PRIMARY KEY,
        source     TEXT NOT NULL,
        channel    TEXT NOT NULL,
        rule       TEXT,
        outcome    TEXT NOT NULL,
        reason     TEXT NOT NULL,
        client_id  INTEGER,
        deal_id    INTEGER,
        ticket_id  INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE TABLE request_queues (rule TEXT PRIMARY KEY, next_index INTEGER NOT NULL);
    """,
)


class StoreError(Exception):
    """The database file cannot be used (another application's, or from a newer pbxlink)."""


SCHEMA: Final = Schema("adapter database", MIGRATIONS, application_id=APPLICATION_ID)


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    try:
        await migrate(db, SCHEMA, path=path)
    except SchemaError as exc:
        raise StoreError(str(exc)) from exc


class Store:
    """One open adapter database; `transaction()` is BEGIN IMMEDIATE … COMMIT/ROLLBACK."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = asyncio.Lock()  # one connection: tasks take turns with whole transactions
        self._batch_db: BatchDb | None = None

    async def in_thread(self, work: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        """Run `work` in one transaction in a worker thread: one hop for all its statements.

        `work` gets a `Store` whose `db` answers at once (`BatchDb`) and whose `transaction()`
        is the one already open; it must await nothing else. Takes turns with `transaction()`.
        If the caller is cancelled, the thread's transaction still ends (commit or rollback)
        before the turn passes on.
        """
        async with self._lock:
            if self._batch_db is None:
                self._batch_db = BatchDb(await asyncio.to_thread(connect, str(self.path)))
            running = asyncio.ensure_future(asyncio.to_thread(self._run_in_transaction, self._batch_db, work))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await running
                raise

    def _run_in_transaction(self, db: BatchDb, work: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        connection = db.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = run_to_end(work(_OpenTransaction(db, self.path)))
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._begin()
            try:
                yield self.db
            except BaseException:
                await self._rollback()
                raise
            await self.db.execute("COMMIT")

    async def _begin(self) -> None:
        try:
            await self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "within a transaction" not in str(exc):
                raise
            # A task cancelled while its BEGIN or ROLLBACK was on the way (a lost broker
            # connection cancels the worker) left a transaction open; nothing of it was
            # committed, so roll it back and start ours.
            await self.db.execute("ROLLBACK")
            await self.db.execute("BEGIN IMMEDIATE")

    async def _rollback(self) -> None:
        try:
            await self.db.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:  # SQLite may already have rolled back (I/O error)
            if "no transaction is active" not in str(exc):
                raise

    async def close(self) -> None:
        if self._batch_db is not None:
            self._batch_db.connection.close()
            self._batch_db = None
        await self.db.close()


class _OpenTransaction(Store):
    """The store as `Store.in_thread` work sees it: statements answer at once, in the one
    transaction already open (`transaction()` opens nothing more)."""

    def __init__(self, db: BatchDb, path: Path) -> None:
        super().__init__(cast(aiosqlite.Connection, db), path)  # the subset our SQL code uses

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        yield self.db

    async def in_thread(self, work: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        return await work(self)


async def open_store(path: Path | str) -> Store:
    """Open (creating and migrating) the adapter database at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        await _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        await db.close()
        raise StoreError(f"{path}: {exc}") from exc
    except BaseException:
        await db.close()
        raise
    return Store(db, path)
