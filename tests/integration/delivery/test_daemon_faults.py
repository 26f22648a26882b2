"""Fault tests of `pbxlink run` against the real lab Asterisk and a real mosquitto.

A consumer records everything published and dedupes by envelope id: every call placed must
arrive exactly once after dedupe, whatever breaks in between.

    (a) mosquitto stopped for 20+ s while calls finish, then restarted
    (b) the daemon SIGKILLed while calls are up and outcomes are pending, then restarted;
        and SIGKILLed with calls up that end before it is back
    (c) the AMI TCP connection cut mid-call (a loopback proxy the test severs)
    (d) Asterisk crashed (SIGKILL) and restarted while calls are up
    (e) the state directory unwritable → a clear error, exit 73, nothing claimed delivered
    (f) a malformed and an oversized AMI frame → logged, counted, the stream goes on
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab_support import AmiProxy, CallLoad, DaemonProcess, new_daemon
from mqtt_support import RecordingConsumer, recording_consumer, until
from pbxlab import AmiClient, LabInstance
from pbxlab.mosquitto import BrokerHandle
from pbxlab.session import LabSession

pytestmark = pytest.mark.lab


@dataclass
class Rig:
    session: LabSession
    broker: BrokerHandle
    daemon: DaemonProcess
    load: CallLoad
    proxy: AmiProxy

    @property
    def lab(self) -> LabInstance:
        return self.session.instance


def _hang_up_everything(lab: LabInstance) -> None:
    with AmiClient(lab.host, lab.ami_port, lab.ami_user, lab.ami_secret, events="off").connect() as ami:
        if ami.channel_count():
            ami.action("Hangup", Channel="/.*/")
        assert ami.wait_idle(30), "the lab Asterisk still has channels up"


@pytest.fixture
def rig(asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path) -> Iterator[Rig]:
    _hang_up_everything(asterisk_lab.instance)
    proxy = AmiProxy(asterisk_lab.ami_port)
    daemon = new_daemon(tmp_path, asterisk_lab.instance, mosquitto_broker.port, ami_port=proxy.port)
    try:
        load = CallLoad(asterisk_lab.instance, tmp_path / "sipp")
        try:
            yield Rig(asterisk_lab, mosquitto_broker, daemon, load, proxy)
        finally:
            load.close()
    finally:
        daemon.stop()
        proxy.close()


@pytest.fixture
async def consumer(rig: Rig) -> AsyncIterator[RecordingConsumer]:
    async with recording_consumer(rig.broker.port, "pbxlink/v1/pbx1/call/#") as recorder:
        yield recorder


def outcomes(consumer: RecordingConsumer) -> dict[str, dict[str, object]]:
    """Deduped by id; also checks that every copy of an id carries the same outcome."""
    seen: dict[str, dict[str, object]] = {}
    for message in consumer.messages:
        if not message.topic.endswith("/call/outcome"):
            continue
        body = message.body
        if body["id"] in seen:
            assert seen[body["id"]] == body["data"], "two different outcomes with one id"
        seen[body["id"]] = body["data"]
    return seen


async def wait_calls_up(lab: LabInstance, count: int) -> None:
    """Until Asterisk has `count` bridged calls (two channels each) up."""

    def channels() -> int:
        with AmiClient(lab.host, lab.ami_port, lab.ami_user, lab.ami_secret, events="off").connect() as ami:
            return ami.channel_count()

    async def enough() -> bool:
        return await asyncio.to_thread(channels) >= 2 * count

    await until(enough, within=30)


async def start_daemon(rig: Rig) -> None:
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)


async def test_a_broker_outage_of_20_seconds_loses_and_duplicates_nothing(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    await start_daemon(rig)
    caller = rig.load.place(10, rate=5, hold_ms=3000)
    await wait_calls_up(rig.lab, 3)
    rig.broker.stop()
    outage_started = time.monotonic()
    assert await asyncio.to_thread(caller.wait, 60) == 0, caller.errors()
    # Calls ended during the outage: their outcomes are committed and pending, not "sent".
    await until(
        lambda: rig.daemon.metrics().get('pbxlink_outbox_pending{kind="call.outcome"}', 0) >= 1, within=15
    )
    status, body = rig.daemon.readyz()
    assert status == 503
    assert body["checks"]["mqtt"] is False
    await asyncio.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))
    rig.broker.start()

    await until(lambda: len(outcomes(consumer)) >= 10, within=60)
    received = outcomes(consumer)
    assert len(received) == 10
    assert all(o["direction"] == "internal" and o["answered"] for o in received.values())
    await until(lambda: rig.daemon.metrics()['pbxlink_outbox_pending{kind="call.outcome"}'] == 0)
    assert rig.daemon.metrics()['pbxlink_reconnects_total{link="mqtt"}'] >= 1


async def test_a_sigkilled_daemon_publishes_pending_outcomes_and_the_calls_it_missed_after_restart(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    await start_daemon(rig)
    # Short calls end while the broker is away: their outcomes wait in the outbox.
    rig.broker.stop()
    short = rig.load.place(4, rate=4, hold_ms=1000)
    assert await asyncio.to_thread(short.wait, 30) == 0, short.errors()
    await until(
        lambda: rig.daemon.metrics().get('pbxlink_outbox_pending{kind="call.outcome"}', 0) == 4, within=15
    )
    # Long calls are up when the daemon dies.
    long = rig.load.place(3, rate=3, hold_ms=8000)
    await wait_calls_up(rig.lab, 3)
    rig.daemon.kill()
    rig.broker.start()
    await start_daemon(rig)

    assert await asyncio.to_thread(long.wait, 60) == 0, long.errors()
    await until(lambda: len(outcomes(consumer)) >= 7, within=60)
    received = outcomes(consumer)
    assert len(received) == 7
    # The long calls continue in the restarted tracker (rebuilt from the AMI journal; a call
    # whose first events were not yet journaled is adopted from the AMI snapshot instead).
    assert any(line.get("event") == "tracker_restored" for line in rig.daemon.log_lines())
    starts = [line for line in rig.daemon.log_lines() if line.get("event") == "daemon_starting"]
    assert starts[-1]["pending_outcomes"] == 4


async def test_calls_that_end_while_the_daemon_is_dead_get_their_outcome_after_restart(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    """SIGKILL with calls up; the calls end before the daemon is back. The restarted daemon
    rebuilds its tracker from the AMI journal in the outbox, and the first AMI snapshot ends
    those calls (reconstructed)."""
    await start_daemon(rig)
    caller = rig.load.place(3, rate=3, hold_ms=3000)
    await wait_calls_up(rig.lab, 3)
    await asyncio.sleep(0.5)  # the journal is committed at most 0.2 s after an event
    rig.daemon.kill()
    assert await asyncio.to_thread(caller.wait, 30) == 0, caller.errors()
    await start_daemon(rig)

    await until(lambda: len(outcomes(consumer)) >= 3, within=30)
    received = outcomes(consumer)
    assert len(received) == 3
    assert all(o["reconstructed"] and o["answered"] for o in received.values())
    restored = [line for line in rig.daemon.log_lines() if line.get("event") == "tracker_restored"]
    assert restored[-1]["open_calls"] == 3


async def test_an_ami_connection_cut_mid_call_resyncs_and_each_call_gets_one_outcome(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    await start_daemon(rig)
    caller = rig.load.place(6, rate=6, hold_ms=4000)
    await wait_calls_up(rig.lab, 6)
    assert rig.proxy.sever() == 1
    assert await asyncio.to_thread(caller.wait, 60) == 0, caller.errors()

    await until(lambda: len(outcomes(consumer)) >= 6, within=60)
    await asyncio.sleep(2)  # a duplicate would come now, if at all
    assert len(outcomes(consumer)) == 6
    assert rig.proxy.connections >= 2
    metrics = rig.daemon.metrics()
    assert metrics['pbxlink_reconnects_total{link="ami"}'] >= 1
    assert metrics["pbxlink_ami_connected"] == 1


async def test_an_asterisk_crash_and_restart_ends_its_calls_with_one_outcome_each(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    """Asterisk is SIGKILLed (no Hangup events at all), then started again.

    (A graceful ``core stop`` hangs the calls up with events first; the tracker then sees
    ordinary ends. The crash is the hard case: only the resync can end those calls.)
    """
    await start_daemon(rig)
    caller = rig.load.place(4, rate=4, hold_ms=20000)
    await wait_calls_up(rig.lab, 4)
    crashed = rig.lab
    await asyncio.to_thread(rig.session.stop_asterisk, kill=True)
    assert not crashed.alive
    await asyncio.to_thread(rig.session.start_asterisk)
    caller.stop()  # its calls died with Asterisk

    await until(lambda: len(outcomes(consumer)) >= 4, within=60)
    received = outcomes(consumer)
    assert len(received) == 4
    assert all(o["reconstructed"] for o in received.values())
    assert all(o["ended_at"] for o in received.values())
    await until(lambda: rig.daemon.readyz()[0] == 200, within=30)
    # And new calls after the restart are tracked as usual.
    after = rig.load.place(2, rate=2, hold_ms=1000)
    assert await asyncio.to_thread(after.wait, 30) == 0, after.errors()
    await until(lambda: len(outcomes(consumer)) >= 6, within=30)


def test_an_unwritable_state_directory_stops_the_daemon_with_a_clear_error(rig: Rig) -> None:
    state = rig.daemon.config.state_dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(state)], check=True)
    try:
        rig.daemon.start()
        assert rig.daemon.process is not None
        code = rig.daemon.process.wait(30)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert code == 73
    errors = [line for line in rig.daemon.log_lines() if line.get("event") == "outbox_unavailable"]
    assert len(errors) == 1
    assert "is not writable" in errors[0]["error"]
    assert not any(line.get("event") == "daemon_ready" for line in rig.daemon.log_lines())


async def test_malformed_and_oversized_ami_frames_are_counted_and_the_stream_goes_on(
    rig: Rig,
    consumer: RecordingConsumer,
) -> None:
    await start_daemon(rig)
    # A Hangup without the headers the tracker needs, and a frame over ami.max_frame_bytes
    # (64 KiB in this config), injected into the Asterisk → daemon stream between frames.
    rig.proxy.inject(b"Event: Hangup\r\nPrivilege: call,all\r\nCause: 16\r\n\r\n")
    rig.proxy.inject(b"Event: VarSet\r\nValue: " + b"x" * 100_000 + b"\r\n\r\n")
    caller = rig.load.place(3, rate=3, hold_ms=1000)
    assert await asyncio.to_thread(caller.wait, 30) == 0, caller.errors()

    await until(lambda: len(outcomes(consumer)) >= 3, within=30)
    assert len(outcomes(consumer)) == 3
    await until(
        lambda: rig.daemon.metrics().get('pbxlink_ami_frames_rejected_total{reason="oversized"}', 0) >= 1,
        within=10,
    )
    metrics = rig.daemon.metrics()
    assert metrics['pbxlink_ami_frames_rejected_total{reason="malformed_event"}'] >= 1
    assert rig.proxy.connections == 1  # the connection survived both
    events = {line.get("event") for line in rig.daemon.log_lines()}
    assert {"ami_frame_rejected", "ami_frame_dropped"} <= events
