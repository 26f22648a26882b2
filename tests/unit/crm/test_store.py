"""The adapter database: transactions survive cancellation (a lost broker cancels the worker)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbxlink.adapters.store import Store, open_store


async def test_a_task_cancelled_during_begin_does_not_wedge_the_next_transaction(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "crm.sqlite3")
    try:
        entered = asyncio.Event()

        async def writer() -> None:
            async with store.transaction() as db:
                entered.set()
                await db.execute("INSERT INTO request_queues VALUES ('lost', 1)")

        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(writer(), name="writer")
            await asyncio.sleep(0)  # the task now waits for its BEGIN to come back from the DB thread
            task.cancel()
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

        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(writer(), name="writer")
            await started.wait()
            task.cancel()
        async with store.transaction():
            pass
        assert await store.db.execute_fetchall("SELECT * FROM request_queues") == []
    finally:
        await store.close()


def test_two_processes_opening_a_new_database_at_once_both_succeed(tmp_path: Path) -> None:
    # The adapter and an admin's `pbxlink crm …` open the same fresh file together: the one that
    # waited for the write lock must see the other's migration, not run it again.
    path = tmp_path / "crm.sqlite3"
    code = (
        "import asyncio, sys\n"
        "from pbxlink.adapters.store import open_store\n"
        "async def main():\n"
        "    store = await open_store(sys.argv[1])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    for _ in range(5):
        path.unlink(missing_ok=True)
        procs = [
            subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        stderrs = [p.communicate(timeout=60)[1] for p in procs]  # communicate closes the pipes
        errors = [(p.returncode, err) for p, err in zip(procs, stderrs, strict=True)]
        assert [rc for rc, _ in errors] == [0, 0, 0, 0], errors


async def test_a_batch_cancelled_in_its_thread_still_ends_its_transaction_before_the_next(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path / "crm.sqlite3")
    try:

        async def work(batch: Store) -> None:
            await batch.db.execute("INSERT INTO request_queues VALUES ('batched', 1)")
            time.sleep(0.2)  # noqa: ASYNC251 - runs in the batch thread: busy when the caller is cancelled

        task = asyncio.create_task(store.in_thread(work))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with store.transaction() as db:  # not "database is locked": the thread committed
            await db.execute("INSERT INTO request_queues VALUES ('next', 2)")
        rows = await store.db.execute_fetchall("SELECT rule FROM request_queues ORDER BY rule")
        assert [tuple(r) for r in rows] == [("batched",), ("next",)]
    finally:
        await store.close()


async def test_a_batch_that_raises_is_rolled_back_whole(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "crm.sqlite3")
    try:

        async def work(batch: Store) -> None:
            await batch.db.execute("INSERT INTO request_queues VALUES ('half', 1)")
            raise RuntimeError("the CRM failed")

        with pytest.raises(RuntimeError):
            await store.in_thread(work)
        assert await store.db.execute_fetchall("SELECT rule FROM request_queues") == []
    finally:
        await store.close()
