"""Record real AMI transcripts of the tracker's extra cases against a lab Asterisk.

These complement the lab's own scenario recordings (tests/lab/pbxlab/scenarios.py) with what
the tracker needs beyond them:

* ``queue_local_member_answered``: queue ``sales`` with its members paused and a dynamic member
  added (AMI QueuePause / QueueAdd): an optimizable Local channel ``Local/102@from-agents``;
  the caller chooses 1 in
  the IVR, the Local member's ``;2`` half dials 102, who answers; Asterisk optimizes the Local
  pair away mid-call. The members are restored afterwards.
* ``inbound_answered_recorded``: like the lab's inbound_answered, plus an AMI ``MixMonitor``
  on 101's channel once it is bridged (the recording's file name must reach the outcome).
* ``click_to_call_agent_no_answer``: an AMI Originate rings agent 101 first, who never
  answers; the customer's number is never dialed.
* ``resync_call_up_at_connect``: the AMI session starts while a call is already bridged;
  right after login it lists the live channels (``CoreShowChannels``), as pbxlink's shell does
  after every (re)login, then records until the call has ended.
* ``resync_call_ended_while_down``: a session records the call's start and is cut while the call
  is bridged; the call ends while no session is up; a second session logs in and lists the
  (now no) channels. The transcript is both sessions' bytes, one after the other.

Run by hand (as root) to refresh tests/data/ami:
``PYTHONPATH=tests/lab .venv/bin/python tests/integration/calls/tracker_recordings.py [OFFSET] [DIR]``
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pbxlab.context import ScenarioContext
from pbxlab.driver import LabDriver
from pbxlab.instance import LabInstance
from pbxlab.route_stub import StubRoute
from pbxlab.sipp import Call, Phone

DID = "4930100200"
IVR_DID = "4930100300"
TO_101 = StubRoute("PJSIP/101", "owner", "101")


class RawAmiSession:
    """One AMI session whose received bytes are all kept; actions can be sent."""

    def __init__(self, instance: LabInstance) -> None:
        self._sock = socket.create_connection((instance.host, instance.ami_port), timeout=5)
        self._sock.settimeout(None)
        self.received = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="resync-ami", daemon=True)
        self._reader.start()
        self.send(
            f"Action: Login\r\nUsername: {instance.ami_user}\r\n"
            f"Secret: {instance.ami_secret}\r\nEvents: on\r\n\r\n"
        )
        self.wait_for(b"FullyBooted")

    def _read(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.received += chunk

    def send(self, text: str) -> None:
        self._sock.sendall(text.encode())

    def wait_for(self, marker: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if marker in self.received:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"AMI never sent {marker!r}")

    def list_channels(self) -> None:
        """What pbxlink's shell does after every login: the resync listing."""
        self.send("Action: CoreShowChannels\r\nActionID: resync-1\r\n\r\n")
        self.wait_for(b"Event: CoreShowChannelsComplete")

    def cut(self) -> bytes:
        """Drop the connection without logging off (a network failure); the bytes so far."""
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(2)
        with self._lock:
            return bytes(self.received)


def _truth(name: str, calls: list[dict[str, Any]], notes: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "scenario": name, "calls": calls, "driver": notes}


def _answered_by_101(
    caller: str, rang: list[str], hangup_by: str | None, *, routing_seen: bool
) -> dict[str, Any]:
    """The call both recordings place; what is known of it depends on what AMI showed.

    ``rang`` is empty and the routing decision unknown when the session started after 101 had
    answered (the ring and the AGI's variables were never seen); ``hangup_by`` is unknown (None)
    when the call ended while no session was up.
    """
    routing = {"target": TO_101.target, "reason": TO_101.reason, "owner": TO_101.owner}
    return {
        "direction": "inbound",
        "answered": True,
        "missed_at": None,
        "external": {"raw": caller},
        "line": DID,
        "initiator": None,
        "first_answered_by": "101",
        "last_handled_by": "101",
        "handlers": ["101"],
        "rang": rang,
        "transfers": [],
        "queue": None,
        "hangup_by": hangup_by,
        "routing": routing if routing_seen else None,
        "reconstructed": True,
    }


def _place_call(ctx: ScenarioContext, caller: str, name: str) -> None:
    ctx.route_stub(TO_101)
    ctx.phones(a101=Phone.answers(ring_ms=800, talk_ms=60000))
    ctx.call(Call(DID, caller, name, hold_ms=5000))
    ctx.wait_bridged("101")


def record_call_up_at_connect(driver: LabDriver, workdir: Path, out: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = ScenarioContext(driver, workdir)
    try:
        _place_call(ctx, "+380501110021", "Resync Up")
        time.sleep(1.0)
        session = RawAmiSession(driver.instance)
        session.list_channels()
        ctx.finish_calls()
        driver.ami.wait_idle(timeout=20)
        time.sleep(0.5)
        out.write_bytes(session.cut())
    finally:
        ctx.close()
    return _truth(
        "resync_call_up_at_connect",
        [_answered_by_101("+380501110021", [], "external", routing_seen=False)],
        {"note": "AMI session logged in while the call was bridged; CoreShowChannels at login"},
    )


def record_call_ended_while_down(driver: LabDriver, workdir: Path, out: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = ScenarioContext(driver, workdir)
    first = RawAmiSession(driver.instance)
    try:
        first.list_channels()  # the login resync of the first session (no channels yet)
        _place_call(ctx, "+380501110022", "Resync Down")
        time.sleep(1.0)
        before = first.cut()
        ctx.finish_calls()
        driver.ami.wait_idle(timeout=20)
        second = RawAmiSession(driver.instance)
        second.list_channels()
        time.sleep(0.3)
        after = second.cut()
    finally:
        ctx.close()
    out.write_bytes(before + after)
    return _truth(
        "resync_call_ended_while_down",
        [_answered_by_101("+380501110022", ["101"], None, routing_seen=True)],
        {
            "note": "session 1 cut while the call was bridged; the call ended with no session; "
            "session 2 lists no channels"
        },
    )


def record_queue_local_member_answered(driver: LabDriver, workdir: Path, out: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ami = driver.ami
    for member in ("PJSIP/102", "PJSIP/103"):  # static members: paused, not removed
        ami.checked("QueuePause", Queue="sales", Interface=member, Paused="true")
    ami.checked("QueueAdd", Queue="sales", Interface="Local/102@from-agents", MemberName="Agent 102")
    ctx = ScenarioContext(driver, workdir)
    caller = "+380501110023"
    try:
        session = RawAmiSession(driver.instance)
        session.list_channels()
        ctx.phones(a102=Phone.answers(ring_ms=1000, talk_ms=60000))
        ctx.call(Call(IVR_DID, caller, "Local Member", hold_ms=4000, dtmf="1", dtmf_delay_ms=700))
        ctx.finish_calls()
        driver.ami.wait_idle(timeout=20)
        time.sleep(0.5)
        out.write_bytes(session.cut())
    finally:
        ctx.close()
        ami.checked("QueueRemove", Queue="sales", Interface="Local/102@from-agents")
        for member in ("PJSIP/102", "PJSIP/103"):
            ami.checked("QueuePause", Queue="sales", Interface=member, Paused="false")
    return _truth(
        "queue_local_member_answered",
        [
            {
                "direction": "inbound",
                "answered": True,
                "missed_at": None,
                "external": {"raw": caller},
                "line": IVR_DID,
                "initiator": None,
                "first_answered_by": "102",
                "last_handled_by": "102",
                "handlers": ["102"],
                "rang": ["102"],
                "transfers": [],
                "queue": "sales",
                "hangup_by": "external",
                "routing": None,
            }
        ],
        {"note": "sales members replaced by Local/102@from-agents (optimizable) for this call"},
    )


def record_click_to_call_agent_no_answer(driver: LabDriver, workdir: Path, out: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = ScenarioContext(driver, workdir)
    customer = "0671234569"
    try:
        session = RawAmiSession(driver.instance)
        session.list_channels()
        ctx.phones(a101=Phone.never_answers())
        driver.ami.originate(
            "PJSIP/101",
            context="from-agents",
            exten=customer,
            caller_id='"Agent 101" <101>',
            timeout_ms=4000,
        )
        session.wait_for(b"Event: OriginateResponse", timeout=20)
        driver.ami.wait_idle(timeout=20)
        time.sleep(0.5)
        out.write_bytes(session.cut())
    finally:
        ctx.close()
    return _truth(
        "click_to_call_agent_no_answer",
        [
            {
                "direction": "outbound",
                "answered": False,
                "missed_at": "agent",
                "external": {"raw": customer},
                "line": None,
                "initiator": "101",
                "first_answered_by": None,
                "last_handled_by": None,
                "handlers": [],
                "rang": [],
                "transfers": [],
                "queue": None,
                "hangup_by": "system",
                "routing": None,
            }
        ],
        {"note": "AMI Originate to PJSIP/101 (never answers, 4 s timeout): the customer is never dialed"},
    )


def record_inbound_answered_recorded(driver: LabDriver, workdir: Path, out: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = ScenarioContext(driver, workdir)
    caller = "+380501110024"
    recording = "/tmp/pbxlink-tracker-recorded.wav"
    try:
        session = RawAmiSession(driver.instance)
        session.list_channels()
        ctx.route_stub(TO_101)
        ctx.phones(a101=Phone.answers(ring_ms=500, talk_ms=60000))
        ctx.call(Call(DID, caller, "Recorded Call", hold_ms=3000))
        agent_channel = ctx.wait_bridged("101")
        driver.ami.checked("MixMonitor", Channel=agent_channel, File=recording)
        ctx.finish_calls()
        driver.ami.wait_idle(timeout=20)
        time.sleep(0.5)
        out.write_bytes(session.cut())
    finally:
        ctx.close()
    return _truth(
        "inbound_answered_recorded",
        [
            {
                "direction": "inbound",
                "answered": True,
                "missed_at": None,
                "external": {"raw": caller},
                "line": DID,
                "initiator": None,
                "first_answered_by": "101",
                "last_handled_by": "101",
                "handlers": ["101"],
                "rang": ["101"],
                "transfers": [],
                "queue": None,
                "hangup_by": "external",
                "routing": {"target": TO_101.target, "reason": TO_101.reason, "owner": TO_101.owner},
                "recordings": [recording],
            }
        ],
        {"note": "AMI MixMonitor started on 101's channel once bridged"},
    )


RECORDERS = {
    "inbound_answered_recorded": record_inbound_answered_recorded,
    "click_to_call_agent_no_answer": record_click_to_call_agent_no_answer,
    "queue_local_member_answered": record_queue_local_member_answered,
    "resync_call_up_at_connect": record_call_up_at_connect,
    "resync_call_ended_while_down": record_call_ended_while_down,
}


def record_all(driver: LabDriver, workdir: Path, out_dir: Path, only: list[str] | None = None) -> list[Path]:
    written = []
    for name, record in RECORDERS.items():
        if only and name not in only:
            continue
        path = out_dir / f"{name}.ami"
        truth = record(driver, workdir / name, path)
        (out_dir / f"{name}.truth.json").write_text(
            json.dumps(truth, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written


if __name__ == "__main__":
    from pbxlab.instance import start_asterisk, stop_asterisk

    offset = int(sys.argv[1]) if len(sys.argv) > 1 else 23
    out_dir = (
        Path(sys.argv[2]) if len(sys.argv) > 2 else (Path(__file__).resolve().parents[2] / "data" / "ami")
    )
    stop_asterisk(offset)
    instance = start_asterisk(offset)
    try:
        with LabDriver(instance) as lab_driver:
            workdir = Path("/tmp") / f"tracker-recordings-{offset}"
            for written_path in record_all(lab_driver, workdir, out_dir, sys.argv[3:] or None):
                print(written_path)
    finally:
        stop_asterisk(offset)
