"""Routing live through the real lab: Asterisk 22 runs config/asterisk/pbxlink-routing.conf, SIPp
plays the caller and the agents, and OUR FastAGI server (in this process, on the port the lab
dialplan calls) decides with a real SQLite directory and presence fed from a live AMI session.

What Asterisk did is read back from AMI events (timestamps from Asterisk itself).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from pbxlab.context import ScenarioContext
from pbxlab.mosquitto import BrokerHandle
from pbxlab.scenarios_freepbx import SETTINGS_FAMILIES
from pbxlab.session import LabSession
from pbxlab.sipp import Call, Phone

from pbxlink.ami.framing import Frame as AmiFrame
from pbxlink.daemon.agi.directory_feed import DirectoryFeed
from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.daemon.agi.server import FastAgiServer
from pbxlink.daemon.agi.service import RoutingDecisions, RoutingService
from pbxlink.foundation.config import MqttSettings
from pbxlink.routing.directory import directory_topic, encode_directory_entry, parse_directory_message
from pbxlink.routing.model import (
    Availability,
    ClientOwners,
    DirectoryEntry,
    Responsible,
    RoutingPolicy,
)
from pbxlink.routing.presence import PresenceDecoder, PresenceFrameProblem, PresenceTracker
from pbxlink.wire.model import DirectoryTime

pytestmark = pytest.mark.lab

DID = "4930100200"
KNOWN = "0501230001"  # +380501230001, owned by 101 (written the national way on purpose)
OWNED_BY_OFFLINE = "0501230104"  # +380501230104, owned by 104: an endpoint with no contact
UNKNOWN = "380509990001"
Frame = dict[str, str]


def owned_by(number: str, extension: str) -> bytes:
    return encode_directory_entry(
        DirectoryEntry(
            number,
            DirectoryTime.parse("2026-11-22T10:00:00Z"),
            (
                ClientOwners(
                    "c1",
                    "Client",
                    DirectoryTime.parse("2025-01-01T00:00:00Z"),
                    (Responsible("ivan", extension),),
                ),
            ),
        )
    )


def ami_frame(headers: dict[str, str]) -> AmiFrame:
    """The lab client's header dict back as the AMI frame Asterisk sent (``Key: value`` lines)."""
    return AmiFrame("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode())


class LivePresence:
    """Presence from a live AMI session: seeded with DeviceStateList, then every event.

    This is the wiring the daemon does (AMI frame → the codec's presence events → tracker);
    frames arrive on the lab client's reader thread and are applied on the event loop.
    """

    def __init__(self, lab: LabSession, tracker: PresenceTracker, loop: asyncio.AbstractEventLoop) -> None:
        self.tracker = tracker
        self.loop = loop
        self.ami = lab.ami()
        self.events = self.ami.subscribe()
        self.problems: list[PresenceFrameProblem] = []
        self._stop = threading.Event()
        self.decoder = PresenceDecoder()
        snapshot = self.ami.list_action("DeviceStateList", "DeviceStateListComplete")
        updates, problems = self.decoder.snapshot(ami_frame(headers) for headers in snapshot)
        self.problems.extend(problems)
        loop.call_soon_threadsafe(tracker.replace, updates)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                _, frame, _ = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            update = self.decoder.update(ami_frame(frame))
            if isinstance(update, PresenceFrameProblem):
                self.problems.append(update)
            elif update is not None:
                self.loop.call_soon_threadsafe(self.tracker.apply, update)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ami.unsubscribe(self.events)
        self.ami.close()


@dataclass
class Routing:
    server: FastAgiServer
    decisions: RoutingDecisions
    presence: PresenceTracker


@asynccontextmanager
async def pbxlink_routing(
    lab: LabSession, tmp_path: Path, *, load: bool = True, deadline_ms: float = 300.0
) -> AsyncIterator[Routing]:
    """pbxlink's AGI server on the lab's AGI port, directory: KNOWN → 101, OWNED_BY_OFFLINE → 104."""
    tracker = PresenceTracker()
    presence = LivePresence(lab, tracker, asyncio.get_running_loop())
    try:
        async with DirectoryStore(tmp_path / "directory.sqlite3") as store:
            await store.apply(
                [
                    parse_directory_message(directory_topic(number), owned_by(number, agent))
                    for number, agent in (("+380501230001", "101"), ("+380501230104", "104"))
                ]
            )
            if load:
                await store.load()
            decisions = RoutingDecisions()
            service = RoutingService(store, tracker, RoutingPolicy(default_region="UA"))
            async with FastAgiServer(
                service.resolve,
                host="127.0.0.1",
                port=lab.agi_port,
                deadline_ms=deadline_ms,
                on_decision=decisions.record,
            ) as server:
                yield Routing(server, decisions, tracker)
    finally:
        presence.close()
    assert presence.problems == []


def place_call(
    lab: LabSession,
    workdir: Path,
    phones: dict[str, Phone],
    call: Call,
    before: Callable[[ScenarioContext], None] | None = None,
) -> list[Frame]:
    """Start the phones, place the call, wait until Asterisk is idle; every AMI frame seen."""
    workdir.mkdir(parents=True, exist_ok=True)
    assert lab.driver.ami.wait_idle(timeout=20), "Asterisk busy before the test"
    ctx = ScenarioContext(lab.driver, workdir)
    try:
        ctx.phones(**phones)
        if before is not None:
            before(ctx)
        ctx.call(call)
        exits = ctx.finish_calls(60)
        assert exits == [0], f"SIPp caller exit codes {exits}"
        lab.driver.ami.action("Hangup", Channel="/^PJSIP/", Cause="16")  # helper legs, if any
        assert lab.driver.ami.wait_idle(timeout=30)
    finally:
        ctx.close()
    frames: list[Frame] = []
    while True:
        try:
            frames.append(ctx.events.get_nowait()[1])
        except queue.Empty:
            return frames


async def run_call(
    lab: LabSession,
    workdir: Path,
    phones: dict[str, Phone],
    call: Call,
    before: Callable[[ScenarioContext], None] | None = None,
) -> list[Frame]:
    # the lab driver blocks; our AGI server must keep serving meanwhile
    return await asyncio.to_thread(place_call, lab, workdir, phones, call, before)


# --- reading the AMI events --------------------------------------------------------------


def caller_linkedid(frames: list[Frame], caller: str) -> str:
    for f in frames:
        if (
            f.get("Event") == "Newchannel"
            and f.get("Channel", "").startswith("PJSIP/trunk-")
            and f.get("CallerIDNum") == caller
        ):
            return f["Linkedid"]
    raise AssertionError(f"no trunk channel for caller {caller}")


def of_call(frames: list[Frame], linkedid: str) -> list[Frame]:
    return [f for f in frames if f.get("Linkedid") == linkedid]


def stamp(frame: Frame) -> float:
    return float(frame["Timestamp"])


def agent_rings(frames: list[Frame]) -> list[tuple[str, float]]:
    """(agent, time) of each agent leg reaching Ringing: the phone got the INVITE and sent 180."""
    rings = []
    for f in frames:
        channel = f.get("Channel", "")
        if (
            f.get("Event") == "Newstate"
            and f.get("ChannelStateDesc") == "Ringing"
            and channel.startswith("PJSIP/1")
        ):
            rings.append((channel.split("/")[1].split("-")[0], stamp(f)))
    return rings


def first(frames: list[Frame], **match: str) -> Frame:
    for f in frames:
        if all(f.get(k) == v for k, v in match.items()):
            return f
    raise AssertionError(f"no frame with {match}")


def bridged_agents(frames: list[Frame]) -> list[str]:
    return [
        f["Channel"].split("/")[1].split("-")[0]
        for f in frames
        if f.get("Event") == "BridgeEnter" and f.get("Channel", "").startswith("PJSIP/1")
    ]


def app_started(frames: list[Frame], app: str) -> Frame:
    return first(frames, Event="Newexten", Application=app)


def agi_status(frames: list[Frame]) -> str:
    return first(frames, Event="VarSet", Variable="AGISTATUS")["Value"]


# --- the tests ------------------------------------------------------------------------------


async def test_known_caller_rings_the_responsible_agent_first_then_the_group(
    asterisk_lab: LabSession,
    tmp_path: Path,
) -> None:
    async with pbxlink_routing(asterisk_lab, tmp_path) as routing:
        frames = await run_call(
            asterisk_lab,
            tmp_path / "sipp",
            {
                "a101": Phone.never_answers(),
                "a102": Phone.answers(ring_ms=500),
                "a103": Phone.never_answers(),
            },
            Call(DID, KNOWN, "Known Caller", hold_ms=12000),
        )
    linkedid = caller_linkedid(frames, KNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None, "the decision is kept under the call's linkedid"
    assert (decision.target, decision.reason, decision.owner, decision.caller_e164, decision.line) == (
        "PJSIP/101",
        "owner",
        "101",
        "+380501230001",
        DID,
    )
    assert agi_status(call) == "SUCCESS"
    rings = agent_rings(call)
    assert rings[0][0] == "101", f"101 must get the INVITE first: {rings}"
    group = [agent for agent, _ in rings[1:]]
    assert {"102", "103"} <= set(group)
    ring_timeout = asterisk_lab.instance.timings.agent_ring_timeout
    assert rings[1][1] - rings[0][1] >= ring_timeout - 0.5  # 101 rang its full turn first
    assert bridged_agents(call) == ["102"]


async def test_unknown_caller_goes_straight_to_the_group(
    asterisk_lab: LabSession,
    tmp_path: Path,
) -> None:
    async with pbxlink_routing(asterisk_lab, tmp_path) as routing:
        frames = await run_call(
            asterisk_lab,
            tmp_path / "sipp",
            {
                "a101": Phone.never_answers(),
                "a102": Phone.answers(ring_ms=500),
                "a103": Phone.never_answers(),
            },
            Call(DID, UNKNOWN, "Unknown Caller", hold_ms=4000),
        )
    linkedid = caller_linkedid(frames, UNKNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason) == (None, "unknown_caller")
    assert not [f for f in call if f.get("Event") == "Newexten" and f.get("Application") == "Dial"]
    queue_join = stamp(first(call, Event="QueueCallerJoin"))
    assert all(at >= queue_join for _, at in agent_rings(call)), "only the group rang"
    assert bridged_agents(call) == ["102"]


def _busy_101(ctx: ScenarioContext) -> None:
    """101 takes another call first (an originated call it answers)."""
    ctx.act(
        "originate",
        lambda: ctx.ami.checked(
            "Originate", Channel="PJSIP/101", Application="Wait", Data="20", Async="true"
        ),
    )
    ctx.wait_event(
        lambda f: (
            f.get("Event") == "Newstate"
            and f.get("Channel", "").startswith("PJSIP/101-")
            and f.get("ChannelStateDesc") == "Up"
        ),
        10,
    )


def _dnd_101(ctx: ScenarioContext) -> None:
    """101 turns DND on: the custom device state Custom:DND101 (FreePBX convention)."""
    ctx.ami.command("devstate change Custom:DND101 BUSY")
    ctx.wait_event(lambda f: f.get("Event") == "DeviceStateChange" and f.get("Device") == "Custom:DND101", 5)


@pytest.mark.parametrize(
    ("make_unavailable", "phone_101", "reason"),
    [
        # 101 answers the call that makes it busy; the group (ringinuse=no) skips it
        (_busy_101, Phone.answers(ring_ms=200, talk_ms=30000), "owner_busy"),
        # the lab's queue does not know about DND, so 101's phone is left unanswered there
        (_dnd_101, Phone.never_answers(), "owner_dnd"),
    ],
    ids=["busy", "dnd"],
)
async def test_unavailable_owner_sends_the_call_to_the_group_at_once(
    asterisk_lab: LabSession,
    tmp_path: Path,
    make_unavailable: Callable[[ScenarioContext], None],
    phone_101: Phone,
    reason: str,
) -> None:
    try:
        async with pbxlink_routing(asterisk_lab, tmp_path) as routing:
            frames = await run_call(
                asterisk_lab,
                tmp_path / "sipp",
                {"a101": phone_101, "a102": Phone.answers(ring_ms=500), "a103": Phone.never_answers()},
                Call(DID, KNOWN, "Known Caller", hold_ms=4000),
                before=make_unavailable,
            )
    finally:
        with asterisk_lab.ami() as ami:
            ami.command("devstate change Custom:DND101 NOT_INUSE")
    linkedid = caller_linkedid(frames, KNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason, decision.owner) == (None, reason, "101")
    assert not [f for f in call if f.get("Event") == "Newexten" and f.get("Application") == "Dial"]
    agi_at = stamp(app_started(call, "AGI"))
    queue_at = stamp(first(call, Event="QueueCallerJoin"))
    assert queue_at - agi_at < 1.0, "straight to the group, no ring timeout spent on 101"
    assert bridged_agents(call) == ["102"]


async def test_offline_owner_sends_the_call_to_the_group_at_once(
    asterisk_lab: LabSession,
    tmp_path: Path,
) -> None:
    """104's AOR has no contact (a phone that never registered): Asterisk 22 lists device
    PJSIP/104 as UNAVAILABLE in DeviceStateList, so presence knows it is offline before the
    call, and the caller it owns goes to the group without 104 ever being dialled."""
    async with pbxlink_routing(asterisk_lab, tmp_path) as routing:
        await asyncio.sleep(0)  # the snapshot is applied on the loop
        assert routing.presence.availability("104") is Availability.OFFLINE
        frames = await run_call(
            asterisk_lab,
            tmp_path / "sipp",
            {
                "a101": Phone.never_answers(),
                "a102": Phone.answers(ring_ms=500),
                "a103": Phone.never_answers(),
            },
            Call(DID, OWNED_BY_OFFLINE, "Owned By Offline", hold_ms=4000),
        )
    linkedid = caller_linkedid(frames, OWNED_BY_OFFLINE)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason, decision.owner, decision.caller_e164) == (
        None,
        "owner_offline",
        "104",
        "+380501230104",
    )
    assert agi_status(call) == "SUCCESS"
    assert not [f for f in call if f.get("Event") == "Newexten" and f.get("Application") == "Dial"]
    assert not [f for f in frames if f.get("Channel", "").startswith("PJSIP/104")], (
        "the offline agent is never dialled"
    )
    agi_at = stamp(app_started(call, "AGI"))
    rings = agent_rings(call)
    assert rings, "the group rang"
    assert {agent for agent, _ in rings} == {"101", "102", "103"}  # the queue's members
    assert rings[0][1] - agi_at < 1.0, "a group agent got the INVITE within 1 s of the AGI"
    assert bridged_agents(call) == ["102"]


async def test_daemon_down_the_dialplan_goes_on_within_two_seconds(
    asterisk_lab: LabSession,
    tmp_path: Path,
) -> None:
    # nothing listens on the AGI port
    frames = await run_call(
        asterisk_lab,
        tmp_path / "sipp",
        {"a101": Phone.never_answers(), "a102": Phone.answers(ring_ms=500), "a103": Phone.never_answers()},
        Call(DID, KNOWN, "Known Caller", hold_ms=4000),
    )
    call = of_call(frames, caller_linkedid(frames, KNOWN))
    assert agi_status(call) == "FAILURE"
    agi_at = stamp(app_started(call, "AGI"))
    queue_at = stamp(first(call, Event="QueueCallerJoin"))
    assert queue_at - agi_at < 2.0
    assert bridged_agents(call) == ["102"]


async def test_slow_directory_hits_the_deadline_and_falls_through(
    asterisk_lab: LabSession,
    tmp_path: Path,
) -> None:
    # the directory never finishes loading: every decision waits for it until the deadline
    async with pbxlink_routing(asterisk_lab, tmp_path, load=False, deadline_ms=400) as routing:
        frames = await run_call(
            asterisk_lab,
            tmp_path / "sipp",
            {
                "a101": Phone.never_answers(),
                "a102": Phone.answers(ring_ms=500),
                "a103": Phone.never_answers(),
            },
            Call(DID, KNOWN, "Known Caller", hold_ms=4000),
        )
    linkedid = caller_linkedid(frames, KNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason) == (None, "deadline")
    assert decision.decided_in_ms is not None
    assert 400 <= decision.decided_in_ms < 1000
    assert agi_status(call) == "SUCCESS"
    agi_at = stamp(app_started(call, "AGI"))
    queue_at = stamp(first(call, Event="QueueCallerJoin"))
    assert 0.4 <= queue_at - agi_at < 1.5
    assert bridged_agents(call) == ["102"]


async def test_owner_published_by_the_crm_side_over_mqtt_takes_the_next_call(
    asterisk_lab: LabSession,
    mosquitto_broker: BrokerHandle,
    tmp_path: Path,
) -> None:
    """The whole path: CRM side publishes a retained directory message → feed → SQLite +
    memory → the next call from that number rings its owner (103) first."""
    caller, e164 = "0501230077", "+380501230077"
    tracker = PresenceTracker()
    async with DirectoryStore(tmp_path / "directory.sqlite3") as store:
        await store.load()
        feed = DirectoryFeed(store)
        settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
        async with asyncio.TaskGroup() as tasks:
            feeding = tasks.create_task(feed.run(settings, identifier="test-directory-feed"), name="feed")
            async with aiomqtt.Client(
                mosquitto_broker.host, mosquitto_broker.port, protocol=aiomqtt.ProtocolVersion.V5
            ) as crm:
                await crm.publish(directory_topic(e164), owned_by(e164, "103"), qos=1, retain=True)
            async with asyncio.timeout(10):
                while store.lookup(e164) is None:  # noqa: ASYNC110 - state of another task
                    await asyncio.sleep(0.02)
            decisions = RoutingDecisions()
            service = RoutingService(store, tracker, RoutingPolicy(default_region="UA"))
            async with FastAgiServer(
                service.resolve, port=asterisk_lab.agi_port, on_decision=decisions.record
            ):
                frames = await run_call(
                    asterisk_lab,
                    tmp_path / "sipp",
                    {
                        "a101": Phone.never_answers(),
                        "a102": Phone.never_answers(),
                        "a103": Phone.answers(ring_ms=500),
                    },
                    Call(DID, caller, "Published Caller", hold_ms=3000),
                )
            feeding.cancel()
    call = of_call(frames, caller_linkedid(frames, caller))
    assert agent_rings(call)[0][0] == "103"
    assert bridged_agents(call) == ["103"]
    decision = decisions.get(caller_linkedid(frames, caller))
    assert decision is not None
    assert (decision.target, decision.reason) == ("PJSIP/103", "owner")


# --- FreePBX: the custom destination of config/asterisk/pbxlink-freepbx.conf ---------------------


def _freepbx_defaults(ctx: ScenarioContext) -> None:
    """No follow-me, forward or DND left in the astdb by an earlier test on the instance."""
    for family in SETTINGS_FAMILIES:
        ctx.ami.action("DBDelTree", Family=family)


async def test_on_freepbx_the_owner_rings_first_then_the_ring_group_then_voicemail(
    asterisk_lab_freepbx: LabSession,
    tmp_path: Path,
) -> None:
    """The FreePBX-style profile: the inbound route's destination is the custom destination
    pbxlink-freepbx,s,1 (extensions_custom.conf includes the shipped snippet). Nobody answers:
    the owner 101 rings alone, then ring group 600 (one Dial of 101&102&103), then the group's
    failover destination, voicemail 100."""
    lab = asterisk_lab_freepbx
    async with pbxlink_routing(lab, tmp_path) as routing:
        frames = await run_call(
            lab,
            tmp_path / "sipp",
            {"a101": Phone.never_answers(), "a102": Phone.never_answers(), "a103": Phone.never_answers()},
            Call(DID, KNOWN, "Known Caller", hold_ms=2000),
            _freepbx_defaults,
        )
    linkedid = caller_linkedid(frames, KNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason, decision.owner, decision.line) == (
        "PJSIP/101",
        "owner",
        "101",
        DID,
    )
    assert agi_status(call) == "SUCCESS"
    rings = agent_rings(call)
    assert [agent for agent, _ in rings[:1]] == ["101"], f"the owner alone first: {rings}"
    group = rings[1:]
    assert sorted(agent for agent, _ in group) == ["101", "102", "103"], rings
    ring_timeout = lab.instance.timings.agent_ring_timeout
    assert group[0][1] - rings[0][1] >= ring_timeout - 0.5  # the owner rang its full turn first
    dials = [f["AppData"] for f in call if f.get("Event") == "Newexten" and f.get("Application") == "Dial"]
    assert dials[0].startswith("PJSIP/101,"), dials
    assert dials[1].startswith("PJSIP/101&PJSIP/102&PJSIP/103,"), dials
    voicemail = app_started(call, "VoiceMail")
    assert voicemail["AppData"].startswith("100@default")
    assert stamp(voicemail) >= max(at for _, at in group)
    assert bridged_agents(call) == []


async def test_on_freepbx_an_unknown_caller_goes_straight_to_the_ring_group(
    asterisk_lab_freepbx: LabSession,
    tmp_path: Path,
) -> None:
    lab = asterisk_lab_freepbx
    async with pbxlink_routing(lab, tmp_path) as routing:
        frames = await run_call(
            lab,
            tmp_path / "sipp",
            {
                "a101": Phone.never_answers(),
                "a102": Phone.answers(ring_ms=500),
                "a103": Phone.never_answers(),
            },
            Call(DID, UNKNOWN, "Unknown Caller", hold_ms=3000),
            _freepbx_defaults,
        )
    linkedid = caller_linkedid(frames, UNKNOWN)
    call = of_call(frames, linkedid)
    decision = routing.decisions.get(linkedid)
    assert decision is not None
    assert (decision.target, decision.reason) == (None, "unknown_caller")
    dials = [f["AppData"] for f in call if f.get("Event") == "Newexten" and f.get("Application") == "Dial"]
    assert len(dials) == 1, dials
    assert dials[0].startswith("PJSIP/101&PJSIP/102&PJSIP/103,"), dials
    assert bridged_agents(call) == ["102"]
