"""Presence: AMI frames → the AMI codec's typed presence events → per-agent availability."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxlink.ami.framing import AmiFramer, Frame
from pbxlink.routing.model import Availability
from pbxlink.routing.presence import (
    ContactState,
    ContactUpdate,
    DeviceState,
    DeviceStateUpdate,
    ExtensionUpdate,
    PresenceDecoder,
    PresenceFrameProblem,
    PresenceTracker,
    PresenceUpdate,
    QueueMemberRemoval,
    QueueMemberUpdate,
    agent_for_device,
)


def raw_frame(headers: dict[str, str]) -> Frame:
    """An AMI frame as Asterisk writes it: ``Key: value`` lines, CRLF."""
    return Frame("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode())


def frame(event: str, **headers: str) -> Frame:
    return raw_frame({"Event": event, "Privilege": "call,all", **headers})


def presence_update_from_frame(item: Frame) -> PresenceUpdate | PresenceFrameProblem | None:
    return PresenceDecoder().update(item)


@pytest.mark.parametrize(
    ("device", "agent"),
    [
        ("PJSIP/101", "101"),
        ("SIP/alice", "alice"),
        ("PJSIP/101-00000001/x", None),
        ("Local/101@agents", None),
        ("Queue:support", None),
        ("Custom:DND101", None),
        ("101", None),
    ],
)
def test_agent_for_device(device: str, agent: str | None) -> None:
    assert agent_for_device(device) == agent


@pytest.mark.parametrize(
    ("headers", "update"),
    [
        (
            frame("DeviceStateChange", Device="PJSIP/101", State="INUSE"),
            DeviceStateUpdate("PJSIP/101", DeviceState.INUSE),
        ),
        (
            frame("DeviceStateChange", Device="Custom:DND102", State="BUSY"),
            DeviceStateUpdate("Custom:DND102", DeviceState.BUSY),
        ),
        (
            frame(
                "ContactStatus",
                URI="sip:101@127.0.0.1:5071",
                ContactStatus="Unreachable",
                AOR="101",
                EndpointName="101",
                RoundtripUsec="0",
            ),
            ContactUpdate("101", "sip:101@127.0.0.1:5071", ContactState.UNREACHABLE),
        ),
        (
            frame(
                "ContactStatusDetail",
                AOR="102",
                URI="sip:102@127.0.0.1:5072",
                Status="Reachable",
                EndpointName="102",
            ),
            ContactUpdate("102", "sip:102@127.0.0.1:5072", ContactState.REACHABLE),
        ),
        (
            frame(
                "ExtensionStatus",
                Exten="101",
                Context="hints",
                Hint="PJSIP/101",
                Status="8",
                StatusText="Ringing",
            ),
            ExtensionUpdate("101", 8),
        ),
        (
            frame(
                "QueueMemberStatus",
                Queue="support",
                MemberName="Agent 101",
                Interface="PJSIP/101",
                StateInterface="PJSIP/101",
                Paused="1",
                PausedReason="lunch",
                Status="1",
            ),
            QueueMemberUpdate("support", "PJSIP/101", paused=True),
        ),
        (
            frame("QueueMemberPause", Queue="support", Interface="PJSIP/101", Paused="0"),
            QueueMemberUpdate("support", "PJSIP/101", paused=False),
        ),
        (
            frame(
                "QueueMember",
                Queue="sales",
                Name="Agent 102",
                Location="PJSIP/102",
                StateInterface="PJSIP/102",
                Paused="0",
                Status="1",
            ),
            QueueMemberUpdate("sales", "PJSIP/102", paused=False),
        ),
        (
            frame("QueueMemberRemoved", Queue="sales", Interface="PJSIP/102"),
            QueueMemberRemoval("sales", "PJSIP/102"),
        ),
    ],
)
def test_presence_frames_map_to_typed_updates(headers: Frame, update: object) -> None:
    assert presence_update_from_frame(headers) == update


@pytest.mark.parametrize(
    "headers",
    [
        frame("Newchannel", Channel="PJSIP/101-00000001"),
        frame("DeviceStateListComplete", EventList="Complete", ListItems="3"),
        raw_frame({"Response": "Success", "Message": "Device State Changes will follow"}),
    ],
)
def test_irrelevant_frames_are_ignored(headers: Frame) -> None:
    assert presence_update_from_frame(headers) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (frame("DeviceStateChange", Device="PJSIP/101"), "missing Device or State"),
        (frame("DeviceStateChange", Device="PJSIP/101", State="SLEEPY"), "unknown device state"),
        (frame("ExtensionStatus", Exten="101", Status="x"), "non-numeric Status"),
        (frame("QueueMemberStatus", Queue="support", Interface="PJSIP/101"), "Paused"),
        (frame("ContactStatus", URI="sip:x", ContactStatus="Weird", AOR="101"), "unknown contact status"),
    ],
)
def test_malformed_presence_frames_come_back_as_problems(headers: Frame, reason: str) -> None:
    result = presence_update_from_frame(headers)
    assert isinstance(result, PresenceFrameProblem)
    assert reason in result.reason
    assert result.event == headers.event


def test_event_names_and_state_values_are_read_whatever_their_case() -> None:
    assert presence_update_from_frame(
        raw_frame({"Event": "devicestatechange", "Device": "PJSIP/101", "State": "not_inuse"})
    ) == DeviceStateUpdate("PJSIP/101", DeviceState.NOT_INUSE)


def tracker_with(*frames: Frame) -> PresenceTracker:
    tracker = PresenceTracker()
    for headers in frames:
        update = presence_update_from_frame(headers)
        assert update is not None
        assert not isinstance(update, PresenceFrameProblem)
        tracker.apply(update)
    return tracker


def test_an_agent_nobody_reported_is_unknown() -> None:
    assert PresenceTracker().availability("101") is Availability.UNKNOWN


def test_device_states_decide_available_busy_offline() -> None:
    tracker = tracker_with(
        frame("DeviceStateChange", Device="PJSIP/101", State="NOT_INUSE"),
        frame("DeviceStateChange", Device="PJSIP/102", State="RINGINUSE"),
        frame("DeviceStateChange", Device="PJSIP/103", State="UNAVAILABLE"),
    )
    assert [tracker.availability(a) for a in ("101", "102", "103")] == [
        Availability.AVAILABLE,
        Availability.BUSY,
        Availability.OFFLINE,
    ]


def test_device_coming_back_makes_the_agent_available_again() -> None:
    tracker = tracker_with(
        frame("DeviceStateChange", Device="PJSIP/101", State="INUSE"),
        frame("DeviceStateChange", Device="PJSIP/101", State="NOT_INUSE"),
    )
    assert tracker.availability("101") is Availability.AVAILABLE


def test_dnd_custom_device_state_wins_over_everything_and_can_be_cleared() -> None:
    tracker = tracker_with(
        frame("DeviceStateChange", Device="PJSIP/101", State="NOT_INUSE"),
        frame("DeviceStateChange", Device="Custom:DND101", State="INUSE"),
    )
    assert tracker.availability("101") is Availability.DND
    tracker.apply(DeviceStateUpdate("Custom:DND101", DeviceState.NOT_INUSE))
    assert tracker.availability("101") is Availability.AVAILABLE


def test_paused_in_any_queue_until_unpaused_or_removed() -> None:
    tracker = tracker_with(
        frame("DeviceStateChange", Device="PJSIP/101", State="NOT_INUSE"),
        frame("QueueMemberPause", Queue="support", Interface="PJSIP/101", Paused="1"),
        frame("QueueMemberPause", Queue="sales", Interface="PJSIP/101", Paused="1"),
    )
    assert tracker.availability("101") is Availability.PAUSED
    tracker.apply(QueueMemberUpdate("support", "PJSIP/101", paused=False))
    assert tracker.availability("101") is Availability.PAUSED
    tracker.apply(QueueMemberRemoval("sales", "PJSIP/101"))
    assert tracker.availability("101") is Availability.AVAILABLE


def test_all_contacts_unreachable_is_offline_and_one_reachable_is_enough() -> None:
    tracker = tracker_with(
        frame("ContactStatus", URI="sip:a", ContactStatus="Unreachable", AOR="101", EndpointName="101"),
    )
    assert tracker.availability("101") is Availability.OFFLINE
    tracker.apply(ContactUpdate("101", "sip:b", ContactState.REACHABLE))
    assert tracker.availability("101") is Availability.AVAILABLE
    tracker.apply(ContactUpdate("101", "sip:b", ContactState.REMOVED))
    assert tracker.availability("101") is Availability.OFFLINE


def test_hint_states_busy_and_unavailable() -> None:
    tracker = tracker_with(
        frame("ExtensionStatus", Exten="101", Status="1"),
        frame("ExtensionStatus", Exten="102", Status="4"),
        frame("ExtensionStatus", Exten="103", Status="0"),
    )
    assert [tracker.availability(a) for a in ("101", "102", "103")] == [
        Availability.BUSY,
        Availability.OFFLINE,
        Availability.AVAILABLE,
    ]
    tracker.apply(ExtensionUpdate("101", -2))
    assert tracker.availability("101") is Availability.UNKNOWN


def test_reconnect_snapshot_replaces_stale_device_states() -> None:
    tracker = tracker_with(
        frame("DeviceStateChange", Device="PJSIP/101", State="INUSE"),
        frame("DeviceStateChange", Device="Custom:DND102", State="INUSE"),
        frame("QueueMemberPause", Queue="support", Interface="PJSIP/103", Paused="1"),
    )
    # answer to Action: DeviceStateList after a reconnect
    updates, problems = PresenceDecoder().snapshot(
        [
            raw_frame(
                {"Response": "Success", "EventList": "start", "Message": "Device State Changes will follow"}
            ),
            frame("DeviceStateChange", Device="PJSIP/101", State="NOT_INUSE"),
            frame("DeviceStateChange", Device="PJSIP/102", State="NOT_INUSE"),
            frame("DeviceStateChange", Device="PJSIP/103", State="NOT_INUSE"),
            frame("DeviceStateChange", Device="Custom:DND102"),
            frame("DeviceStateListComplete", EventList="Complete", ListItems="4"),
        ]
    )
    tracker.replace(updates)
    assert [p.event for p in problems] == ["DeviceStateChange"]
    assert tracker.availability("101") is Availability.AVAILABLE
    assert tracker.availability("102") is Availability.AVAILABLE  # DND gone with the snapshot
    assert tracker.availability("103") is Availability.PAUSED  # queues were not in the snapshot


# --- replays of real AMI sessions recorded on the lab's Asterisk 22 (tests/data/ami) ---------

AMI_DATA = Path(__file__).resolve().parents[2] / "data" / "ami"


def recorded_frames(name: str) -> list[Frame]:
    """The frames of a raw recorded AMI session, as the AMI framer cuts them."""
    return AmiFramer().feed((AMI_DATA / f"{name}.ami").read_bytes())


def replay(name: str) -> list[tuple[Frame, dict[str, Availability]]]:
    """Feed a recording to a tracker; after each presence frame, say what it knows of 101..103."""
    tracker = PresenceTracker()
    decoder = PresenceDecoder()
    seen: list[tuple[Frame, dict[str, Availability]]] = []
    for headers in recorded_frames(name):
        update = decoder.update(headers)
        assert not isinstance(update, PresenceFrameProblem), (headers, update)
        if update is not None:
            tracker.apply(update)
            seen.append((headers, {a: tracker.availability(a) for a in ("101", "102", "103")}))
    return seen


def test_recorded_answered_call_makes_the_agent_busy_then_available_again() -> None:
    states = [s["101"] for _, s in replay("inbound_answered")]
    assert Availability.BUSY in states
    assert states[-1] is Availability.AVAILABLE
    busy_at = states.index(Availability.BUSY)
    assert Availability.AVAILABLE in states[busy_at:]


def test_recorded_busy_agent_and_group_call_never_read_as_offline_or_paused() -> None:
    seen = replay("agent_busy_group_answers")
    assert seen, "the recording has presence frames"
    for _, states in seen:
        assert set(states.values()) <= {Availability.UNKNOWN, Availability.AVAILABLE, Availability.BUSY}
    final = seen[-1][1]
    assert final["102"] is Availability.AVAILABLE
