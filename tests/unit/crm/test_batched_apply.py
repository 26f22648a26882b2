"""The batched path (one transaction and one thread hop per batch, facts looked up in bulk)
writes exactly what the per-message path writes, message for message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.batchdb import BatchDb, Suspended, run_to_end
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import open_store
from pbxlink.rules.calls import envelope_for, request_envelope
from pbxlink.rules.samples import EMPLOYEES, at, event, missed, outcome, request

RULES = """
[crm.inquiries]
number_template = "{C:4}"
[crm.inquiries.on_missed]
enabled = true
manager = "anna"
even_if_open_inquiry = true
even_if_open_order = true
[crm.inquiries.on_answered]
enabled = true
even_if_open_inquiry = true
even_if_open_order = true
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
[crm.clients]
repeat_calls = "if_no_open_deal"
update_responsible_on_transfer = true
[crm.clients.answered]
create = "client_and_deal"
[crm.clients.missed]
create = "client"
[crm.orders]
enabled = true
[[crm.requests.rules]]
name = "service"
keywords = "ремонт"
action = "support"
address = "queue"
queue = ["anna", "boris"]
known_client_to_owner = false
"""
TABLES = (
    "clients",
    "client_phones",
    "client_responsibles",
    "orders",
    "inquiries",
    "deals",
    "tasks",
    "task_assignees",
    "call_records",
    "call_stages",
    "numbering",
    "tickets",
    "requests",
    "request_queues",
    "directory_dirty",
)


def _stream() -> list[tuple[str, bytes]]:
    """Repeated numbers inside one batch, an answer event and its outcome in the same batch, a
    transfer, a duplicate, a bad payload and a request: what the bulk look-ups must get right."""
    items: list[tuple[str, bytes]] = []
    for n in range(60):
        number = f"+38098{n % 7:07d}"  # seven numbers, each called again and again
        external = {"raw": number, "e164": number}
        call_id = f"pbx1:{n}"
        if n % 3 == 0:
            items.append(envelope_for(event(call_id=call_id, seq=2, external=external, agent="101")))
            items.append(envelope_for(outcome(id=call_id, external=external, last_handled_by="103")))
        elif n % 3 == 1:
            items.append(envelope_for(missed(id=call_id, external=external, missed_at="queue", queue="q")))
        else:
            items.append(envelope_for(missed(id=call_id, external=external)))
    items.insert(10, items[3])  # a duplicate
    items.insert(20, ("pbxlink/v1/pbx1/call/outcome", b"{not json"))
    # A request whose sender's number calls again later in the batch: a potential client appears.
    sender = {"name": "Ольга", "email": "olga@shop.example", "phone": "+380980000099"}
    items.insert(30, request_envelope(request(id="mail:2", subject="ремонт", **{"from": sender})))
    again = {"raw": "+380980000099", "e164": "+380980000099"}
    items.insert(33, envelope_for(missed(id="pbx1:olga", external=again)))
    items.append(request_envelope(request()))
    return items


async def _applied(path: Path, *, batched: bool, batch_size: int) -> dict[str, list[tuple[Any, ...]]]:
    store = await open_store(path)
    crm = SqliteCrm(store)
    async with store.transaction():
        for e in EMPLOYEES:
            await crm.add_employee(e.id, e.name, extension=e.extension, deleted=e.deleted)
        await crm.add_client(
            "Иван",
            ("+380980000003",),
            region="UA",
            responsibles=("vera",),
            created_at=at("2017-01-01T00:00:00Z"),
        )
    inbox = Inbox(store)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    await inbox.receive_many(_stream(), now)
    processor = Processor(
        inbox, crm, settings_from_toml(RULES).crm, batched=batched, batch_size=batch_size, clock=lambda: now
    )
    await processor.run_pending()
    tables = {}
    for table in (*TABLES, "inbox"):
        columns = "id, state, attempts, error" if table == "inbox" else "*"
        rows = await store.db.execute_fetchall(f"SELECT {columns} FROM {table} ORDER BY rowid")
        tables[table] = [tuple(r) for r in rows]
    notifications = await store.db.execute_fetchall(
        "SELECT id, employee, about, text, subject_id, call_id, reason FROM notifications ORDER BY id"
    )
    tables["notifications"] = [tuple(r) for r in notifications]
    await store.close()
    return tables


@pytest.mark.parametrize("batch_size", [500, 7])
async def test_batched_apply_writes_what_the_per_message_path_writes(tmp_path: Path, batch_size: int) -> None:
    one_by_one = await _applied(tmp_path / "per-message.sqlite3", batched=False, batch_size=100)
    batched = await _applied(tmp_path / "batched.sqlite3", batched=True, batch_size=batch_size)
    assert len(one_by_one["inquiries"]) > 50  # the stream did create work
    assert any(state == "dead" for _, state, _, _ in one_by_one["inbox"])
    for table, rows in one_by_one.items():
        assert batched[table] == rows, table


def test_a_batch_coroutine_that_awaits_real_io_is_refused() -> None:
    import asyncio  # noqa: PLC0415

    async def sleeps() -> None:
        await asyncio.sleep(0)

    with pytest.raises(Suspended):
        run_to_end(sleeps())


def test_batchdb_answers_aiosqlites_calls_at_once(tmp_path: Path) -> None:
    import sqlite3  # noqa: PLC0415

    db = BatchDb(sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None))

    async def work() -> tuple[Any, ...]:
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        row = await db.execute_insert("INSERT INTO t (v) VALUES (?)", ("a",))
        await db.executemany("INSERT INTO t (v) VALUES (?)", [("b",), ("c",)])
        async with db.execute("SELECT v FROM t ORDER BY id") as cursor:
            values = [r[0] for r in await cursor.fetchall()]
        cursor = await db.execute("UPDATE t SET v = 'z' WHERE v != 'a'")
        return row, values, cursor.rowcount, await db.execute_fetchall("SELECT count(*) FROM t")

    assert run_to_end(work()) == ((1,), ["a", "b", "c"], 2, [(3,)])
