"""The embedded CRM on a real SQLite file: inbox, processing, A6 identity, numbering, tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox, Receipt
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import Store, StoreError, open_store
from pbxlink.rules.samples import (
    EMPLOYEES,
    at,
    event,
    event_message,
    missed,
    outcome,
    outcome_message,
)
from pbxlink.rules.settings import CrmSettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = """
[crm.inquiries]
number_template = "{C:3}"
[crm.inquiries.on_missed]
enabled = true
manager = "anna"
even_if_open_inquiry = true
[crm.clients.answered]
create = "client"
[crm.clients.missed]
create = "client"
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "crm.sqlite3")
    crm = SqliteCrm(opened)
    async with opened.transaction():
        for e in EMPLOYEES:
            await crm.add_employee(e.id, e.name, extension=e.extension, deleted=e.deleted)
    yield opened
    await opened.close()


def processor(store: Store, rules: str = RULES) -> Processor:
    settings: CrmSettings = settings_from_toml(rules).crm
    return Processor(Inbox(store), SqliteCrm(store), settings, max_attempts=2)


async def deliver(proc: Processor, message: tuple[str, bytes]) -> Receipt:
    receipt = await proc.inbox.receive(*message, NOW)
    await proc.run_pending()
    return receipt


async def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    async with store.db.execute(sql) as cursor:
        return [tuple(r) for r in await cursor.fetchall()]


async def count(store: Store, table: str) -> int:
    async with store.db.execute(f"SELECT count(*) FROM {table}") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("written", ["0981234567", "380981234567", "+380981234567"])
@pytest.mark.parametrize("calling", ["0981234567", "380981234567", "+380981234567"])
async def test_one_client_per_real_number_whatever_the_written_form(
    store: Store, written: str, calling: str
) -> None:
    proc = processor(store)
    async with store.transaction():
        await proc.crm.add_client("Иван", (written,), region="UA", created_at=at("2020-01-01T00:00:00Z"))
    call = missed(external={"raw": calling, "e164": None})
    await deliver(proc, outcome_message(call))
    assert await count(store, "clients") == 1
    assert await rows(store, "SELECT client_id, client_name FROM inquiries") == [(1, "Иван")]


async def test_russian_8_916_number_finds_the_client_saved_as_plus_7(store: Store) -> None:
    proc = processor(store)
    async with store.transaction():
        await proc.crm.add_client(
            "Пётр", ("+79161234567",), region="RU", created_at=at("2020-01-01T00:00:00Z")
        )
    ru = settings_from_toml(RULES + '[crm.phone]\ndefault_region = "RU"\n').crm
    proc = Processor(proc.inbox, proc.crm, ru)
    await deliver(proc, outcome_message(missed(external={"raw": "8 916 123 45 67", "e164": None})))
    assert await count(store, "clients") == 1


async def test_anonymous_callers_never_merge_into_one_client(store: Store) -> None:
    proc = processor(store)
    for n in (1, 2):
        call = missed(id=f"pbx1:{n}", external={"raw": "anonymous", "e164": None})
        await deliver(proc, outcome_message(call))
    assert await count(store, "clients") == 0
    assert (
        await rows(store, "SELECT client_id, client_name, phone FROM inquiries")
        == [(None, "Неизвестный клиент", "anonymous")] * 2
    )


async def test_a_duplicate_message_is_dropped_and_applied_once(store: Store) -> None:
    proc = processor(store)
    message = outcome_message(missed())
    assert await deliver(proc, message) is Receipt.NEW
    assert await deliver(proc, message) is Receipt.DUPLICATE
    assert (await count(store, "inquiries"), await count(store, "tasks")) == (1, 1)


async def test_answer_event_then_outcome_make_one_client_at_answer_time(store: Store) -> None:
    proc = processor(store)
    await deliver(proc, event_message(event()))
    assert await rows(store, "SELECT name, created_at FROM clients") == [
        ("Новый (16:30 05.03.2018, входящий вызов)", "2018-03-05T14:30:05Z")
    ]
    await deliver(proc, outcome_message(outcome()))
    assert await count(store, "clients") == 1
    assert await count(store, "call_records") == 1


async def test_outcome_before_its_answer_event_still_makes_one_client(store: Store) -> None:
    proc = processor(store)
    await deliver(proc, outcome_message(outcome()))
    await deliver(proc, event_message(event()))
    assert await count(store, "clients") == 1


async def test_inquiry_numbers_count_001_002_and_restart_at_the_configured_next_number(
    store: Store,
) -> None:
    proc = processor(store)
    for n in (1, 2):
        await deliver(proc, outcome_message(missed(id=f"pbx1:{n}")))
    async with store.transaction():
        await proc.crm.sync_numbering(28)
    async with store.transaction():
        await proc.crm.sync_numbering(28)  # unchanged setting: applied only once
    await deliver(proc, outcome_message(missed(id="pbx1:3")))
    async with store.db.execute("SELECT number FROM inquiries ORDER BY id") as cursor:
        assert [r[0] for r in await cursor.fetchall()] == ["001", "002", "028"]


async def test_one_task_for_all_done_by_one_disappears_for_the_others(store: Store) -> None:
    proc = processor(store)
    await deliver(proc, outcome_message(missed()))
    [task] = await proc.crm.tasks_for("boris")
    assert task.assignees == ("anna", "boris")
    assert task.author == "anna"
    async with store.transaction():
        await proc.crm.complete_task(task.id, "boris", NOW)
    assert await proc.crm.tasks_for("anna") == ()
    [kept] = await proc.crm.tasks_for("boris")
    assert kept.done_by == "boris"


async def test_one_task_each_done_by_one_stays_open_for_the_other(store: Store) -> None:
    proc = processor(store, RULES + 'mode = "one_each"\n')
    await deliver(proc, outcome_message(missed()))
    [mine] = await proc.crm.tasks_for("anna")
    async with store.transaction():
        await proc.crm.complete_task(mine.id, "anna", NOW)
    [theirs] = await proc.crm.tasks_for("boris")
    assert theirs.done_by is None


async def test_task_is_linked_to_the_clients_newest_open_order(store: Store) -> None:
    proc = processor(store)
    async with store.transaction():
        client = await proc.crm.add_client(
            "Иван", ("0981234567",), region="UA", created_at=at("2020-01-01T00:00:00Z")
        )
        await proc.crm.add_order(client, "Ремонт", created_at=at("2021-01-01T00:00:00Z"))
        newest = await proc.crm.add_order(client, "Новый", created_at=at("2022-01-01T00:00:00Z"))
        await proc.crm.add_order(client, "Выдан", created_at=at("2023-01-01T00:00:00Z"), closed=True)
    await deliver(proc, outcome_message(missed()))
    [task] = await proc.crm.tasks_for("anna")
    assert (task.order_id, task.client_id) == (newest, client)


async def test_bad_payload_is_dead_lettered_with_its_reason_and_nothing_else_happens(
    store: Store,
) -> None:
    proc = processor(store)
    for payload in (b"{not json", b'{"schema": 1}', "\xff".encode("latin-1")):
        assert await proc.inbox.receive("pbxlink/v1/pbx1/call/outcome", payload, NOW) is Receipt.DEAD
    wrong_time = outcome_message(missed(ended_at="yesterday"))
    assert await proc.inbox.receive(*wrong_time, NOW) is Receipt.DEAD
    await proc.run_pending()
    letters = await proc.inbox.dead_letters()
    assert len(letters) == 4
    assert "not JSON" in letters[0].reason
    assert "data.ended_at" in letters[3].reason
    assert await count(store, "clients") == 0


async def test_a_failing_crm_write_rolls_back_retries_and_then_dead_letters(store: Store) -> None:
    proc = processor(store)
    await store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON inquiries BEGIN SELECT RAISE(ABORT, 'CRM down'); END"
    )
    await proc.inbox.receive(*outcome_message(missed()), NOW)
    await proc.run_pending()
    assert await count(store, "clients") == 0  # the client of the same plan was rolled back
    assert await proc.inbox.counts() == {"pending": 1}
    await proc.run_pending()
    [letter] = await proc.inbox.dead_letters()
    assert "CRM down" in letter.reason


async def test_creating_a_client_marks_its_number_for_the_directory(store: Store) -> None:
    proc = processor(store)
    await deliver(proc, outcome_message(missed()))
    assert await rows(store, "SELECT e164 FROM directory_dirty") == [("+380981234567",)]


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    path.write_bytes(b"this is not a database at all, just text" * 100)
    with pytest.raises(StoreError):
        await open_store(path)


async def test_pruning_forgets_old_finished_messages_but_keeps_pending_and_unsent_dead_ones(
    store: Store,
) -> None:
    settings = settings_from_toml(RULES).crm
    proc = Processor(Inbox(store), SqliteCrm(store), settings, clock=lambda: NOW)
    await proc.inbox.receive(*outcome_message(missed(id="pbx1:old")), NOW)
    await proc.run_pending()
    await proc.inbox.receive("pbxlink/v1/pbx1/call/outcome", b"junk", NOW)
    await proc.inbox.receive(*outcome_message(missed(id="pbx1:waiting")), NOW)
    removed = await proc.inbox.prune(datetime(2026, 2, 1, tzinfo=UTC))
    assert removed == 1
    assert await proc.inbox.counts() == {"dead": 1, "pending": 1}
    # A pruned id no longer dedupes: that is what inbox_retention_days bounds.
    assert await proc.inbox.receive(*outcome_message(missed(id="pbx1:old")), NOW) is Receipt.NEW
