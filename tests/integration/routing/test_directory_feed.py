"""The directory feed against a real mosquitto: retained messages fill the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import aiomqtt
import pytest

from pbxlink.daemon.agi.directory_feed import DirectoryFeed
from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.foundation.config import MqttSettings
from pbxlink.routing.directory import directory_topic, encode_directory_entry
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible
from pbxlink.wire.model import DirectoryTime

pytestmark = pytest.mark.lab


class BrokerLike(Protocol):
    host: str
    port: int

    def stop(self) -> None: ...
    def start(self) -> None: ...


def owned_by(number: str, extension: str) -> bytes:
    return encode_directory_entry(
        DirectoryEntry(
            number,
            DirectoryTime.parse("2026-11-22T10:00:00Z"),
            (
                ClientOwners(
                    "c1",
                    "Client",
                    DirectoryTime.parse("2025-01-01T00:00:00Z"),
                    (Responsible("ivan", extension),),
                ),
            ),
        )
    )


async def publish(broker: BrokerLike, messages: list[tuple[str, bytes]]) -> None:
    """The CRM side: retained QoS 1 messages."""
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=True)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition on state owned by another task (there is no event to wait on)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling observable state on purpose
            await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DirectoryStore]:
    async with DirectoryStore(tmp_path / "directory.sqlite3") as opened:
        await opened.load()
        yield opened


@contextlib.asynccontextmanager
async def feeding(feed: DirectoryFeed, broker: BrokerLike) -> AsyncIterator[None]:
    """The feed's own connection loop, owned by a TaskGroup, until the block ends."""
    settings = MqttSettings(host=broker.host, port=broker.port, backoff_initial=0.1, backoff_max=0.5)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(feed.run(settings, identifier="test-directory-feed"), name="feed")
        try:
            await until(feed.subscribed.is_set)
            yield
        finally:
            task.cancel()


async def test_retained_directory_arrives_at_subscribe_and_survives_a_restart(
    mosquitto_broker: BrokerLike,
    store: DirectoryStore,
    tmp_path: Path,
) -> None:
    # 2,000 > mosquitto's default max_queued_messages: at a QoS 1 subscription ~1,000 are lost
    numbers = [f"+38098{n:07d}" for n in range(2000)]
    await publish(mosquitto_broker, [(directory_topic(n), owned_by(n, "101")) for n in numbers])
    feed = DirectoryFeed(store)
    async with feeding(feed, mosquitto_broker):
        await until(lambda: feed.counters.applied == len(numbers))
    assert store.lookup("+380980001999") is not None
    assert feed.counters.batches < len(numbers)  # batched, not one transaction each
    async with DirectoryStore(tmp_path / "directory.sqlite3") as restarted:
        assert await restarted.load() == len(numbers)


async def test_live_update_delete_and_bad_payload(
    mosquitto_broker: BrokerLike,
    store: DirectoryStore,
) -> None:
    feed = DirectoryFeed(store)
    async with feeding(feed, mosquitto_broker):
        await publish(
            mosquitto_broker, [(directory_topic("+380981234567"), owned_by("+380981234567", "101"))]
        )
        await until(lambda: store.lookup("+380981234567") is not None)
        await publish(mosquitto_broker, [(directory_topic("+380981234567"), b"{broken")])
        await until(lambda: feed.counters.rejected == 1)
        kept = store.lookup("+380981234567")
        assert kept is not None  # a bad message loses nothing
        assert kept.first[0].extension == "101"
        await publish(
            mosquitto_broker, [(directory_topic("+380981234567"), owned_by("+380981234567", "102"))]
        )
        await until(
            lambda: (e := store.lookup("+380981234567")) is not None and e.first[0].extension == "102"
        )
        await publish(mosquitto_broker, [(directory_topic("+380981234567"), b"")])
        await until(lambda: store.lookup("+380981234567") is None)
    assert await store.count_rows() == 0


async def test_feed_reconnects_after_the_broker_restarts(
    mosquitto_broker: BrokerLike,
    store: DirectoryStore,
) -> None:
    feed = DirectoryFeed(store)
    async with feeding(feed, mosquitto_broker):
        mosquitto_broker.stop()
        await until(lambda: not feed.subscribed.is_set())
        mosquitto_broker.start()
        await until(feed.subscribed.is_set)
        await publish(
            mosquitto_broker, [(directory_topic("+380671112233"), owned_by("+380671112233", "103"))]
        )
        await until(lambda: store.lookup("+380671112233") is not None)
