"""A7 requests through the inbox and processor on a real SQLite file; schema migration 1 → 2."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox, Receipt
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import MIGRATIONS, Store, open_store
from pbxlink.rules.samples import request, request_message
from pbxlink.toolkit.sqlite_schema import split_statements

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = """
[[crm.requests.rules]]
name = "sales"
action = "interest"
address = "queue"
queue = ["anna", "boris"]
known_client_to_owner = false
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "crm.sqlite3")
    crm = SqliteCrm(opened)
    async with opened.transaction():
        await crm.add_employee("anna", "Анна", extension="101", roles=("sales",))
        await crm.add_employee("boris", "Борис", extension="102", roles=("sales",))
    yield opened
    await opened.close()


async def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await store.db.execute_fetchall(sql)]


async def test_requests_go_round_robin_and_a_returning_sender_is_found_by_email(store: Store) -> None:
    proc = Processor(Inbox(store), SqliteCrm(store), settings_from_toml(RULES).crm)
    for n in range(3):
        data = request(
            id=f"mail:{n}",
            subject="Вопрос",
            body="цена?",
            **{"from": {"name": "Ольга", "email": "OLGA@example.com"}},
        )
        assert await proc.inbox.receive(*request_message(data), NOW) is Receipt.NEW
        await proc.run_pending()
    assert await rows(store, "SELECT responsible FROM deals ORDER BY id") == [
        ("anna",),
        ("boris",),
        ("anna",),
    ]
    assert await rows(store, "SELECT name, potential FROM clients") == [("Ольга", 1)]
    assert await rows(store, "SELECT outcome FROM requests ORDER BY created_at, id") == [("interest",)] * 3


async def test_a_request_linked_to_an_open_interest_is_attached_not_duplicated(store: Store) -> None:
    proc = Processor(Inbox(store), SqliteCrm(store), settings_from_toml(RULES).crm)
    await proc.inbox.receive(*request_message(request(id="mail:1", body="цена?")), NOW)
    await proc.run_pending()
    [(deal_id,)] = await rows(store, "SELECT id FROM deals")
    follow_up = request(id="mail:2", body="ещё вопрос", deal_id=str(deal_id))
    await proc.inbox.receive(*request_message(follow_up), NOW)
    await proc.run_pending()
    assert await rows(store, "SELECT count(*) FROM deals") == [(1,)]
    assert await rows(store, "SELECT outcome FROM requests WHERE id = 'mail:2'") == [("attached",)]


async def test_a_request_with_a_bad_sender_address_is_dead_lettered(store: Store) -> None:
    inbox = Inbox(store)
    bad = request(**{"from": {"email": "not-an-address"}})
    assert await inbox.receive(*request_message(bad), NOW) is Receipt.DEAD
    [letter] = await inbox.dead_letters()
    assert "data.from.email" in letter.reason


async def test_a_version_1_database_is_migrated_with_its_clients_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in split_statements(MIGRATIONS[0]):
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO clients (name, created_at) VALUES ('Иван', '2020-01-01T00:00:00Z')")
    store = await open_store(path)
    try:
        assert await rows(store, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        assert await rows(store, "SELECT name, potential FROM clients") == [("Иван", 0)]
    finally:
        await store.close()
