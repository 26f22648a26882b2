"""`pbxlink adapter` with `[crm] backend = "retailcrm"`: real mosquitto, the adapter in its own
process, the fake RetailCRM in its own process on 127.0.0.1. Fault tests: the adapter SIGKILLed
mid-batch, RetailCRM down for 30 s, 503 bursts, answers slower than the timeout, the adapter's
database lost while RetailCRM was down (PUBACK only after RetailCRM accepted). Every call's
effect must be in RetailCRM exactly once: one customer, order, task and uploaded call each.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pbxlab.fakes.process import FakeRetailCrmProcess
from pbxlab.mosquitto import BrokerHandle

from pbxlink.rules.samples import missed, outcome_message

KEY = "lab-retailcrm-key"
STATUSES = ("new", "callback", "cancel-other", "complete")


def config_text(port: int, database: Path, url: str, key_file: Path, *, rate: int, timeout: int = 10) -> str:
    return f"""
[mqtt]
port = {port}
[adapter]
database = "{database}"
http_port = 0
max_attempts = 3

[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "{url}"
api_key_file = "{key_file}"
site = "main"
rate_limit = {rate}
retry_seconds = 5
timeout_seconds = {timeout}
[crm.retailcrm.users]
"101" = 27

[crm.orders]
enabled = true
[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"
[crm.tasks]
enabled = true
assignees = ["101"]
link_to_this_call = true
unlinked = "skip"
"""


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    if not database.exists():
        return [(0,)]
    with sqlite3.connect(database, timeout=10) as db:
        try:
            return [tuple(r) for r in db.execute(sql).fetchall()]
        except sqlite3.OperationalError as exc:  # the adapter is creating the file right now
            if "no such table" not in str(exc):
                raise
            return [(0,)]


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


def lose(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


async def wait_for(check: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {seconds} s\n{tail(log)}")
        await asyncio.sleep(0.1)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def calls(count: int, prefix: str) -> list[tuple[str, bytes]]:
    """Missed calls from `count` new numbers: each makes a customer, an order, a task and a call."""
    return [
        outcome_message(
            missed(id=f"pbx1:{prefix}{n}", external={"raw": f"050{n:07d}", "e164": f"+38050{n:07d}"})
        )
        for n in range(count)
    ]


def assert_exactly_once(state: dict[str, Any], ids: list[str]) -> None:
    """One customer, order, task and uploaded call per call id; nothing else."""
    expected = sorted(ids)
    assert sorted(c["externalId"] for c in state["customers"]) == sorted(f"pbxlink-{i}" for i in ids)
    assert sorted(o["externalId"] for o in state["orders"]) == sorted(f"pbxlink-{i}" for i in ids)
    assert sorted(c["externalId"] for c in state["calls"]) == expected
    per_order = collections.Counter(t["order"]["id"] for t in state["tasks"])
    assert sorted(per_order.values()) == [1] * len(ids)
    assert set(per_order) == {o["id"] for o in state["orders"]}


class Rig:
    def __init__(self, tmp_path: Path, broker: BrokerHandle, *, rate: int, timeout: int = 10) -> None:
        self.tmp = tmp_path
        self.broker = broker
        self.log = tmp_path / "adapter.log"
        self.fake = FakeRetailCrmProcess(
            tmp_path / "fake.log", api_key=KEY, users={27: "Anna"}, statuses=STATUSES, rate_limit=rate
        )
        key_file = tmp_path / "retailcrm.key"
        key_file.write_text(KEY + "\n")
        self.database = tmp_path / "adapter.sqlite3"
        self.config = tmp_path / "adapter.toml"
        self.config.write_text(
            config_text(broker.port, self.database, self.fake.url, key_file, rate=rate, timeout=timeout)
        )
        self.adapter: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.adapter = subprocess.Popen(
                [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.adapter is not None
        os.kill(self.adapter.pid, signal.SIGKILL)
        self.adapter.wait()

    def connected(self) -> int:
        return self.log.read_bytes().count(b"crm_adapter_connected") if self.log.exists() else 0

    def done(self) -> int:
        return int(query(self.database, "SELECT count(*) FROM inbox WHERE state = 'done'")[0][0])

    def stop(self) -> None:
        if self.adapter is not None and self.adapter.poll() is None:
            self.adapter.send_signal(signal.SIGTERM)
            try:
                self.adapter.wait(20)
            except subprocess.TimeoutExpired:
                self.adapter.kill()
                self.adapter.wait()
        self.fake.stop()


@pytest.fixture
def make_rig(tmp_path: Path, mosquitto_broker: BrokerHandle) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(tmp_path, mosquitto_broker, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop()


async def test_adapter_sigkilled_mid_batch_makes_every_effect_exactly_once(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(rate=200)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    stream = calls(60, "k")
    await publish(rig.broker.port, stream + stream[:6])  # a few re-sent, as a publisher retrying would
    await wait_for(lambda: len(rig.fake.state()["customers"]) >= 15, 30, "first customers", rig.log)
    rig.kill()  # mid-batch: some writes reached RetailCRM, their local commit did not happen
    killed_at = len(rig.fake.state()["customers"])
    rig.start()
    await wait_for(lambda: rig.done() == 60, 90, "all 60 outcomes done", rig.log)
    assert killed_at < 60
    assert_exactly_once(rig.fake.state(), [f"pbx1:k{n}" for n in range(60)])


async def test_retailcrm_down_for_30_seconds_loses_and_doubles_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(rate=200)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    rig.fake.faults(unavailable_for=30)
    down_since = time.monotonic()
    await publish(rig.broker.port, calls(20, "d"))
    await asyncio.sleep(10)
    assert rig.done() == 0
    assert query(rig.database, "SELECT count(*) FROM inbox WHERE state = 'dead'") == [(0,)]
    await wait_for(lambda: rig.done() == 20, 90, "all 20 outcomes done after the outage", rig.log)
    assert time.monotonic() - down_since >= 30
    assert_exactly_once(rig.fake.state(), [f"pbx1:d{n}" for n in range(20)])


async def test_bursts_of_503_are_retried_and_every_effect_arrives_once(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(rate=200)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    stream = calls(30, "b")
    for chunk in range(3):  # each chunk of calls meets a burst of five 503s
        rig.fake.faults(fail_next=5)
        await publish(rig.broker.port, stream[chunk * 10 : chunk * 10 + 10])
        target = chunk * 10 + 10
        await wait_for(lambda: rig.done() == target, 60, f"chunk {chunk} done", rig.log)  # noqa: B023
    state = rig.fake.state()
    assert sum(1 for r in state["requests"] if r.get("status") == 503) == 15
    assert_exactly_once(state, [f"pbx1:b{n}" for n in range(30)])


async def test_answers_slower_than_the_timeout_double_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(rate=200, timeout=1)
    rig.fake.faults(late={"/api/v5/tasks/create": 1.5, "/api/v5/orders/create": 1.5})
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    await publish(rig.broker.port, calls(5, "s"))
    await asyncio.sleep(8)
    rig.fake.faults(late={})
    await wait_for(lambda: rig.done() == 5, 90, "all 5 outcomes done", rig.log)
    assert_exactly_once(rig.fake.state(), [f"pbx1:s{n}" for n in range(5)])


async def test_the_broker_keeps_outcomes_until_retailcrm_accepted_them(make_rig: Callable[..., Rig]) -> None:
    """PUBACK only after RetailCRM accepted: with RetailCRM down, the stored outcomes are still
    unacknowledged, so even losing the adapter's database then loses none of them."""
    rig = make_rig(rate=200)
    rig.fake.faults(unavailable_for=3600)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    await publish(rig.broker.port, calls(5, "p"))
    await wait_for(
        lambda: query(rig.database, "SELECT count(*) FROM inbox")[0][0] == 5, 20, "5 outcomes stored", rig.log
    )
    rig.kill()
    lose(rig.database)
    rig.fake.faults(unavailable_for=0)
    rig.start()
    await wait_for(lambda: rig.done() == 5, 60, "all 5 redelivered and done", rig.log)
    assert_exactly_once(rig.fake.state(), [f"pbx1:p{n}" for n in range(5)])


async def test_the_directory_from_retailcrm_is_published_retained_for_routing(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(rate=200)
    rig.fake.create_customer("ФОП Петренко", ["050 111 00 02"], manager=27)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    async with aiomqtt.Client("127.0.0.1", rig.broker.port, protocol=aiomqtt.ProtocolVersion.V5) as sub:
        await sub.subscribe("pbxlink/v1/directory/380501110002", qos=1)
        async with asyncio.timeout(30):
            async for message in sub.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                document = json.loads(payload)
                break
    assert document["number"] == "+380501110002"
    [client] = document["clients"]
    assert client["name"] == "ФОП Петренко"
    assert client["responsibles"][0]["extension"] == "101"


async def test_a_repeated_bad_payload_is_dead_lettered_once_and_the_adapter_goes_on(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(rate=200)
    rig.start()
    await wait_for(lambda: rig.connected() >= 1, 20, "adapter connected", rig.log)
    garbage = ("pbxlink/v1/pbx1/call/outcome", b"\x00not json")
    await publish(rig.broker.port, [garbage, garbage, *calls(3, "g")])
    await wait_for(lambda: rig.done() == 3, 60, "the 3 good outcomes done", rig.log)
    assert query(rig.database, "SELECT count(*) FROM inbox WHERE state = 'dead'") == [(1,)]
    assert rig.adapter is not None
    assert rig.adapter.poll() is None  # still running
    assert_exactly_once(rig.fake.state(), [f"pbx1:g{n}" for n in range(3)])
