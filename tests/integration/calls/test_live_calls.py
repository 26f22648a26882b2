"""Live end to end: calls placed by SIPp on the lab Asterisk 22, read by AmiShell, decoded and
tracked as the daemon does it (frames -> AmiDecoder -> CallTracker, Resynced -> resync, a
periodic tick with the wall clock), and the outcome checked against what the driver did.

Few and fast: one answered call, one lost in the queue, a blind transfer by SIP REFER, a
click-to-call by AMI Originate, and a call already up when the AMI session starts; on the
FreePBX-style dialplan profile: a ring group abandoned, answered by one, timed out to voicemail,
with a member on DND, a follow-me answered on the mobile, a call forward answered on an outside
number, a parked call picked up by another agent and a conference of the caller with two agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pbxlab import Call, Phone
from pbxlab.context import ScenarioContext
from pbxlab.route_stub import StubRoute
from pbxlab.session import LabSession

from pbxlink.ami.decode import AmiDecoder, MalformedEvent
from pbxlink.ami.framing import Frame
from pbxlink.calls.model import CallOutcome
from pbxlink.calls.outcome import to_json
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker, CallTrackerSettings
from pbxlink.daemon.amiclient.shell import AmiSettings, AmiShell, Resynced

TRACKER = CallTrackerSettings(
    parties=PartyRules(r"^1\d\d$", frozenset({"trunk"})), settle_seconds=1.0, default_region="UA"
)


def _ami_settings(lab: LabSession) -> AmiSettings:
    return AmiSettings(
        host=lab.host,
        port=lab.ami_port,
        username=lab.ami_user,
        secret=lab.ami_secret,
        action_timeout=5.0,
    )


@pytest.fixture
def ami_settings(asterisk_lab: LabSession) -> AmiSettings:
    return _ami_settings(asterisk_lab)


class LivePipeline:
    """The daemon's path from AMI to outcomes, minus storage and MQTT."""

    def __init__(self) -> None:
        self.decoder = AmiDecoder(TRACKED_EVENTS)
        self.tracker = CallTracker(TRACKER)
        self.outcomes: list[dict[str, Any]] = []
        self.malformed: list[str] = []

    def take(self, item: object) -> None:
        if isinstance(item, Resynced):
            listing = self.decoder.decode_snapshot(item.channels)
            self._collect(self.tracker.resync(listing, item.taken_at))
        elif isinstance(item, Frame):
            try:
                event = self.decoder.decode(item)
            except MalformedEvent as exc:
                self.malformed.append(str(exc))
                return
            if event is not None:
                self._collect(self.tracker.handle(event))

    def tick(self) -> None:
        self._collect(self.tracker.tick(time.time()))

    def _collect(self, outputs: list[Any]) -> None:
        self.outcomes += [to_json(o) for o in outputs if isinstance(o, CallOutcome)]

    async def run(self, shell: AmiShell, until: Callable[[], bool], within: float) -> None:
        """Feed the shell's items until ``until()`` holds; tick twice a second like the daemon."""
        stream = shell.frames()
        async with asyncio.timeout(within):
            while not until():
                try:
                    async with asyncio.timeout(0.5):
                        item = await anext(stream)
                except TimeoutError:
                    self.tick()
                    continue
                self.take(item)
                self.tick()


def _truth_view(outcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "direction": outcome["direction"],
        "answered": outcome["answered"],
        "missed_at": outcome["missed_at"],
        "external": outcome["external"] and outcome["external"]["raw"],
        "line": outcome["line"],
        "initiator": outcome["initiator"],
        "handlers": [h["agent"] for h in outcome["handlers"]],
        "forwarded_to": [h.get("forwarded_to") for h in outcome["handlers"]],
        "rang": sorted(outcome["rang"]),
        "transfers": [(t["kind"], t["from"], t["to"]) for t in outcome["transfers"]],
        "queue": outcome["queue"],
        "hangup_by": outcome["hangup_by"],
    }


def _truth_expectation(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "direction": call["direction"],
        "answered": call["answered"],
        "missed_at": call["missed_at"],
        "external": call["external"] and call["external"]["raw"],
        "line": call["line"],
        "initiator": call["initiator"],
        "handlers": call["handlers"],
        "forwarded_to": call.get("handler_forwarded_to", [None] * len(call["handlers"])),
        "rang": sorted(call["rang"]),
        "transfers": [(t["kind"], t["from"], t["to"]) for t in call["transfers"]],
        "queue": call["queue"],
        "hangup_by": call["hangup_by"],
    }


async def _live_outcomes_match_the_truth(lab: LabSession, scenario: str) -> None:
    pipeline = LivePipeline()
    async with AmiShell(_ami_settings(lab)) as shell:
        await pipeline.run(shell, lambda: pipeline.tracker.clock > 0, within=10)  # logged in
        async with asyncio.TaskGroup() as tasks:
            placing = tasks.create_task(asyncio.to_thread(lab.run, scenario), name="sipp")
            await pipeline.run(shell, lambda: bool(pipeline.outcomes) and placing.done(), within=90)
        result = placing.result()
    assert result.problems == []
    assert pipeline.malformed == []
    calls = result.truth["calls"]
    assert [_truth_view(o) for o in pipeline.outcomes] == [_truth_expectation(c) for c in calls]
    assert all(o["reconstructed"] is False for o in pipeline.outcomes)


@pytest.mark.parametrize(
    "scenario",
    ["inbound_answered", "queue_abandoned", "blind_transfer_refer", "click_to_call"],
)
async def test_a_live_call_gets_the_outcome_the_driver_caused(
    asterisk_lab: LabSession, scenario: str
) -> None:
    await _live_outcomes_match_the_truth(asterisk_lab, scenario)


@pytest.mark.parametrize(
    "scenario",
    [
        "fpbx_ring_group_abandoned",
        "fpbx_ring_group_answered_by_one",
        "fpbx_ring_group_timeout_voicemail",
        "fpbx_ring_group_member_dnd",
        "fpbx_followme_answered_on_mobile",
        "fpbx_cf_unconditional_external_answered",
        "fpbx_park_picked_up_by_another",
        "fpbx_conference_caller_and_two_agents",
    ],
)
async def test_a_live_call_on_a_freepbx_dialplan_gets_the_outcome_the_driver_caused(
    asterisk_lab_freepbx: LabSession, scenario: str
) -> None:
    """Ring groups (one Dial with &), follow-me and call forward answered on the mobile, on the
    FreePBX-style dialplan profile: the same pipeline, no setting that knows the dialplan."""
    await _live_outcomes_match_the_truth(asterisk_lab_freepbx, scenario)


async def test_a_call_already_up_when_the_session_starts_gets_one_reconstructed_outcome(
    asterisk_lab: LabSession, ami_settings: AmiSettings, tmp_path: Path
) -> None:
    assert asterisk_lab.driver.ami.wait_idle(timeout=15), "channels left from an earlier test"
    ctx = ScenarioContext(asterisk_lab.driver, tmp_path)
    caller = "+380501110031"
    try:
        ctx.route_stub(StubRoute("PJSIP/101", "owner", "101"))
        ctx.phones(a101=Phone.answers(ring_ms=500, talk_ms=60000))
        ctx.call(Call("4930100200", caller, "Live Resync", hold_ms=4000))
        await asyncio.to_thread(ctx.wait_bridged, "101")
        pipeline = LivePipeline()
        async with AmiShell(ami_settings) as shell:
            await pipeline.run(shell, lambda: bool(pipeline.outcomes), within=30)
    finally:
        ctx.finish_calls(timeout=30)
        ctx.close()
    [outcome] = pipeline.outcomes
    assert outcome["reconstructed"] is True
    assert outcome["answered"] is True
    assert outcome["direction"] == "inbound"
    assert outcome["external"]["raw"] == caller
    assert [h["agent"] for h in outcome["handlers"]] == ["101"]
    assert outcome["hangup_by"] == "external"  # the end was seen live
