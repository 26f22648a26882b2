"""The publisher against a real mosquitto: PUBACK before sent, order, outages, presence, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mqtt_support import lab_broker, recording_consumer, until
from pbxlab.mosquitto import BrokerHandle, BrokerTls
from pbxlab.pki import make_test_pki

from pbxlink.daemon.envelope import Envelope, build_envelope
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import MessageStatus, Outbox
from pbxlink.daemon.publisher import OutcomePublisher
from pbxlink.foundation.config import MqttSettings, Secret
from pbxlink.toolkit.metrics import sample
from pbxlink.toolkit.reconnect import Backoff
from pbxlink.wire.model import Direction
from pbxlink.wire.samples import sample_event, sample_outcome

NOW = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)


def outcome(n: int, *, answered: bool = True) -> Envelope:
    return build_envelope(sample_outcome(f"pbx1:17000.{n}", answered=answered), node="pbx1", now=NOW)


def event(n: int, seq: int) -> Envelope:
    event = sample_event(f"pbx1:17000.{n}", seq, direction=Direction.OUTBOUND, line=None)
    return build_envelope(event, node="pbx1", now=NOW)


def settings_for(broker: BrokerHandle, **changes: object) -> MqttSettings:
    base = MqttSettings(host="127.0.0.1", port=broker.port, backoff_initial=0.2, backoff_max=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make_password_file(path: Path, user: str, password: str) -> None:
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True, capture_output=True
    )


@contextlib.asynccontextmanager
async def running(publisher: OutcomePublisher) -> AsyncIterator[asyncio.Task[None]]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(publisher.run(), name="publisher")
        try:
            yield task
        finally:
            publisher.stop()
            try:
                async with asyncio.timeout(15):
                    await task
            except TimeoutError:
                task.cancel()


async def wait_until_empty(outbox: Outbox) -> None:
    async def empty() -> bool:
        return not await outbox.pending(limit=1)

    await until(empty)


async def test_outcomes_arrive_in_commit_order_with_envelope_and_mqtt5_properties(
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto_broker.port) as consumer,
    ):
        publisher = OutcomePublisher(settings_for(mosquitto_broker), outbox, node="pbx1", metrics=metrics)
        await outbox.add(
            [event(1, 1)] + [outcome(i, answered=i % 2 == 0) for i in range(30)],
            now=time.time(),
            event_ttl=300,
        )
        async with running(publisher):
            publisher.wake()
            await consumer.wait_for(lambda c: len(c.ids("call/outcome")) == 30)
            await wait_until_empty(outbox)

        assert consumer.ids("call/outcome") == [f"pbx1:17000.{i}" for i in range(30)]
        first = next(m for m in consumer.messages if m.topic == "pbxlink/v1/pbx1/call/outcome")
        assert first.body["type"] == "call.outcome"
        assert first.body["data"]["id"] == "pbx1:17000.0"
        assert first.retain is False
        assert first.properties["ContentType"] == "application/json"
        assert first.properties["PayloadFormatIndicator"] == 1
        assert first.properties["UserProperty"] == {
            "id": "pbx1:17000.0",
            "direction": "inbound",
            "answered": "true",
        }
        ev = next(m for m in consumer.messages if m.topic == "pbxlink/v1/pbx1/call/event")
        assert ev.body["id"] == "pbx1:17000.1:1"
        assert 0 < ev.properties["MessageExpiryInterval"] <= 300
        assert "answered" not in ev.properties["UserProperty"]
        assert await outbox.status_of("pbx1:17000.29") is MessageStatus.SENT
        assert sample(metrics.registry, "pbxlink_published_total", kind="call.outcome") == 30
        assert sample(metrics.registry, "pbxlink_publish_latency_seconds_count", kind="call.outcome") == 30


async def test_presence_is_retained_online_then_offline_on_a_clean_stop(
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        publisher = OutcomePublisher(
            settings_for(mosquitto_broker), outbox, node="pbx1", metrics=DaemonMetrics()
        )
        async with running(publisher):
            await publisher.wait_connected()
        # A consumer arriving later still learns the state: it is retained.
        async with recording_consumer(mosquitto_broker.port, "pbxlink/v1/pbx1/status") as consumer:
            await consumer.wait_for(lambda c: len(c.messages) == 1)
    (status,) = consumer.messages
    assert status.retain is True
    assert status.body["state"] == "offline"
    assert status.body["session"] == publisher.session


async def test_messages_committed_while_the_broker_is_down_are_delivered_after_it_returns(
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto_broker.port) as consumer,
    ):
        publisher = OutcomePublisher(settings_for(mosquitto_broker), outbox, node="pbx1", metrics=metrics)
        async with running(publisher):
            await outbox.add([outcome(1)], now=time.time(), event_ttl=300)
            publisher.wake()
            await consumer.wait_for(lambda c: "pbx1:17000.1" in c.unique_ids("call/outcome"))

            mosquitto_broker.stop()
            await outbox.add([outcome(i) for i in range(2, 12)], now=time.time(), event_ttl=300)
            publisher.wake()
            await asyncio.sleep(1.5)  # several reconnect attempts fail meanwhile
            assert not publisher.connected
            assert len(await outbox.pending(limit=100)) == 10  # nothing pretended sent
            mosquitto_broker.start()

            await consumer.wait_for(
                lambda c: c.unique_ids("call/outcome") >= {f"pbx1:17000.{i}" for i in range(1, 12)}
            )
            await wait_until_empty(outbox)
        assert sample(metrics.registry, "pbxlink_reconnects_total", link="mqtt") >= 1
        assert sample(metrics.registry, "pbxlink_mqtt_connected") == 0


async def test_events_whose_expiry_passed_during_an_outage_are_not_published(
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto_broker.port) as consumer,
    ):
        await outbox.add([event(1, 1)], now=time.time() - 100, event_ttl=30)  # long expired
        await outbox.add([outcome(1)], now=time.time(), event_ttl=30)
        publisher = OutcomePublisher(settings_for(mosquitto_broker), outbox, node="pbx1", metrics=metrics)
        async with running(publisher):
            await consumer.wait_for(lambda c: len(c.ids("call/outcome")) == 1)
        assert consumer.ids("call/event") == []
        assert await outbox.status_of("pbx1:17000.1:1") is MessageStatus.EXPIRED
        assert sample(metrics.registry, "pbxlink_events_expired_total") == 1


async def test_a_publish_the_broker_refuses_stays_pending_and_is_counted(
    tmp_path: Path,
) -> None:
    # The ACL lets anonymous clients write presence but not outcomes: mosquitto answers the
    # outcome's PUBLISH with PUBACK reason 0x87 (Not authorized). aiomqtt alone would call that
    # a success.
    acl = tmp_path / "acl"
    acl.write_text("topic write pbxlink/v1/pbx1/status\ntopic read pbxlink/v1/#\n")
    broker = lab_broker(tmp_path, extra_config=f"acl_file {acl}\n")
    try:
        metrics = DaemonMetrics()
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            publisher = OutcomePublisher(settings_for(broker), outbox, node="pbx1", metrics=metrics)
            async with running(publisher):
                await until(
                    lambda: sample(metrics.registry, "pbxlink_publish_failures_total", reason="refused") >= 1
                )
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.PENDING
            assert sample(metrics.registry, "pbxlink_published_total", kind="call.outcome") == 0
            (row,) = await outbox.pending(limit=5)
            assert row.attempts >= 1
    finally:
        broker.stop()


async def test_username_and_password_are_used_and_a_wrong_password_keeps_retrying(
    tmp_path: Path,
) -> None:
    passwd = tmp_path / "passwd"
    make_password_file(passwd, "pbxlink", "s3cret")
    broker = lab_broker(tmp_path, extra_config=f"allow_anonymous false\npassword_file {passwd}\n")
    try:
        metrics = DaemonMetrics()
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            wrong = OutcomePublisher(
                settings_for(broker, username="pbxlink", password=Secret("nope")),
                outbox,
                node="pbx1",
                metrics=metrics,
            )
            async with running(wrong):
                await until(lambda: sample(metrics.registry, "pbxlink_reconnects_total", link="mqtt") >= 2)
                assert not wrong.connected
                assert "not authori" in (wrong.last_error or "").lower(), wrong.last_error
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.PENDING

            right = OutcomePublisher(
                settings_for(broker, username="pbxlink", password=Secret("s3cret")),
                outbox,
                node="pbx1",
                metrics=DaemonMetrics(),
            )
            async with running(right):
                await wait_until_empty(outbox)
    finally:
        broker.stop()


KILLED_PUBLISHER = """
import asyncio, sys, time
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from pbxlink.foundation.config import MqttSettings
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import Outbox
from pbxlink.daemon.publisher import OutcomePublisher

async def main() -> None:
    outbox = await Outbox.open(Path(sys.argv[1]))
    publisher = OutcomePublisher(MqttSettings(port=int(sys.argv[2])), outbox, node="pbx9",
                                 metrics=DaemonMetrics())
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(publisher.run(), name="publisher")
        await publisher.wait_connected()
        print(publisher.session, flush=True)

asyncio.run(main())
"""


async def test_the_will_marks_the_node_offline_when_the_daemon_dies(
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with recording_consumer(mosquitto_broker.port, "pbxlink/v1/pbx9/status") as consumer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_PUBLISHER,
            str(tmp_path / "o.sqlite"),
            str(mosquitto_broker.port),
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        session = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        await consumer.wait_for(lambda c: any(m.body["state"] == "online" for m in c.messages))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await consumer.wait_for(lambda c: c.messages[-1].body["state"] == "offline")
    states = [(m.body["state"], m.body["session"]) for m in consumer.messages]
    assert states == [("online", session), ("offline", session)]


@pytest.mark.parametrize("attempt", [0, 1, 5, 50])
def test_backoff_is_jittered_within_half_to_full_and_capped(attempt: int) -> None:
    backoff = Backoff(initial=0.5, cap=30.0)
    ceiling = min(30.0, 0.5 * 2**attempt)
    assert backoff.delay(attempt, 0.0) == ceiling / 2
    assert backoff.delay(attempt, 1.0) == ceiling
    assert ceiling / 2 <= backoff.delay(attempt, 0.37) <= ceiling


async def test_tls_with_the_right_ca_delivers_and_with_another_ca_refuses_to_connect(
    tmp_path: Path,
) -> None:
    pki = await asyncio.to_thread(make_test_pki, tmp_path / "pki")
    other_ca = (await asyncio.to_thread(make_test_pki, tmp_path / "other")).ca_file
    ca = pki.ca_file
    broker = lab_broker(
        tmp_path, tls=BrokerTls(ca, pki.server_cert, pki.server_key, require_certificate=False)
    )
    try:
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            metrics = DaemonMetrics()
            impostor = OutcomePublisher(
                settings_for(broker, tls=True, ca_file=other_ca), outbox, node="pbx1", metrics=metrics
            )
            async with running(impostor):
                await until(lambda: sample(metrics.registry, "pbxlink_reconnects_total", link="mqtt") >= 2)
                assert not impostor.connected
                assert "certificate verify failed" in (impostor.last_error or "")
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.PENDING

            trusted = OutcomePublisher(
                settings_for(broker, tls=True, ca_file=ca), outbox, node="pbx1", metrics=DaemonMetrics()
            )
            async with running(trusted):
                await wait_until_empty(outbox)
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.SENT
    finally:
        broker.stop()


async def test_a_broker_requiring_client_certificates_gets_the_configured_one(
    tmp_path: Path,
) -> None:
    pki = await asyncio.to_thread(make_test_pki, tmp_path / "pki")
    ca, client_crt, client_key = pki.ca_file, pki.client_cert, pki.client_key
    broker = lab_broker(tmp_path, tls=BrokerTls(ca, pki.server_cert, pki.server_key))
    try:
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            metrics = DaemonMetrics()
            # With TLS 1.3 the refusal comes after the handshake: the CONNACK never arrives.
            anonymous = OutcomePublisher(
                settings_for(broker, tls=True, ca_file=ca),
                outbox,
                node="pbx1",
                metrics=metrics,
                publish_timeout=2,
            )
            async with running(anonymous):
                await until(lambda: sample(metrics.registry, "pbxlink_reconnects_total", link="mqtt") >= 2)
                assert not anonymous.connected
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.PENDING

            known = OutcomePublisher(
                settings_for(broker, tls=True, ca_file=ca, cert_file=client_crt, key_file=client_key),
                outbox,
                node="pbx1",
                metrics=DaemonMetrics(),
            )
            async with running(known):
                await wait_until_empty(outbox)
    finally:
        broker.stop()
