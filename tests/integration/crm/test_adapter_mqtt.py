"""The CRM adapter against a real mosquitto and a real SQLite file.

Outcome envelopes are published the way the daemon publishes them (QoS 1, MQTT 5); the adapter
consumes them through its shared subscription, stores, dedupes, applies the rules, and publishes
screen pops, dead letters and the retained ownership directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pbxlab.mosquitto import BrokerHandle
from pbxlab.ports import free_port

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import Settings, settings_from_toml
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.metrics import AdapterMetrics
from pbxlink.adapters.store import open_store
from pbxlink.rules.samples import (
    EMPLOYEES,
    event,
    event_message,
    missed,
    outcome_message,
    request,
    request_message,
)
from pbxlink.toolkit.metrics import sample

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
[[crm.requests.rules]]
name = "service"
keywords = "ремонт"
action = "support"
address = "user"
user = "boris"
"""


def config_text(port: int, database: Path, *, shared: bool = True) -> str:
    return (
        f'[mqtt]\nport = {port}\n[adapter]\ndatabase = "{database}"\nhttp_port = {free_port()}\n'
        f"shared_subscription = {str(shared).lower()}\n" + RULES
    )


async def seed_employees(database: Path) -> None:
    store = await open_store(database)
    crm = SqliteCrm(store)
    async with store.transaction():
        for e in EMPLOYEES:
            await crm.add_employee(e.id, e.name, extension=e.extension, deleted=e.deleted)
    await store.close()


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database, timeout=10) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


async def wait_for(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


class Watcher:
    """A subscriber that collects (topic, payload) from the adapter's output topics."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, bool]] = []


async def _collect(client: aiomqtt.Client, watcher: Watcher) -> None:
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        watcher.seen.append((message.topic.value, payload, message.retain))


@pytest.fixture
async def running(
    tmp_path: Path, mosquitto_broker: BrokerHandle
) -> AsyncIterator[tuple[CrmAdapter, Watcher, Path]]:
    database = tmp_path / "crm.sqlite3"
    await seed_employees(database)
    settings: Settings = settings_from_toml(config_text(mosquitto_broker.port, database))
    store = await open_store(database)
    adapter = CrmAdapter(settings, store, metrics=AdapterMetrics())
    shutdown = asyncio.Event()
    watcher = Watcher()
    async with aiomqtt.Client("127.0.0.1", mosquitto_broker.port, protocol=aiomqtt.ProtocolVersion.V5) as sub:
        for topic in ("pbxlink/v1/crm/#", "pbxlink/v1/directory/#"):
            await sub.subscribe(topic, qos=1)
        async with asyncio.TaskGroup() as tasks:
            collector = tasks.create_task(_collect(sub, watcher), name="collector")
            task = tasks.create_task(adapter.run(shutdown), name="adapter")
            await asyncio.wait_for(adapter.ready.wait(), 10)
            yield adapter, watcher, database
            shutdown.set()
            await asyncio.wait_for(task, 10)
            collector.cancel()
    await store.close()


async def test_outcomes_over_mqtt_are_applied_once_and_duplicates_dropped(
    running: tuple[CrmAdapter, Watcher, Path], mosquitto_broker: BrokerHandle
) -> None:
    adapter, _, database = running
    message = outcome_message(missed())
    await publish(mosquitto_broker.port, [message, message, message])
    await wait_for(lambda: query(database, "SELECT count(*) FROM inbox WHERE state='done'") == [(1,)])
    await wait_for(lambda: sum(adapter.received.values()) == 3)
    assert query(database, "SELECT number, client_name, description FROM inquiries") == [
        ("001", "Новый (15:29 05.03.2018, входящий вызов)", "Пропущенный")
    ]
    assert query(database, "SELECT count(*) FROM clients") == [(1,)]


async def test_screen_pop_and_retained_directory_entry_are_published(
    running: tuple[CrmAdapter, Watcher, Path], mosquitto_broker: BrokerHandle
) -> None:
    _, watcher, _ = running
    await publish(mosquitto_broker.port, [event_message(event(agent="101"))])
    await wait_for(lambda: any(t.startswith("pbxlink/v1/directory/") for t, _, _ in watcher.seen))
    await wait_for(lambda: any(t == "pbxlink/v1/crm/notify/anna" for t, _, _ in watcher.seen))
    [(_, pop, _)] = [s for s in watcher.seen if s[0] == "pbxlink/v1/crm/notify/anna"]
    assert json.loads(pop)["about"] == "client"
    [(_, entry, _)] = [s for s in watcher.seen if s[0] == "pbxlink/v1/directory/380981234567"]
    document = json.loads(entry)
    assert document["number"] == "+380981234567"
    assert document["clients"][0]["responsibles"][0] == {
        "employee": "anna",
        "extension": "101",
        "is_employee": True,
        "blocked": False,
        "deleted": False,
    }
    # A later subscriber (the daemon after a restart) still gets it: it is retained.
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto_broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as late:
        await late.subscribe("pbxlink/v1/directory/380981234567", qos=1)
        async with asyncio.timeout(5):
            async for message in late.messages:
                assert message.retain
                break


async def test_bad_payload_goes_to_the_dead_letter_topic_and_the_consumer_goes_on(
    running: tuple[CrmAdapter, Watcher, Path], mosquitto_broker: BrokerHandle
) -> None:
    _, watcher, database = running
    await publish(
        mosquitto_broker.port,
        [
            ("pbxlink/v1/pbx1/call/outcome", b"\x00garbage"),
            outcome_message(missed(id="pbx1:7", started_at="not a time")),
            outcome_message(missed(id="pbx1:8")),
        ],
    )
    await wait_for(lambda: len([s for s in watcher.seen if s[0] == "pbxlink/v1/crm/deadletter"]) == 2)
    letters = [json.loads(p) for t, p, _ in watcher.seen if t == "pbxlink/v1/crm/deadletter"]
    assert "not JSON" in letters[0]["reason"]
    assert letters[0]["payload"] == "\x00garbage"
    assert "data.started_at" in letters[1]["reason"]
    await wait_for(lambda: query(database, "SELECT count(*) FROM inquiries") == [(1,)])


async def test_the_adapter_counts_receipts_actions_dead_letters_and_its_backlog(
    running: tuple[CrmAdapter, Watcher, Path], mosquitto_broker: BrokerHandle
) -> None:
    adapter, watcher, _ = running
    assert adapter.metrics is not None
    r = adapter.metrics.registry
    assert sample(r, "pbxlink_adapter_mqtt_connected") == 1
    good = outcome_message(missed(id="pbx1:9"))
    await publish(mosquitto_broker.port, [good, good, ("pbxlink/v1/pbx1/call/outcome", b"{broken")])
    await wait_for(lambda: sample(r, "pbxlink_adapter_dead_letters_total") == 1)
    await wait_for(lambda: sample(r, "pbxlink_adapter_messages_applied_total") == 1)
    await wait_for(lambda: sample(r, "pbxlink_adapter_inbox_messages", state="done") == 1)
    assert sample(r, "pbxlink_adapter_messages_received_total", receipt="new") == 1
    assert sample(r, "pbxlink_adapter_messages_received_total", receipt="duplicate") == 1
    assert sample(r, "pbxlink_adapter_messages_received_total", receipt="dead") == 1
    assert sample(r, "pbxlink_adapter_inbox_messages", state="pending") == 0
    # The rules in RULES: a missed call from a new number creates a client and an inquiry.
    assert sample(r, "pbxlink_adapter_actions_applied_total", action="CreateInquiry") == 1
    assert sample(r, "pbxlink_adapter_crm_apply_seconds_count") >= 1
    await wait_for(lambda: [t for t, _, _ in watcher.seen].count("pbxlink/v1/crm/deadletter") == 1)


def _start_adapter(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _in_a_write_transaction(database: Path) -> bool:
    """True while another connection (the adapter) holds the database's write lock."""
    db = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        db.close()
    return False


async def test_adapter_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto_broker: BrokerHandle
) -> None:
    """SIGKILL while the adapter applies batches (one transaction per batch of up to 500
    messages, in one thread hop): what it applied stays, what it had not is applied after the
    restart, nothing twice. Inquiry numbers and clients count every outcome exactly once."""
    database = tmp_path / "crm.sqlite3"
    await seed_employees(database)
    config = tmp_path / "adapter.toml"
    config.write_text(config_text(mosquitto_broker.port, database))
    log = tmp_path / "adapter.log"
    total = 900  # the stream (990 with repeats) stays under mosquitto's default queue of 1000
    messages = [
        outcome_message(missed(id=f"pbx1:{n}", external={"raw": f"0981{n:06d}", "e164": None}))
        for n in range(total)
    ]
    # Every tenth message is published twice, as a publisher retrying after a lost PUBACK would.
    stream = [m for i, m in enumerate(messages) for _ in range(2 if i % 10 == 0 else 1)]

    adapter = _start_adapter(config, log)
    try:
        await wait_for(lambda: b"crm_adapter_connected" in log.read_bytes(), 15)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(publish(mosquitto_broker.port, stream), name="publisher")
            # Kill it while it holds the write transaction of a batch (or of a burst being stored).
            await wait_for(
                lambda: (
                    query(database, "SELECT count(*) FROM inbox WHERE state = 'done'")[0][0] >= 100
                    and _in_a_write_transaction(database)
                ),
                30,
            )
            os.kill(adapter.pid, signal.SIGKILL)  # mid-stream and mid-batch, no goodbye
            adapter.wait()
            done_at_kill = query(database, "SELECT count(*) FROM inbox WHERE state = 'done'")[0][0]
            pending_at_kill = query(database, "SELECT count(*) FROM inbox WHERE state = 'pending'")[0][0]
        # (the group waited for the publisher: the rest is queued by the broker for the
        # adapter's persistent session)
        assert 0 < done_at_kill < total
        adapter = _start_adapter(config, log)
        await wait_for(
            lambda: query(database, "SELECT count(*) FROM inbox WHERE state = 'done'") == [(total,)],
            120,
        )
    finally:
        adapter.send_signal(signal.SIGTERM)
        adapter.wait(10)
    assert query(database, "SELECT count(*), count(DISTINCT call_id) FROM inquiries") == [(total, total)]
    numbers = sorted(int(r[0]) for r in query(database, "SELECT number FROM inquiries"))
    assert numbers == list(range(1, total + 1))
    assert query(database, "SELECT count(*) FROM clients") == [(total,)]
    assert query(database, "SELECT count(*) FROM inbox WHERE state != 'done'") == [(0,)]
    assert adapter.returncode == 0
    print(f"killed with {done_at_kill} applied and {pending_at_kill} stored but not yet applied")


async def test_an_email_request_over_mqtt_becomes_a_support_ticket_for_its_user(
    running: tuple[CrmAdapter, Watcher, Path], mosquitto_broker: BrokerHandle
) -> None:
    _, watcher, database = running
    await publish(mosquitto_broker.port, [request_message(request())])
    await wait_for(lambda: query(database, "SELECT count(*) FROM tickets") == [(1,)])
    assert query(database, "SELECT subject, assignees FROM tickets") == [("Сломался телефон", "boris")]
    assert query(database, "SELECT name, potential FROM clients") == [("Ольга", 1)]
    await wait_for(lambda: any(t == "pbxlink/v1/crm/notify/boris" for t, _, _ in watcher.seen))


@pytest.mark.parametrize("shared", [False, True])
async def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto_broker: BrokerHandle, shared: bool
) -> None:
    database = tmp_path / "crm.sqlite3"
    await seed_employees(database)
    store = await open_store(database)
    config = config_text(mosquitto_broker.port, database, shared=shared)
    adapter = CrmAdapter(settings_from_toml(config), store)
    shutdown = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(adapter.run(shutdown), name="adapter")
            await _restart_the_broker_mid_stream(adapter, database, mosquitto_broker, shared=shared)
            shutdown.set()
            await asyncio.wait_for(task, 20)
    finally:
        shutdown.set()
        await store.close()
    assert query(database, "SELECT count(*), count(DISTINCT call_id) FROM inquiries") == [(100, 100)]


async def _restart_the_broker_mid_stream(
    adapter: CrmAdapter, database: Path, mosquitto_broker: BrokerHandle, *, shared: bool
) -> None:
    await asyncio.wait_for(adapter.ready.wait(), 10)
    first = [
        outcome_message(missed(id=f"pbx1:a{n}", external={"raw": f"0671{n:06d}", "e164": None}))
        for n in range(50)
    ]
    await publish(mosquitto_broker.port, first)
    await wait_for(lambda: query(database, "SELECT count(*) FROM inbox")[0][0] >= 10)
    await asyncio.to_thread(mosquitto_broker.restart)  # the adapter loses its connection
    if shared:
        # mosquitto does not restore a shared subscription from a persisted session: what is
        # published between its restart and the adapter's re-subscription reaches nobody
        # (measured; docs/crm.md). Publish once the adapter is back.
        await wait_for(lambda: adapter.ready.is_set() and adapter.connections >= 2, 20)
    second = [
        outcome_message(missed(id=f"pbx1:b{n}", external={"raw": f"0672{n:06d}", "e164": None}))
        for n in range(50)
    ]
    await publish(mosquitto_broker.port, second + first[:5])  # and a few re-sent ones
    await wait_for(lambda: query(database, "SELECT count(*) FROM inbox WHERE state = 'done'") == [(100,)], 60)
