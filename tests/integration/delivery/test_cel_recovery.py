"""Calls that live inside an AMI outage or a daemon outage, recovered from Asterisk's CEL.

`pbxlink run` as a real process against the lab Asterisk (CEL to SQLite through
cel_sqlite3_custom and to CSV through cel_custom, the lab's cel*.conf; each test runs with the
daemon reading either), a real mosquitto, SIPp phones:

* the AMI connection is cut by the loopback proxy and refused for ~10 s; calls are placed and
  finished during the cut, and one starts during it and ends after AMI is back → every call
  exactly once, with the facts the SIP side produced;
* the daemon is SIGKILLed while a call rings; calls start (and one ends) while it is dead; it
  is restarted → every outcome complete: line, start time, who rang.

Ground truth is what the SIPp scripts did (who called whom, who answered), written here from
the calls placed, never from the tracker's output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lab_support import AmiProxy, CallLoad, DaemonProcess, new_daemon
from mqtt_support import RecordingConsumer, recording_consumer, until
from pbxlab import AmiClient, Call, LabInstance, Phone
from pbxlab.mosquitto import BrokerHandle
from pbxlab.session import LabSession
from pbxlab.sipp import SippProcess

pytestmark = pytest.mark.lab

DID = "4930100200"  # the routing DID: no FastAGI server here, so it goes to queue support


@dataclass
class CelRig:
    session: LabSession
    broker: BrokerHandle
    daemon: DaemonProcess
    load: CallLoad
    proxy: AmiProxy

    @property
    def lab(self) -> LabInstance:
        return self.session.instance

    def inbound(self, caller: str, hold_ms: int) -> SippProcess:
        return self._place(Call(DID, caller, "Outage Caller", hold_ms=hold_ms))

    def internal(self, callee: str, *, hold_ms: int = 1500, answer_timeout_ms: int = 60000) -> SippProcess:
        return self._place(
            Call(callee, "101", "Agent 101", hold_ms=hold_ms, answer_timeout_ms=answer_timeout_ms)
        )

    def _place(self, call: Call) -> SippProcess:
        caller = self.load.sipp.call(call, trace_messages=False)
        self.load.callers.append(caller)  # stopped (and its files closed) by load.close()
        return caller


def _channels(lab: LabInstance) -> int:
    with AmiClient(lab.host, lab.ami_port, lab.ami_user, lab.ami_secret, events="off").connect() as ami:
        return ami.channel_count()


@pytest.fixture(params=["sqlite", "csv"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which of the lab's two CEL backends the daemon reads back (tests/lab/asterisk/cel*.conf)."""
    return str(request.param)


@pytest.fixture
def cel_rig(
    asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path, backend: str
) -> Iterator[CelRig]:
    lab = asterisk_lab.instance
    with AmiClient(lab.host, lab.ami_port, lab.ami_user, lab.ami_secret, events="off").connect() as ami:
        if ami.channel_count():
            ami.action("Hangup", Channel="/.*/")
        assert ami.wait_idle(30)
    proxy = AmiProxy(asterisk_lab.ami_port)
    daemon = new_daemon(tmp_path, lab, mosquitto_broker.port, ami_port=proxy.port)
    daemon.config.cel_backend = backend
    daemon.config.cel_path = lab.log_dir / ("pbxlink-cel.db" if backend == "sqlite" else "pbxlink-cel.csv")
    load = CallLoad(lab, tmp_path / "sipp", ring_ms=2500)  # 102 answers after ringing 2.5 s
    phones = [
        load.sipp.phone(agent, lab.agent_ports[agent], Phone.never_answers()) for agent in ("101", "103")
    ]
    try:
        yield CelRig(asterisk_lab, mosquitto_broker, daemon, load, proxy)
    finally:
        for phone in phones:
            phone.stop()
        load.close()
        daemon.stop()
        proxy.close()


@pytest.fixture
async def consumer(cel_rig: CelRig) -> AsyncIterator[RecordingConsumer]:
    async with recording_consumer(cel_rig.broker.port, "pbxlink/v1/pbx1/call/#") as recorder:
        yield recorder


def outcomes(consumer: RecordingConsumer) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for message in consumer.messages:
        if message.topic.endswith("/call/outcome"):
            body = message.body
            assert seen.get(body["id"], body["data"]) == body["data"], "two different outcomes with one id"
            seen[body["id"]] = body["data"]
    return seen


def facts(outcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "direction": outcome["direction"],
        "answered": outcome["answered"],
        "missed_at": outcome["missed_at"],
        "external": None if outcome["external"] is None else outcome["external"]["raw"],
        "line": outcome["line"],
        "initiator": outcome["initiator"],
        "handlers": [h["agent"] for h in outcome["handlers"]],
        "rang": sorted(outcome["rang"]),
        "queue": outcome["queue"],
    }


def inbound_truth(caller: str) -> dict[str, Any]:
    """Queue support rings 101, 102, 103 at once; only 102's phone answers."""
    return {
        "direction": "inbound",
        "answered": True,
        "missed_at": None,
        "external": caller,
        "line": DID,
        "initiator": None,
        "handlers": ["102"],
        "rang": ["101", "102", "103"],
        "queue": "support",
    }


def internal_truth(callee: str, *, answered: bool) -> dict[str, Any]:
    return {
        "direction": "internal",
        "answered": answered,
        "missed_at": None if answered else "agent",
        "external": None,
        "line": None,
        "initiator": "101",
        "handlers": [callee] if answered else [],
        "rang": [callee],
        "queue": None,
    }


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def finished(caller: SippProcess) -> None:
    assert await asyncio.to_thread(caller.wait, 60) == 0, caller.errors()


async def ringing(lab: LabInstance, channels: int) -> None:
    async def enough() -> bool:
        return await asyncio.to_thread(_channels, lab) >= channels

    await until(enough, within=20)


async def test_calls_placed_and_finished_during_an_ami_outage_come_out_once_each_with_their_facts(
    cel_rig: CelRig, consumer: RecordingConsumer
) -> None:
    rig = cel_rig
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)
    assert rig.proxy.go_down() == 1
    cut_at = time.time()
    # one at a time where the queue needs 102 free (ringinuse = no)
    await finished(rig.inbound("0501110041", hold_ms=5000))  # held from Asterisk's own Answer()
    answered = rig.internal("102")
    unanswered = rig.internal("103", answer_timeout_ms=2500)
    await finished(answered)
    await finished(unanswered)
    spanning = rig.inbound("0501110042", hold_ms=9000)  # starts in the cut, ends after it
    await ringing(rig.lab, 4)
    await asyncio.sleep(3.5)  # answered by now
    rig.proxy.come_back()
    back_at = time.time()
    await finished(spanning)

    await until(lambda: len(outcomes(consumer)) >= 4, within=30)
    await asyncio.sleep(3)  # a duplicate would come now, if at all
    received = list(outcomes(consumer).values())
    assert sorted((facts(o) for o in received), key=repr) == sorted(
        [
            inbound_truth("0501110041"),
            internal_truth("102", answered=True),
            internal_truth("103", answered=False),
            inbound_truth("0501110042"),
        ],
        key=repr,
    )
    linkedids = [lid for o in received for lid in o["linkedids"]]
    assert len(linkedids) == len(set(linkedids))
    assert all(o["reconstructed"] for o in received)
    for outcome in received:
        assert cut_at - 0.5 < epoch(outcome["started_at"]) < back_at, outcome
    ended_in_the_cut = [o for o in received if o["external"] is None or o["external"]["raw"] != "0501110042"]
    assert all(epoch(o["ended_at"]) < back_at for o in ended_in_the_cut)
    assert all(o["hangup_by"] is not None for o in ended_in_the_cut)
    log = rig.daemon.log_lines()
    backfills = [line for line in log if line.get("event") == "cel_backfilled"]
    assert backfills
    assert backfills[0]["outcomes"] == 3


async def test_a_daemon_killed_while_calls_ring_gives_complete_outcomes_after_restart(
    cel_rig: CelRig, consumer: RecordingConsumer
) -> None:
    rig = cel_rig
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)
    ringing_at_kill = rig.inbound("0501110051", hold_ms=6000)
    await ringing(rig.lab, 4)  # the caller and the three phones of the queue
    await asyncio.sleep(0.5)  # the journal is committed at most 0.2 s after an event
    rig.daemon.kill()
    killed_at = time.time()
    missed_while_dead = rig.internal("103", answer_timeout_ms=2000)
    ends_after_restart = rig.internal("102", hold_ms=6000)
    await finished(missed_while_dead)
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)
    restarted_at = time.time()
    await finished(ringing_at_kill)
    await finished(ends_after_restart)

    await until(lambda: len(outcomes(consumer)) >= 3, within=30)
    await asyncio.sleep(2)
    received = list(outcomes(consumer).values())
    assert sorted((facts(o) for o in received), key=repr) == sorted(
        [
            inbound_truth("0501110051"),
            internal_truth("103", answered=False),
            internal_truth("102", answered=True),
        ],
        key=repr,
    )
    assert all(o["reconstructed"] for o in received)
    for outcome in received:
        assert epoch(outcome["started_at"]) < restarted_at, outcome
    [inbound] = [o for o in received if o["direction"] == "inbound"]
    assert epoch(inbound["started_at"]) < killed_at
    assert inbound["line"] == DID
    assert any(line.get("event") == "cel_backfilled" for line in rig.daemon.log_lines())
