"""ScenarioContext: what a scenario function gets from the driver.

Phones (SIPp UAS), callers (SIPp UAC), the FastAGI route stub and the AMI
control session, all started through the context so that the driver can stop
every helper by pid when the scenario ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbxlab.ami_client import AmiError, Frame
from pbxlab.route_stub import RouteStub, StubRoute
from pbxlab.sipp import Call, Phone, Sipp, SippProcess

if TYPE_CHECKING:
    from pbxlab.driver import LabDriver

Truth = dict[str, Any]


class ScenarioContext:
    """What a scenario function gets: phones, callers, the route stub, AMI."""

    def __init__(self, driver: LabDriver, workdir: Path, *, use_route_stub: bool = True) -> None:
        self.driver = driver
        self.use_route_stub = use_route_stub
        self.instance = driver.instance
        self.ami = driver.ami
        self.workdir = workdir
        self.sipp = Sipp(
            driver.instance.sip_port,
            driver.ports,
            workdir,
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
            port = self.instance.trunk_port if user == "carrier" else self.instance.agent_ports[user]
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
    ) -> RouteStub | None:
        """Serve FastAGI /route on the instance's AGI port for this scenario.

        With use_route_stub=False (a real pbxlink AGI server owns the port) the
        stub is not started and the calls are routed by whoever listens there.
        """
        if not self.use_route_stub:
            self.notes["agi"] = "external: the scenario's route stub was not started"
            return None
        try:
            self.stub = RouteStub(self.instance.agi_port, default, routes).start()
        except OSError as exc:
            raise RuntimeError(
                f"FastAGI port {self.instance.agi_port} is busy ({exc}); if a pbxlink AGI "
                "server listens there, run the scenario with route_stub=False"
            ) from exc
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
            lambda f: f.get("Event") == "BridgeEnter" and f.get("Channel", "").startswith(f"PJSIP/{agent}-"),
            timeout,
        )
        return frame["Channel"]

    def wait_ringing(self, agent: str, timeout: float = 20.0) -> str:
        """Wait until agent's phone rings (its channel goes to state Ringing)."""
        frame = self.wait_event(
            lambda f: (
                f.get("Event") == "Newstate"
                and f.get("Channel", "").startswith(f"PJSIP/{agent}-")
                and f.get("ChannelStateDesc") == "Ringing"
            ),
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
            entry = {
                "action": name,
                "at": at,
                "response": resp.get("Response"),
                "message": resp.get("Message"),
                **details,
            }
        except AmiError as exc:
            entry = {"action": name, "at": at, "response": "Error", "message": str(exc), **details}
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
                {
                    "caller": r.caller,
                    "route": r.route.target,
                    "reason": r.route.reason,
                    "owner": r.route.owner,
                }
                for r in self.stub.requests
            ]
        self.ami.unsubscribe(self.events)
        return report
