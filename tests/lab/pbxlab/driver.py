"""LabDriver: place named scenarios against one running lab instance.

For every scenario the driver checks that Asterisk is idle, starts an AMI
recorder (optional), runs the scenario (SIPp phones and callers, the FastAGI
route stub, AMI actions), waits until Asterisk has no channels left plus a
short settle time for the trailing Cdr/CEL events, stops every helper by pid,
and returns the ground truth of what it did.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pbxlab.ami_client import AmiClient, AmiError, Frame
from pbxlab.ami_recorder import AmiRecorder
from pbxlab.instance import LabInstance
from pbxlab.route_stub import RouteStub, StubRoute
from pbxlab.sipp import Call, Phone, PortBlock, Sipp, SippProcess

SETTLE_S = 1.0  # after the last channel is gone: trailing Cdr/CEL events


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    name: str
    truth: dict[str, Any]
    recording: Path | None
    duration_s: float
    problems: list[str] = field(default_factory=list)


class ScenarioContext:
    """What a scenario function gets: phones, callers, the route stub, AMI."""

    def __init__(self, driver: LabDriver, workdir: Path) -> None:
        self.driver = driver
        self.instance = driver.instance
        self.ami = driver.ami
        self.workdir = workdir
        self.sipp = Sipp(
            driver.instance.sip_port, driver.ports, workdir,
            trace_messages=driver.trace_messages,
        )
        self.events = driver.ami.subscribe()
        self.processes: list[SippProcess] = []
        self.callers: list[SippProcess] = []
        self.stub: RouteStub | None = None
        self.actions: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}

    # ---- helpers started and stopped by the driver -------------------------------
    def phones(self, **by_user: Phone) -> dict[str, SippProcess]:
        """Start UAS phones: keyword = agent extension ("a101") or "carrier"."""
        started: dict[str, SippProcess] = {}
        for key, phone in by_user.items():
            user = key.removeprefix("a")
            port = (self.instance.trunk_port if user == "carrier"
                    else self.instance.agent_ports[user])
            proc = self.sipp.phone(user, port, phone)
            self.processes.append(proc)
            started[user] = proc
        time.sleep(0.25)  # let them bind
        for user, proc in started.items():
            if not proc.alive():
                raise RuntimeError(f"SIPp phone {user} exited at start:\n{proc.errors()}")
        return started

    def route_stub(
        self, default: StubRoute | None = None, routes: dict[str, StubRoute] | None = None
    ) -> RouteStub:
        """Serve FastAGI /route on the instance's AGI port for this scenario."""
        self.stub = RouteStub(self.instance.agi_port, default, routes).start()
        return self.stub

    def call(self, call: Call, *, trace_messages: bool | None = None) -> SippProcess:
        proc = self.sipp.call(call, trace_messages=trace_messages)
        self.processes.append(proc)
        self.callers.append(proc)
        return proc

    # ---- waiting ---------------------------------------------------------------------
    def wait_event(self, match: Callable[[Frame], bool], timeout: float = 20.0) -> Frame:
        return self.ami.wait_event(match, timeout=timeout, q=self.events)

    def wait_bridged(self, agent: str, timeout: float = 20.0) -> str:
        """Wait until agent's channel enters a bridge; returns the channel name."""
        frame = self.wait_event(
            lambda f: f.get("Event") == "BridgeEnter"
            and f.get("Channel", "").startswith(f"PJSIP/{agent}-"),
            timeout,
        )
        return frame["Channel"]

    def wait_ringing(self, agent: str, timeout: float = 20.0) -> str:
        """Wait until agent's phone rings (its channel goes to state Ringing)."""
        frame = self.wait_event(
            lambda f: f.get("Event") == "Newstate"
            and f.get("Channel", "").startswith(f"PJSIP/{agent}-")
            and f.get("ChannelStateDesc") == "Ringing",
            timeout,
        )
        return frame["Channel"]

    def finish_calls(self, timeout: float = 90.0) -> list[int | None]:
        """Wait for every caller (UAC) to end; returns their exit codes."""
        deadline = time.monotonic() + timeout
        return [c.wait(max(0.1, deadline - time.monotonic())) for c in self.callers]

    def act(self, name: str, fn: Callable[[], Frame], **details: Any) -> Frame:
        """Run an AMI action and log it into the ground truth."""
        at = time.time()
        try:
            resp = fn()
            entry = {"action": name, "at": at, "response": resp.get("Response"),
                     "message": resp.get("Message"), **details}
        except AmiError as exc:
            entry = {"action": name, "at": at, "response": "Error", "message": str(exc),
                     **details}
            self.actions.append(entry)
            raise
        self.actions.append(entry)
        return resp

    def close(self) -> dict[str, Any]:
        """Stop every helper by pid; returns what they reported."""
        report: dict[str, Any] = {"sipp": []}
        for proc in self.processes:
            rc = proc.stop()
            report["sipp"].append({"label": proc.label, "exit": rc})
        if self.stub is not None:
            self.stub.stop()
            report["agi_requests"] = [
                {"caller": r.caller, "route": r.route.target, "reason": r.route.reason,
                 "owner": r.route.owner}
                for r in self.stub.requests
            ]
        self.ami.unsubscribe(self.events)
        return report


Truth = dict[str, Any]
ScenarioFn = Callable[[ScenarioContext], list[Truth]]


class LabDriver:
    """Drive one running lab instance: AMI control session + scenarios."""

    def __init__(
        self, instance: LabInstance, workdir: Path | None = None, *, trace_messages: bool = True
    ) -> None:
        self.instance = instance
        self.trace_messages = trace_messages
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"pbxlab-{instance.offset}-"))
        self.ports = PortBlock(instance.sipp_local_base, 20, instance.sipp_media_base, 200)
        self.ami = self.new_ami()

    def new_ami(self, events: str = "on") -> AmiClient:
        i = self.instance
        return AmiClient(i.host, i.ami_port, i.ami_user, i.ami_secret, events=events).connect()

    def recorder(self, path: Path) -> AmiRecorder:
        i = self.instance
        return AmiRecorder(i.host, i.ami_port, i.ami_user, i.ami_secret, path)

    def close(self) -> None:
        self.ami.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LabDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def asterisk_version(self) -> str:
        return self.ami.asterisk_version()

    def reconnect(self) -> None:
        """New control session (after an Asterisk restart)."""
        self.ami.close()
        self.ami = self.new_ami()

    def run(
        self,
        name: str,
        *,
        record_to: Path | None = None,
        truth_to: Path | None = None,
        idle_timeout: float = 60.0,
    ) -> ScenarioResult:
        """Run scenario `name`; optionally record its raw AMI session and truth."""
        from pbxlab.scenarios import SCENARIOS  # scenarios import this module

        scenario = SCENARIOS[name]
        if not self.ami.wait_idle(timeout=15):
            raise RuntimeError("Asterisk still has channels from an earlier call")
        workdir = self.workdir / name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        rec = self.recorder(record_to).start() if record_to is not None else None
        ctx = ScenarioContext(self, workdir)
        t0 = time.monotonic()
        started_at = time.time()
        problems: list[str] = []
        calls: list[Truth] = []
        try:
            calls = scenario.run(ctx)
            exits = ctx.finish_calls()
            if any(rc != 0 for rc in exits):
                problems.append(f"SIPp caller exit codes {exits} (0 expected)")
            if not self.ami.wait_idle(timeout=idle_timeout):
                problems.append("Asterisk still had channels after the scenario")
            time.sleep(SETTLE_S)
        finally:
            report = ctx.close()
            if rec is not None:
                rec.stop()
        duration = time.monotonic() - t0
        truth: Truth = {
            "schema": 1,
            "scenario": name,
            "description": scenario.description,
            "asterisk_version": self.asterisk_version(),
            "timings": {
                "agent_ring_timeout": self.instance.timings.agent_ring_timeout,
                "queue_timeout": self.instance.timings.queue_timeout,
                "queue_member_timeout": self.instance.timings.queue_member_timeout,
                "atxfer_noanswer_timeout": self.instance.timings.atxfer_noanswer_timeout,
            },
            "calls": calls,
            "driver": {
                "started_at": started_at,
                "duration_s": round(duration, 2),
                "ami_actions": ctx.actions,
                **report,
                **ctx.notes,
            },
        }
        if record_to is not None:
            truth["recording"] = record_to.name
            problems += check_recording(record_to, calls)
        truth["check_problems"] = problems
        if truth_to is not None:
            truth_to.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n",
                                encoding="utf-8")
        return ScenarioResult(name, truth, record_to, duration, problems)


def _events(path: Path) -> list[Frame]:
    from pbxlab.recording_reader import read_frames

    return [f for f in read_frames(path) if "Event" in f]


def check_recording(path: Path, calls: list[Truth]) -> list[str]:
    """Cross-check a ground truth against its recording; returns problems."""
    problems: list[str] = []
    events = _events(path)
    if not events:
        return ["the recording holds no events"]
    bridged: list[str] = []
    for e in events:
        if e.get("Event") == "BridgeEnter":
            chan = e.get("Channel", "")
            if chan.startswith("PJSIP/1") and chan[6:9].isdigit() and chan[9:10] == "-":
                bridged.append(chan[6:9])
    expected_answerers = {c["first_answered_by"] for c in calls
                          if c.get("answered") and c.get("first_answered_by")}
    for agent in sorted(expected_answerers):
        if agent not in bridged:
            problems.append(f"agent {agent} should have answered but never entered a bridge")
    never = {a for c in calls for a in c.get("rang", [])} - {
        a for c in calls for a in (c.get("handlers") or [])}
    for agent in sorted(never):
        if agent in bridged:
            problems.append(f"agent {agent} should only have rung but entered a bridge")
    lines = {c["line"] for c in calls if c.get("line")}
    seen_exten = {e.get("Exten", "") for e in events if e.get("Event") == "Newchannel"}
    for line in sorted(lines):
        if line not in seen_exten:
            problems.append(f"no channel was created for line {line}")
    n_caller_channels = sum(1 for e in events if e.get("Event") == "Newchannel"
                            and e.get("Channel", "").startswith("PJSIP/trunk-")
                            and e.get("Exten", "") in lines)
    inbound = sum(1 for c in calls if c["direction"] == "inbound")
    if inbound and n_caller_channels != inbound:
        problems.append(f"{n_caller_channels} inbound trunk channels, {inbound} expected")
    return problems

