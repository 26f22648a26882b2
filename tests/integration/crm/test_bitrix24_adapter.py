"""`pbxlink adapter` with `[crm] backend = "bitrix24"` and `backend = "webhook"`: real mosquitto,
the adapter in its own process, the fake Bitrix24 portal / the webhook receiver in their own
processes on 127.0.0.1. Fault tests: the adapter SIGKILLed mid-batch, the portal down for 30 s,
the portal's limit exceeded, a steady stream at the documented limit, a receiver answering 500
then 200. Every effect must arrive exactly once: one contact, one task and one finished call per
missed call; one processed delivery per outcome.
"""

from __future__ import annotations

import asyncio
import collections
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
from pbxlab.fakes.process import FakeBitrix24Process, WebhookReceiverProcess
from pbxlab.mosquitto import BrokerHandle

from pbxlink.rules.samples import missed, outcome_message

TOKEN = "lab-webhook-token"
USERS = {7: ("Anna", "101"), 9: ("Office", "100")}


def bitrix24_config(port: int, database: Path, secret: Path, *, rate: float, retry: int = 5) -> str:
    return f"""
[mqtt]
port = {port}
[adapter]
database = "{database}"
http_port = 0
max_attempts = 3

[crm]
backend = "bitrix24"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
rate_limit = {rate}
retry_seconds = {retry}
[crm.clients.missed]
create = "client"
[crm.tasks]
enabled = true
assignees = ["101"]
"""


def webhook_config(port: int, database: Path, url: str, secret: Path) -> str:
    return f"""
[mqtt]
port = {port}
[adapter]
database = "{database}"
http_port = 0
max_attempts = 3

[crm]
backend = "webhook"
[crm.webhook]
backoff_initial_seconds = 0.2
backoff_max_seconds = 2
max_attempts = 50
[crm.webhook.subscribers.erp]
url = "{url}"
secret_file = "{secret}"
messages = ["call.outcome"]
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


async def wait_for(check: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {seconds} s\n{tail(log)}")
        await asyncio.sleep(0.2)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def calls(count: int, prefix: str) -> list[tuple[str, bytes]]:
    """Missed calls from `count` new numbers: each makes a contact, a task and a finished call."""
    return [
        outcome_message(
            missed(id=f"pbx1:{prefix}{n}", external={"raw": f"050{n:07d}", "e164": f"+38050{n:07d}"})
        )
        for n in range(count)
    ]


def assert_exactly_once(state: dict[str, Any], ids: list[str]) -> None:
    """One contact (ORIGIN_ID = its call), one task on it and one finished call per call id."""
    assert sorted(c["ORIGIN_ID"] for c in state["contacts"]) == sorted(f"pbxlink-{i}" for i in ids)
    assert sorted(c["EXTERNAL_CALL_ID"] for c in state["statistic"]) == sorted(ids)
    per_call = collections.Counter(
        line.removeprefix("[pbxlink call ").removesuffix("]")
        for t in state["tasks"]
        for line in t["description"].splitlines()
        if line.startswith("[pbxlink call ")
    )
    assert per_call == dict.fromkeys(ids, 1)
    assert state["registered"] == []  # every registered call was finished


class Adapter:
    def __init__(self, tmp_path: Path, config: str) -> None:
        self.log = tmp_path / "adapter.log"
        self.database = tmp_path / "adapter.sqlite3"
        self.config = tmp_path / "adapter.toml"
        self.config.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def connected(self) -> int:
        return self.log.read_bytes().count(b"crm_adapter_connected") if self.log.exists() else 0

    def done(self) -> int:
        return int(query(self.database, "SELECT count(*) FROM inbox WHERE state = 'done'")[0][0])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def bitrix24(
    tmp_path: Path,
    broker: BrokerHandle,
    cleanup: list[Any],
    *,
    rate: float,
    burst: int = 50,
    client_rate: float = 1.9,
) -> tuple[FakeBitrix24Process, Adapter]:
    fake = FakeBitrix24Process(tmp_path / "fake.log", token=TOKEN, users=USERS, rate=rate, burst=burst)
    cleanup.append(fake)
    secret = tmp_path / "bitrix24-webhook"
    secret.write_text(fake.webhook + "\n")
    adapter = Adapter(
        tmp_path, bitrix24_config(broker.port, tmp_path / "adapter.sqlite3", secret, rate=client_rate)
    )
    cleanup.append(adapter)
    return fake, adapter


async def test_adapter_sigkilled_mid_batch_makes_every_bitrix24_effect_exactly_once(
    tmp_path: Path, mosquitto_broker: BrokerHandle, cleanup: list[Any]
) -> None:
    fake, adapter = bitrix24(tmp_path, mosquitto_broker, cleanup, rate=200, burst=1000, client_rate=40)
    adapter.start()
    await wait_for(lambda: adapter.connected() >= 1, 20, "adapter connected", adapter.log)
    stream = calls(40, "k")
    await publish(mosquitto_broker.port, stream + stream[:5])  # a few re-sent, as a retrying publisher would
    await wait_for(lambda: len(fake.state()["contacts"]) >= 10, 60, "first contacts", adapter.log)
    adapter.kill()  # mid-batch: some writes reached the portal, their local commit did not happen
    killed_at = len(fake.state()["contacts"])
    adapter.start()
    await wait_for(lambda: adapter.done() == 40, 120, "all 40 outcomes done", adapter.log)
    assert killed_at < 40
    assert_exactly_once(fake.state(), [f"pbx1:k{n}" for n in range(40)])


async def test_the_portal_down_for_30_seconds_loses_and_doubles_nothing(
    tmp_path: Path, mosquitto_broker: BrokerHandle, cleanup: list[Any]
) -> None:
    fake, adapter = bitrix24(tmp_path, mosquitto_broker, cleanup, rate=200, burst=1000, client_rate=40)
    adapter.start()
    await wait_for(lambda: adapter.connected() >= 1, 20, "adapter connected", adapter.log)
    fake.faults(unavailable_for=30)
    down_since = time.monotonic()
    await publish(mosquitto_broker.port, calls(15, "d"))
    await asyncio.sleep(10)
    assert adapter.done() == 0
    assert query(adapter.database, "SELECT count(*) FROM inbox WHERE state = 'dead'") == [(0,)]
    await wait_for(lambda: adapter.done() == 15, 120, "all 15 outcomes done after the outage", adapter.log)
    assert time.monotonic() - down_since >= 30
    assert_exactly_once(fake.state(), [f"pbx1:d{n}" for n in range(15)])


async def test_past_the_portals_limit_503s_are_retried_and_every_effect_arrives_once(
    tmp_path: Path, mosquitto_broker: BrokerHandle, cleanup: list[Any]
) -> None:
    """A client configured faster than its portal allows (20/s against 2/s, 5 deep): the portal
    answers 503 QUERY_LIMIT_EXCEEDED, the adapter backs off and still makes each effect once."""
    fake, adapter = bitrix24(tmp_path, mosquitto_broker, cleanup, rate=2, burst=5, client_rate=20)
    adapter.start()
    await wait_for(lambda: adapter.connected() >= 1, 20, "adapter connected", adapter.log)
    await publish(mosquitto_broker.port, calls(10, "l"))
    await wait_for(lambda: adapter.done() == 10, 180, "all 10 outcomes done", adapter.log)
    state = fake.state()
    assert state["rejected_for_limit"] > 0
    assert_exactly_once(state, [f"pbx1:l{n}" for n in range(10)])


async def test_a_steady_stream_at_the_documented_limit_is_never_refused(
    tmp_path: Path, mosquitto_broker: BrokerHandle, cleanup: list[Any]
) -> None:
    """The cloud's 2 requests/s, 50 deep, and the default client (1.9/s): no 503 at all."""
    fake, adapter = bitrix24(tmp_path, mosquitto_broker, cleanup, rate=2, burst=50)
    adapter.start()
    await wait_for(lambda: adapter.connected() >= 1, 20, "adapter connected", adapter.log)
    await publish(mosquitto_broker.port, calls(30, "s"))
    await wait_for(lambda: adapter.done() == 30, 180, "all 30 outcomes done", adapter.log)
    state = fake.state()
    assert state["rejected_for_limit"] == 0
    assert_exactly_once(state, [f"pbx1:s{n}" for n in range(30)])


async def test_a_receiver_answering_500_then_200_and_an_adapter_sigkill_deliver_each_outcome_once(
    tmp_path: Path, mosquitto_broker: BrokerHandle, cleanup: list[Any]
) -> None:
    secret = tmp_path / "erp.secret"
    secret.write_text("erp-secret\n")
    receiver = WebhookReceiverProcess(tmp_path / "receiver.log", secrets=["erp-secret"])
    cleanup.append(receiver)
    adapter = Adapter(
        tmp_path, webhook_config(mosquitto_broker.port, tmp_path / "adapter.sqlite3", receiver.url, secret)
    )
    cleanup.append(adapter)
    receiver.faults(fail_for=5)
    adapter.start()
    await wait_for(lambda: adapter.connected() >= 1, 20, "adapter connected", adapter.log)
    stream = calls(30, "w")
    await publish(mosquitto_broker.port, stream[:15])
    await wait_for(lambda: receiver.state()["failed"] >= 3, 30, "the receiver refused some", adapter.log)
    adapter.kill()
    adapter.start()
    await publish(mosquitto_broker.port, stream[15:] + stream[:3])
    expected = sorted(f"pbx1:w{n}" for n in range(30))
    await wait_for(
        lambda: sorted(receiver.state()["processed"]) == expected, 90, "all 30 delivered", adapter.log
    )
    state = receiver.state()
    assert state["refused_signature"] == 0
    assert sorted(state["processed"]) == expected  # each processed once; repeats answered, not processed
    rows = query(adapter.database, "SELECT state, count(*) FROM webhook_deliveries GROUP BY state")
    assert rows == [("delivered", 30)]
