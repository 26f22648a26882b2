"""The adapter database: transactions survive cancellation (a lost broker cancels the worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pbxlink.adapters.crm.store import open_store


async def test_a_task_cancelled_during_begin_does_not_wedge_the_next_transaction(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "crm.sqlite3")
    try:
        entered = asyncio.Event()

        async def writer() -> None:
            async with store.transaction() as db:
                entered.set()
                await db.execute("INSERT INTO request_queues VALUES ('lost', 1)")

        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # the task now waits for its BEGIN to come back from the DB thread
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not entered.is_set()
        async with store.transaction() as db:  # raised "within a transaction" before the fix
            await db.execute("INSERT INTO request_queues VALUES ('kept', 2)")
        rows = await store.db.execute_fetchall("SELECT rule FROM request_queues")
        assert [tuple(r) for r in rows] == [("kept",)]
    finally:
        await store.close()


async def test_a_task_cancelled_inside_its_transaction_rolls_it_back(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "crm.sqlite3")
    try:
        started = asyncio.Event()

        async def writer() -> None:
            async with store.transaction() as db:
                await db.execute("INSERT INTO request_queues VALUES ('half', 1)")
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(writer())
        await started.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with store.transaction():
            pass
        assert await store.db.execute_fetchall("SELECT * FROM request_queues") == []
    finally:
        await store.close()
