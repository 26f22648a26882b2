"""The directory store on a real SQLite file: durable, reloaded at start, last write wins."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pbxlink.daemon.agi.directory_store import DirectoryStore, DirectoryStoreError
from pbxlink.routing.directory import (
    DirectoryUpdate,
    directory_topic,
    encode_directory_entry,
    parse_directory_message,
)
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible, RoutingEntry
from pbxlink.wire.model import DirectoryTime

IVAN = Responsible("ivan", "101")
OLGA = Responsible("olga", "102")
GONE = Responsible("gone", "103", deleted=True)


def message(number: str, *owners: tuple[str, Responsible], employee: str | None = None) -> DirectoryUpdate:
    clients = tuple(
        ClientOwners(f"c{i}", f"Client {i}", DirectoryTime.parse(created), (person,))
        for i, (created, person) in enumerate(owners)
    )
    entry = DirectoryEntry(number, DirectoryTime.parse("2026-11-22T10:00:00Z"), clients, employee)
    return parse_directory_message(directory_topic(number), encode_directory_entry(entry))


def deletion(number: str) -> DirectoryUpdate:
    return parse_directory_message(directory_topic(number), b"")


async def test_entries_survive_a_restart_and_are_looked_up_after_load(tmp_path: Path) -> None:
    path = tmp_path / "directory.sqlite3"
    async with DirectoryStore(path) as store:
        await store.load()
        await store.apply(
            [
                message("+380981234567", ("2025-01-01T00:00:00Z", IVAN)),
                message("+380671112233", ("2020-01-01T00:00:00Z", IVAN), ("2026-01-01T00:00:00Z", OLGA)),
                message("+380931112233", employee="ivan"),
            ]
        )
        assert store.lookup("+380981234567") == RoutingEntry(None, (IVAN,), (IVAN,), 1)
    async with DirectoryStore(path) as reopened:
        assert reopened.lookup("+380981234567") is None  # nothing before load()
        assert await reopened.load() == 3
        assert reopened.loaded
        assert reopened.lookup("+380981234567") == RoutingEntry(None, (IVAN,), (IVAN,), 1)
        assert reopened.lookup("+380671112233") == RoutingEntry(None, (IVAN,), (OLGA,), 2)
        assert reopened.lookup("+380931112233") == RoutingEntry("ivan", (), (), 0)


async def test_flags_of_responsibles_round_trip_through_the_compact_form(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    async with DirectoryStore(path) as store:
        await store.apply(
            [
                message(
                    "+380501112233",
                    ("2025-01-01T00:00:00Z", GONE),
                    ("2024-01-01T00:00:00Z", Responsible("partner", None, is_employee=False, blocked=True)),
                )
            ]
        )
    async with DirectoryStore(path) as store:
        await store.load()
        entry = store.lookup("+380501112233")
        assert entry is not None
        assert entry.first == (GONE,)
        assert entry.newest == (GONE,)
    async with DirectoryStore(path) as store:
        await store.apply(
            [
                message(
                    "+380501112233",
                    ("2020-01-01T00:00:00Z", GONE),
                    ("2024-01-01T00:00:00Z", Responsible("partner", None, is_employee=False, blocked=True)),
                )
            ]
        )
    async with DirectoryStore(path) as store:
        await store.load()
        entry = store.lookup("+380501112233")
        assert entry is not None
        assert entry.newest == (Responsible("partner", None, False, True, False),)


async def test_empty_retained_message_deletes_on_disk_and_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    async with DirectoryStore(path) as store:
        await store.apply([message("+380981234567", ("2025-01-01T00:00:00Z", IVAN))])
        await store.apply([deletion("+380981234567")])
        assert store.lookup("+380981234567") is None
        assert await store.count_rows() == 0


@pytest.mark.parametrize("delete_last", [True, False])
async def test_last_message_per_number_in_a_batch_wins(tmp_path: Path, delete_last: bool) -> None:
    path = tmp_path / "d.sqlite3"
    batch = [message("+380981234567", ("2025-01-01T00:00:00Z", IVAN)), deletion("+380981234567")]
    if not delete_last:
        batch.reverse()
    async with DirectoryStore(path) as store:
        await store.apply(batch)
        in_memory = store.lookup("+380981234567")
    async with DirectoryStore(path) as store:
        await store.load()
        assert (store.lookup("+380981234567") is None) is delete_last
        assert store.lookup("+380981234567") == in_memory


async def test_equal_entries_share_one_object_in_memory(tmp_path: Path) -> None:
    async with DirectoryStore(tmp_path / "d.sqlite3") as store:
        await store.apply([message(f"+38098{n:07d}", ("2025-01-01T00:00:00Z", IVAN)) for n in range(100)])
        assert len(store.index) == 100
        assert store.index.distinct_entries() == 1
        assert store.lookup("+380980000001") is store.lookup("+380980000099")


async def test_a_database_from_a_newer_pbxlink_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(DirectoryStoreError, match="newer"):
        await DirectoryStore(path).open()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DirectoryStoreError, match=str(path)):
        await DirectoryStore(path).open()


async def test_a_message_applied_while_loading_is_not_overwritten_by_the_load(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.sqlite3"
    async with DirectoryStore(path) as store:
        await store.apply([message(f"+38098{n:07d}", ("2025-01-01T00:00:00Z", IVAN)) for n in range(50_000)])
    async with DirectoryStore(path) as store:
        async with asyncio.TaskGroup() as tasks:
            loading = tasks.create_task(store.load(), name="directory-load")
            await asyncio.sleep(0)  # the load has started reading its snapshot
            await store.apply(
                [message("+380980049999", ("2025-01-01T00:00:00Z", OLGA)), deletion("+380980000001")]
            )
            assert await loading == 50_000
        entry = store.lookup("+380980049999")
        assert entry is not None
        assert entry.first == (OLGA,)
        assert store.lookup("+380980000001") is None
