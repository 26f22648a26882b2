"""The ownership directory stays current as clients and employees change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pbxlink.adapters.backends.sqlite_crm import ImportedClient, SqliteCrm
from pbxlink.adapters.directory import (
    clear_dirty,
    directory_entry,
    directory_payload,
    dirty_numbers,
    mark_all_dirty,
)
from pbxlink.adapters.store import Store, open_store
from pbxlink.routing.directory import parse_directory_message

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NUMBER = "+380981234567"


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[SqliteCrm]:
    store = await open_store(tmp_path / "crm.sqlite3")
    crm = SqliteCrm(store)
    async with store.transaction():
        await crm.add_employee("anna", "Анна", extension="101")
        await crm.add_client("Иван", ("0981234567",), region="UA", responsibles=("anna",), created_at=NOW)
    yield crm
    await store.close()


async def publish_all(store: Store) -> None:
    await clear_dirty(store, await dirty_numbers(store))


async def test_the_entry_lists_clients_and_responsibles_and_parses_as_routing_reads_it(
    crm: SqliteCrm,
) -> None:
    payload = await directory_payload(crm.store, NUMBER, NOW)
    update = parse_directory_message("pbxlink/v1/directory/380981234567", payload)
    assert update.entry is not None
    [client] = update.entry.clients
    assert (client.name, client.responsibles[0].employee, client.responsibles[0].extension) == (
        "Иван",
        "anna",
        "101",
    )


async def test_blocking_the_responsible_marks_the_number_and_the_entry_says_blocked(
    crm: SqliteCrm,
) -> None:
    await publish_all(crm.store)
    async with crm.store.transaction():
        await crm.add_employee("anna", "Анна", extension="101", blocked=True)
    assert [n for n, _ in await dirty_numbers(crm.store)] == [NUMBER]
    entry = await directory_entry(crm.store, NUMBER, NOW)
    assert entry is not None
    assert entry.clients[0].responsibles[0].blocked


async def test_a_responsible_who_is_not_an_employee_is_published_as_such(crm: SqliteCrm) -> None:
    async with crm.store.transaction():
        client = await crm.add_client(
            "Пётр", ("+380671112233",), region="UA", responsibles=("other-client",), created_at=NOW
        )
        assert client
    entry = await directory_entry(crm.store, "+380671112233", NOW)
    assert entry is not None
    assert not entry.clients[0].responsibles[0].is_employee


async def test_a_change_during_publishing_is_published_again(crm: SqliteCrm) -> None:
    seen = await dirty_numbers(crm.store)
    async with crm.store.transaction():
        await crm.set_responsible("1", "anna")  # changes the number again before the clear
    await clear_dirty(crm.store, seen)
    assert [n for n, _ in await dirty_numbers(crm.store)] == [NUMBER]


async def test_an_employees_own_number_is_published_with_the_employee(crm: SqliteCrm) -> None:
    async with crm.store.transaction():
        await crm.add_employee("boris", "Борис", extension="102", phone_e164="+380509998877")
    entry = await directory_entry(crm.store, "+380509998877", NOW)
    assert entry is not None
    assert (entry.employee, entry.clients) == ("boris", ())


async def test_a_number_nobody_owns_gives_an_empty_payload_that_deletes_the_entry(
    crm: SqliteCrm,
) -> None:
    assert await directory_payload(crm.store, "+380630000000", NOW) == b""


async def test_republish_marks_every_number(crm: SqliteCrm) -> None:
    await publish_all(crm.store)
    await mark_all_dirty(crm.store)
    assert [n for n, _ in await dirty_numbers(crm.store)] == [NUMBER]


async def test_a_bulk_import_marks_each_number_once_and_keeps_the_triggers(crm: SqliteCrm) -> None:
    await publish_all(crm.store)
    async with crm.store.transaction():
        first = await crm.bulk_import(
            [
                ImportedClient("Ольга", NOW, (("+380671110001", "0671110001"),), ("anna",)),
                ImportedClient("Пётр", NOW, (("+380671110002", "0671110002"),)),
            ]
        )
    assert first == 2
    assert [n for n, _ in await dirty_numbers(crm.store)] == ["+380671110001", "+380671110002"]
    await publish_all(crm.store)
    async with crm.store.transaction():
        await crm.add_client("Иван 2", ("0501112233",), region="UA", created_at=NOW)
    assert [n for n, _ in await dirty_numbers(crm.store)] == ["+380501112233"]
    found = await crm.clients_by_phone("+380671110001")
    assert [(c.name, c.responsibles) for c in found] == [("Ольга", ("anna",))]
