"""LabDriver: place named scenarios against one running lab instance.

For every scenario the driver checks that Asterisk is idle, starts an AMI
recorder (optional), runs the scenario (SIPp phones and callers, the FastAGI
route stub, AMI actions), waits until Asterisk has no channels left plus a
short settle time for the trailing Cdr/CEL events, stops every helper by pid,
and returns the ground truth of what it did.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pbxlab.ami_client import AmiClient, AmiError, Frame
from pbxlab.ami_recorder import AmiRecorder, PbxlinkRecorder
from pbxlab.context import ScenarioContext, Truth
from pbxlab.instance import LabInstance
from pbxlab.recording_reader import read_frames
from pbxlab.scenarios import Scenario, scenarios_for
from pbxlab.sipp import PortBlock

SETTLE_S = 1.0  # after the last channel is gone: trailing Cdr/CEL events


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    name: str
    truth: dict[str, Any]
    recording: Path | None
    duration_s: float
    problems: list[str] = field(default_factory=list)


class LabDriver:
    """Drive one running lab instance: AMI control session + scenarios."""

    def __init__(
        self,
        instance: LabInstance,
        workdir: Path | None = None,
        *,
        trace_messages: bool = True,
        recorder: str = "pbxlab",
    ) -> None:
        if recorder not in ("pbxlab", "pbxlink"):
            raise ValueError(f"recorder must be 'pbxlab' or 'pbxlink', not {recorder!r}")
        self.recorder_kind = recorder
        self.instance = instance
        self.trace_messages = trace_messages
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"pbxlab-{instance.offset}-"))
        self.ports = PortBlock(instance.sipp_local_base, 20, instance.sipp_media_base, 200)
        self.ami = self.new_ami()

    def new_ami(self, events: str = "on") -> AmiClient:
        i = self.instance
        return AmiClient(i.host, i.ami_port, i.ami_user, i.ami_secret, events=events).connect()

    def recorder(self, path: Path) -> AmiRecorder | PbxlinkRecorder:
        """The raw AMI recorder: the lab's own, or `pbxlink record` (same format)."""
        i = self.instance
        if self.recorder_kind == "pbxlink":
            log = self.workdir / f"{path.name}.record.log"
            return PbxlinkRecorder(i.host, i.ami_port, i.ami_user, i.ami_secret, path, log_path=log)
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

    def hang_up_all(self) -> None:
        """Hang up every channel (cleanup after a failed scenario)."""
        self.ami.command("channel request hangup all")

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
        route_stub: bool = True,
    ) -> ScenarioResult:
        """Run scenario `name`; optionally record its raw AMI session and truth.

        route_stub=False leaves the instance's FastAGI port to a real pbxlink
        AGI server: the truth's `routing` then states what the stub would have
        answered, and truth["driver"]["agi"] says the stub was not used.
        """
        registry = scenarios_for(self.instance.profile)
        if name not in registry:
            raise KeyError(f"no scenario {name!r} on the {self.instance.profile!r} dialplan profile")
        return self.run_scenario(
            registry[name],
            record_to=record_to,
            truth_to=truth_to,
            idle_timeout=idle_timeout,
            route_stub=route_stub,
        )

    def run_scenario(
        self,
        scenario: Scenario,
        *,
        record_to: Path | None = None,
        truth_to: Path | None = None,
        idle_timeout: float = 60.0,
        route_stub: bool = True,
    ) -> ScenarioResult:
        """Run a Scenario that need not be registered (benchmarks, ad-hoc tests)."""
        name = scenario.name
        if not self.ami.wait_idle(timeout=10):
            # a scenario that failed half-way may leave channels behind
            self.hang_up_all()
            if not self.ami.wait_idle(timeout=5):
                raise RuntimeError("Asterisk still has channels from an earlier call")
        workdir = self.workdir / name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        rec = self.recorder(record_to).start() if record_to is not None else None
        ctx = ScenarioContext(self, workdir, use_route_stub=route_stub)
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
        except BaseException:
            ctx.close()
            with contextlib.suppress(AmiError, OSError):
                self.hang_up_all()  # leave the instance idle for the next scenario
            if rec is not None:
                rec.stop()
            raise
        report = ctx.close()
        if rec is not None:
            rec.stop()
        duration = time.monotonic() - t0
        truth: Truth = {
            "schema": 1,
            "scenario": name,
            "profile": self.instance.profile,
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
            truth["recorded_by"] = (
                "pbxlink record" if self.recorder_kind == "pbxlink" else "pbxlab AmiRecorder"
            )
            problems += check_recording(record_to, calls)
        truth["check_problems"] = problems
        if truth_to is not None:
            truth_to.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return ScenarioResult(name, truth, record_to, duration, problems)


def _events(path: Path) -> list[Frame]:
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
    # an agent whose call was taken by their forward (an outside number) never enters a bridge
    expected_answerers = {
        c["first_answered_by"]
        for c in calls
        if c.get("answered")
        and c.get("first_answered_by")
        and not (c.get("handler_forwarded_to") or [None])[0]
    }
    for agent in sorted(expected_answerers):
        if agent not in bridged:
            problems.append(f"agent {agent} should have answered but never entered a bridge")
    never = {a for c in calls for a in c.get("rang", [])} - {
        a for c in calls for a in (c.get("handlers") or [])
    }
    for agent in sorted(never):
        if agent in bridged:
            problems.append(f"agent {agent} should only have rung but entered a bridge")
    lines = {c["line"] for c in calls if c.get("line")}
    seen_exten = {e.get("Exten", "") for e in events if e.get("Event") == "Newchannel"}
    for line in sorted(lines):
        if line not in seen_exten:
            problems.append(f"no channel was created for line {line}")
    n_caller_channels = sum(
        1
        for e in events
        if e.get("Event") == "Newchannel"
        and e.get("Channel", "").startswith("PJSIP/trunk-")
        and e.get("Exten", "") in lines
    )
    inbound = sum(1 for c in calls if c["direction"] == "inbound")
    if inbound and n_caller_channels != inbound:
        problems.append(f"{n_caller_channels} inbound trunk channels, {inbound} expected")
    return problems
