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
from mqtt_support import Mosquitto, recording_consumer, until

from pbxlink.daemon.envelope import Envelope, MessageKind, build_envelope
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import MessageStatus, Outbox
from pbxlink.daemon.publisher import Backoff, OutcomePublisher
from pbxlink.foundation.config import MqttSettings, Secret

NOW = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)


def outcome(n: int, *, answered: bool = True) -> Envelope:
    data = {"schema": 1, "id": f"pbx1:17000.{n}", "direction": "inbound", "answered": answered}
    return build_envelope(MessageKind.OUTCOME, data, node="pbx1", now=NOW)


def event(n: int, seq: int) -> Envelope:
    data = {"schema": 1, "type": "ringing", "call_id": f"pbx1:17000.{n}", "seq": seq, "direction": "outbound"}
    return build_envelope(MessageKind.EVENT, data, node="pbx1", now=NOW)


def settings_for(broker: Mosquitto, **changes: object) -> MqttSettings:
    base = MqttSettings(host="127.0.0.1", port=broker.port, backoff_initial=0.2, backoff_max=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make_password_file(path: Path, user: str, password: str) -> None:
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True, capture_output=True
    )


@contextlib.asynccontextmanager
async def running(publisher: OutcomePublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
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
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto.port) as consumer,
    ):
        publisher = OutcomePublisher(settings_for(mosquitto), outbox, node="pbx1", metrics=metrics)
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
        assert metrics.published.value(kind="call.outcome") == 30
        assert metrics.publish_latency.count(kind="call.outcome") == 30


async def test_presence_is_retained_online_then_offline_on_a_clean_stop(
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        publisher = OutcomePublisher(settings_for(mosquitto), outbox, node="pbx1", metrics=DaemonMetrics())
        async with running(publisher):
            await publisher.wait_connected()
        # A consumer arriving later still learns the state: it is retained.
        async with recording_consumer(mosquitto.port, "pbxlink/v1/pbx1/status") as consumer:
            await consumer.wait_for(lambda c: len(c.messages) == 1)
    (status,) = consumer.messages
    assert status.retain is True
    assert status.body["state"] == "offline"
    assert status.body["session"] == publisher.session


async def test_messages_committed_while_the_broker_is_down_are_delivered_after_it_returns(
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto.port) as consumer,
    ):
        publisher = OutcomePublisher(settings_for(mosquitto), outbox, node="pbx1", metrics=metrics)
        async with running(publisher):
            await outbox.add([outcome(1)], now=time.time(), event_ttl=300)
            publisher.wake()
            await consumer.wait_for(lambda c: "pbx1:17000.1" in c.unique_ids("call/outcome"))

            mosquitto.stop()
            await outbox.add([outcome(i) for i in range(2, 12)], now=time.time(), event_ttl=300)
            publisher.wake()
            await asyncio.sleep(1.5)  # several reconnect attempts fail meanwhile
            assert not publisher.connected
            assert len(await outbox.pending(limit=100)) == 10  # nothing pretended sent
            mosquitto.start()

            await consumer.wait_for(
                lambda c: c.unique_ids("call/outcome") >= {f"pbx1:17000.{i}" for i in range(1, 12)}
            )
            await wait_until_empty(outbox)
        assert metrics.reconnects.value(link="mqtt") >= 1
        assert metrics.mqtt_connected.value() == 0


async def test_events_whose_expiry_passed_during_an_outage_are_not_published(
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    metrics = DaemonMetrics()
    async with (
        await Outbox.open(tmp_path / "o.sqlite") as outbox,
        recording_consumer(mosquitto.port) as consumer,
    ):
        await outbox.add([event(1, 1)], now=time.time() - 100, event_ttl=30)  # long expired
        await outbox.add([outcome(1)], now=time.time(), event_ttl=30)
        publisher = OutcomePublisher(settings_for(mosquitto), outbox, node="pbx1", metrics=metrics)
        async with running(publisher):
            await consumer.wait_for(lambda c: len(c.ids("call/outcome")) == 1)
        assert consumer.ids("call/event") == []
        assert await outbox.status_of("pbx1:17000.1:1") is MessageStatus.EXPIRED
        assert metrics.expired.value() == 1


async def test_a_publish_the_broker_refuses_stays_pending_and_is_counted(
    tmp_path: Path,
) -> None:
    # The ACL lets anonymous clients write presence but not outcomes: mosquitto answers the
    # outcome's PUBLISH with PUBACK reason 0x87 (Not authorized). aiomqtt alone would call that
    # a success.
    acl = tmp_path / "acl"
    acl.write_text("topic write pbxlink/v1/pbx1/status\ntopic read pbxlink/v1/#\n")
    broker = Mosquitto(tmp_path, extra_config=f"acl_file {acl}\n")
    broker.start()
    try:
        metrics = DaemonMetrics()
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            publisher = OutcomePublisher(settings_for(broker), outbox, node="pbx1", metrics=metrics)
            async with running(publisher):
                await until(lambda: metrics.publish_failures.value(reason="refused") >= 1)
            assert await outbox.status_of("pbx1:17000.1") is MessageStatus.PENDING
            assert metrics.published.value(kind="call.outcome") == 0
            (row,) = await outbox.pending(limit=5)
            assert row.attempts >= 1
    finally:
        broker.stop()


async def test_username_and_password_are_used_and_a_wrong_password_keeps_retrying(
    tmp_path: Path,
) -> None:
    passwd = tmp_path / "passwd"
    make_password_file(passwd, "pbxlink", "s3cret")
    broker = Mosquitto(tmp_path, extra_config=f"allow_anonymous false\npassword_file {passwd}\n")
    broker.config.write_text(broker.config.read_text().replace("allow_anonymous true\n", ""))
    broker.start()
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
                await until(lambda: metrics.reconnects.value(link="mqtt") >= 2)
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
    task = asyncio.create_task(publisher.run())
    await publisher.wait_connected()
    print(publisher.session, flush=True)
    await task

asyncio.run(main())
"""


async def test_the_will_marks_the_node_offline_when_the_daemon_dies(
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with recording_consumer(mosquitto.port, "pbxlink/v1/pbx9/status") as consumer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_PUBLISHER,
            str(tmp_path / "o.sqlite"),
            str(mosquitto.port),
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


def make_tls_files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    ca_key, ca_crt = directory / f"{name}-ca.key", directory / f"{name}-ca.crt"
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    for args in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_crt),
            "-days",
            "2",
            "-subj",
            f"/CN={name} test CA",
        ],
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ],
    ):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return ca_crt, crt, key


async def test_tls_with_the_right_ca_delivers_and_with_another_ca_refuses_to_connect(
    tmp_path: Path,
) -> None:
    ca, crt, key = await asyncio.to_thread(make_tls_files, tmp_path, "broker")
    other_ca, _, _ = await asyncio.to_thread(make_tls_files, tmp_path, "other")
    broker = Mosquitto(tmp_path, extra_config=f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n")
    broker.start()
    try:
        async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
            await outbox.add([outcome(1)], now=time.time(), event_ttl=None)
            metrics = DaemonMetrics()
            impostor = OutcomePublisher(
                settings_for(broker, tls=True, ca_file=other_ca), outbox, node="pbx1", metrics=metrics
            )
            async with running(impostor):
                await until(lambda: metrics.reconnects.value(link="mqtt") >= 2)
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


def make_client_cert(directory: Path, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    key, csr, crt = directory / "client.key", directory / "client.csr", directory / "client.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=pbxlink-pbx1",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


async def test_a_broker_requiring_client_certificates_gets_the_configured_one(
    tmp_path: Path,
) -> None:
    ca, crt, key = await asyncio.to_thread(make_tls_files, tmp_path, "broker")
    client_crt, client_key = await asyncio.to_thread(
        make_client_cert, tmp_path, ca, tmp_path / "broker-ca.key"
    )
    broker = Mosquitto(
        tmp_path, extra_config=f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\nrequire_certificate true\n"
    )
    broker.start()
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
                await until(lambda: metrics.reconnects.value(link="mqtt") >= 2)
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
