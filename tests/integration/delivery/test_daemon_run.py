"""`pbxlink run` as systemd sees it: notify protocol, SIGHUP reloads, SIGTERM (real lab)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lab_support import CallLoad, DaemonProcess, new_daemon
from mqtt_support import RecordingConsumer, lab_broker, recording_consumer, until
from pbxlab import AmiClient
from pbxlab.mosquitto import BrokerHandle
from pbxlab.session import LabSession

pytestmark = pytest.mark.lab


@pytest.fixture
def daemon(
    asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path
) -> Iterator[DaemonProcess]:
    with AmiClient(
        asterisk_lab.host, asterisk_lab.ami_port, asterisk_lab.ami_user, asterisk_lab.ami_secret, events="off"
    ).connect() as ami:
        if ami.channel_count():
            ami.action("Hangup", Channel="/.*/")
        assert ami.wait_idle(30)
    process = new_daemon(tmp_path, asterisk_lab.instance, mosquitto_broker.port)
    yield process
    process.stop()


@pytest.fixture
def load(asterisk_lab: LabSession, tmp_path: Path) -> Iterator[CallLoad]:
    calls = CallLoad(asterisk_lab.instance, tmp_path / "sipp")
    yield calls
    calls.close()


@pytest.fixture
async def consumer(mosquitto_broker: BrokerHandle) -> AsyncIterator[RecordingConsumer]:
    async with recording_consumer(mosquitto_broker.port, "pbxlink/v1/#") as recorder:
        yield recorder


def outcome_ids(consumer: RecordingConsumer) -> set[str]:
    return consumer.unique_ids("call/outcome")


async def test_systemd_gets_ready_after_ami_login_watchdog_pings_and_stopping(
    daemon: DaemonProcess,
    tmp_path: Path,
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    messages: list[tuple[float, str, bool]] = []  # time, message, AMI logged in at that time

    async def receive() -> None:
        while True:
            data = await loop.sock_recv(listener, 4096)
            logged_in = any(line.get("event") == "ami_resynced" for line in daemon.log_lines())
            messages.append((time.monotonic(), data.decode(), logged_in))

    try:
        async with asyncio.TaskGroup() as tasks:
            receiver = tasks.create_task(receive(), name="notify-receiver")
            daemon.start({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})
            await until(lambda: sum(m.startswith("WATCHDOG=1") for _, m, _ in messages) >= 3)
            assert daemon.terminate() == 0
            await until(lambda: any(m.startswith("STOPPING=1") for _, m, _ in messages))
            receiver.cancel()
    finally:
        listener.close()

    ready = [(at, logged_in) for at, m, logged_in in messages if m.startswith("READY=1")]
    assert len(ready) == 1
    assert ready[0][1], "READY=1 was sent before the AMI login and snapshot"
    ready_text = next(m for _, m, _ in messages if m.startswith("READY=1"))
    assert "STATUS=AMI up" in ready_text
    pings = [at for at, m, _ in messages if m == "WATCHDOG=1"]
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(pings))  # every 0.5 s
    assert messages[-1][1].startswith("STOPPING=1")


async def test_sighup_with_a_bad_config_is_refused_and_delivery_goes_on(
    daemon: DaemonProcess,
    load: CallLoad,
    consumer: RecordingConsumer,
) -> None:
    daemon.start()
    await asyncio.to_thread(daemon.wait_ready)
    daemon.config_file.write_text(
        daemon.config.toml() + "[mqtt.oops]\nnot_a_key = 1\n" + "[ami]\nport = 99999\n"
    )
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    await until(lambda: any(line.get("event") == "config_reload_refused" for line in daemon.log_lines()))
    refused = next(line for line in daemon.log_lines() if line.get("event") == "config_reload_refused")
    assert len(refused["problems"]) >= 2  # every problem, not just the first
    assert daemon.readyz()[0] == 200

    caller = load.place(2, rate=2, hold_ms=1000)
    assert await asyncio.to_thread(caller.wait, 30) == 0, caller.errors()
    await until(lambda: len(outcome_ids(consumer)) == 2)
    assert daemon.metrics()['pbxlink_config_reloads_total{result="error"}'] == 1


async def test_sighup_with_a_new_broker_moves_publishing_there_without_a_restart(
    daemon: DaemonProcess,
    load: CallLoad,
    tmp_path: Path,
) -> None:
    daemon.start()
    await asyncio.to_thread(daemon.wait_ready)
    (tmp_path / "second").mkdir()
    second = lab_broker(tmp_path / "second")
    try:
        async with recording_consumer(second.port, "pbxlink/v1/#") as moved:
            daemon.config.mqtt_port = second.port
            daemon.write_config()
            assert daemon.process is not None
            pid = daemon.process.pid
            daemon.process.send_signal(signal.SIGHUP)
            await until(lambda: any(line.get("event") == "config_reloaded" for line in daemon.log_lines()))
            caller = load.place(1, rate=1, hold_ms=1000)
            assert await asyncio.to_thread(caller.wait, 30) == 0, caller.errors()
            await until(lambda: len(outcome_ids(moved)) == 1)
            assert daemon.process.pid == pid
            assert daemon.process.poll() is None
            reloaded = next(line for line in daemon.log_lines() if line.get("event") == "config_reloaded")
            assert reloaded["changed"] == ["mqtt"]
    finally:
        second.stop()


async def test_each_finished_call_is_logged_once_on_one_canonical_line(
    daemon: DaemonProcess,
    load: CallLoad,
    consumer: RecordingConsumer,
) -> None:
    daemon.start()
    await asyncio.to_thread(daemon.wait_ready)
    caller = load.place(3, rate=3, hold_ms=800)
    assert await asyncio.to_thread(caller.wait, 30) == 0, caller.errors()
    await until(lambda: len(outcome_ids(consumer)) == 3)
    lines = [line for line in daemon.log_lines() if line.get("event") == "call_finished"]
    assert sorted(line["call_id"] for line in lines) == sorted(outcome_ids(consumer))
    assert all(line["direction"] == "internal" and line["answered"] is True for line in lines)
    assert daemon.terminate() == 0
    status = [m for m in consumer.messages if m.topic.endswith("/status")]
    await until(
        lambda: any(m.body["state"] == "offline" for m in consumer.messages if m.topic.endswith("/status"))
    )
    assert status[0].body["state"] == "online"


async def test_with_routing_on_ready_waits_for_fastagi_and_the_outcome_carries_its_decision(
    asterisk_lab: LabSession,
    daemon: DaemonProcess,
    consumer: RecordingConsumer,
) -> None:
    """The daemon answers the lab dialplan's FastAGI itself (no stub): an unknown caller."""
    daemon.config.agi_port = asterisk_lab.agi_port
    daemon.start()
    await asyncio.to_thread(daemon.wait_ready)
    assert daemon.readyz()[1]["checks"]["agi"] is True
    # The scenario's ground truth assumes the lab's route stub; only what pbxlink published
    # matters here (without an answer from the daemon the reason would be "agi_failure").
    await asyncio.to_thread(asterisk_lab.run, "inbound_answered", route_stub=False)
    await until(lambda: len(outcome_ids(consumer)) >= 1, within=30)
    (outcome,) = [m.body["data"] for m in consumer.messages if m.topic.endswith("/outcome")]
    assert outcome["direction"] == "inbound"
    assert outcome["routing"] is not None
    assert outcome["routing"]["reason"] == "unknown_caller"
    # what only the AGI server knows is filled in from its own record of the decision
    assert isinstance(outcome["routing"]["decided_in_ms"], float)
    assert 0.0 < outcome["routing"]["decided_in_ms"] < 1000.0
