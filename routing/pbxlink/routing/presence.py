"""Presence of agents, fed from AMI (pure: typed inputs, no I/O).

The AMI codec (:mod:`pbxlink.ami.decode`) decodes the presence events into typed records
(:data:`pbxlink.ami.events.PresenceEvent`: ``DeviceStateChange``, ``ContactStatus``,
``ExtensionStatus``, ``QueueMemberStatus``, ``QueueMemberRemoved``), which are the updates
`PresenceTracker.apply` takes. `PresenceDecoder` is that decoding for the router: AMI frames in,
updates (or `PresenceFrameProblem` for an unreadable one) out. At (re)connect the daemon sends
``DeviceStateList`` (and optionally ``PJSIPShowContacts``, ``ExtensionStateList``,
``QueueStatus``) and hands the answer frames to `PresenceDecoder.snapshot` +
`PresenceTracker.replace`, which drops what the snapshot's sources knew before.

Signals, worst wins: DND (custom device state ``Custom:DND<ext>`` not NOT_INUSE) > paused in
any queue > offline (device UNAVAILABLE/INVALID, every known contact unreachable, hint
unavailable) > busy (device or hint in use, busy, ringing, on hold) > available. An agent
nothing was heard about is UNKNOWN (decide() still routes to them: Dial fails fast).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pbxlink.ami.decode import AmiDecoder, FrameLike, MalformedEvent, events_decoding_into
from pbxlink.ami.events import (
    ContactState,
    ContactStatus,
    DeviceState,
    DeviceStateChange,
    ExtensionStatus,
    PresenceEvent,
    QueueMemberRemoved,
    QueueMemberStatus,
)
from pbxlink.routing.model import Availability

__all__ = [
    "PRESENCE_EVENTS",
    "ContactState",
    "ContactUpdate",
    "DeviceState",
    "DeviceStateUpdate",
    "ExtensionUpdate",
    "PresenceDecoder",
    "PresenceFrameProblem",
    "PresenceTracker",
    "PresenceUpdate",
    "QueueMemberRemoval",
    "QueueMemberUpdate",
    "agent_for_device",
]

DND_PREFIX = "Custom:DND"


# ExtensionStatus `Status` bits (include/asterisk/pbx.h, enum ast_extension_states)
EXT_INUSE = 1
EXT_BUSY = 2
EXT_UNAVAILABLE = 4
EXT_RINGING = 8
EXT_ONHOLD = 16

_BUSY_DEVICE = frozenset(
    {DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGING, DeviceState.RINGINUSE, DeviceState.ONHOLD}
)
_OFFLINE_DEVICE = frozenset({DeviceState.UNAVAILABLE, DeviceState.INVALID})
_DND_OFF = frozenset({DeviceState.NOT_INUSE, DeviceState.UNKNOWN, DeviceState.INVALID})
_CONTACT_DOWN = frozenset({ContactState.UNREACHABLE})


# The presence updates are the AMI codec's typed presence events, under the names routing uses.
DeviceStateUpdate = DeviceStateChange
ContactUpdate = ContactStatus
ExtensionUpdate = ExtensionStatus
QueueMemberUpdate = QueueMemberStatus
QueueMemberRemoval = QueueMemberRemoved
PresenceUpdate = PresenceEvent

# The AMI events presence is made of (decode only these).
PRESENCE_EVENTS = events_decoding_into(
    (DeviceStateChange, ContactStatus, ExtensionStatus, QueueMemberStatus, QueueMemberRemoved)
)


@dataclass(frozen=True, slots=True)
class PresenceFrameProblem:
    """A presence-relevant frame that could not be read (returned, not raised)."""

    event: str
    reason: str


def agent_for_device(device: str) -> str | None:
    """ "PJSIP/101" → "101"; "PJSIP/101-00000001" is a channel, not a device → None.

    Local, Queue, Custom and other pseudo devices are not agents → None.
    """
    tech, sep, resource = device.partition("/")
    if not sep or not resource or tech.upper() in {"LOCAL", "QUEUE"} or ":" in tech:
        return None
    if "/" in resource or "@" in resource:
        return None
    return resource


class PresenceTracker:
    """Per-agent availability from device states, contacts, hints, queue pauses and DND."""

    __slots__ = ("_contacts", "_devices", "_dnd", "_extensions", "_paused")

    def __init__(self) -> None:
        self._devices: dict[str, DeviceState] = {}
        self._dnd: dict[str, bool] = {}
        self._contacts: dict[str, dict[str, ContactState]] = {}
        self._extensions: dict[str, int] = {}
        self._paused: dict[str, set[str]] = {}  # agent → queues where paused

    # --- inputs -------------------------------------------------------------------------
    def device_state(self, device: str, state: DeviceState) -> None:
        if device.startswith(DND_PREFIX):
            dnd_agent = device[len(DND_PREFIX) :]
            if dnd_agent:
                self._dnd[dnd_agent] = state not in _DND_OFF
            return
        agent = agent_for_device(device)
        if agent is not None:
            self._devices[agent] = state

    def set_dnd(self, agent: str, on: bool) -> None:
        self._dnd[agent] = on

    def contact_status(self, agent: str, uri: str, state: ContactState) -> None:
        contacts = self._contacts.setdefault(agent, {})
        if state is ContactState.REMOVED:
            contacts.pop(uri, None)
            return
        contacts[uri] = state

    def extension_status(self, exten: str, status: int) -> None:
        if status < 0:  # hint deleted/removed: no information any more
            self._extensions.pop(exten, None)
        else:
            self._extensions[exten] = status

    def queue_member(self, queue: str, interface: str, paused: bool) -> None:
        agent = agent_for_device(interface)
        if agent is None:
            return
        queues = self._paused.setdefault(agent, set())
        if paused:
            queues.add(queue)
        else:
            queues.discard(queue)

    def queue_member_removed(self, queue: str, interface: str) -> None:
        agent = agent_for_device(interface)
        if agent is not None:
            self._paused.get(agent, set()).discard(queue)

    def apply(self, update: PresenceUpdate) -> None:
        match update:
            case DeviceStateUpdate(device, state):
                self.device_state(device, state)
            case ContactUpdate(agent, uri, state):
                self.contact_status(agent, uri, state)
            case ExtensionUpdate(exten, status):
                self.extension_status(exten, status)
            case QueueMemberUpdate(queue, interface, paused):
                self.queue_member(queue, interface, paused)
            case QueueMemberRemoval(queue, interface):
                self.queue_member_removed(queue, interface)

    def replace(self, snapshot: Iterable[PresenceUpdate]) -> None:
        """Apply a (re)connect snapshot: each kind of source present in it starts afresh."""
        updates = list(snapshot)
        kinds = {type(u) for u in updates}
        if DeviceStateUpdate in kinds:
            self._devices.clear()
            self._dnd.clear()
        if ContactUpdate in kinds:
            self._contacts.clear()
        if ExtensionUpdate in kinds:
            self._extensions.clear()
        if QueueMemberUpdate in kinds:
            self._paused.clear()
        for update in updates:
            self.apply(update)

    # --- output -------------------------------------------------------------------------
    def availability(self, agent: str) -> Availability:
        if self._dnd.get(agent, False):
            return Availability.DND
        if self._paused.get(agent):
            return Availability.PAUSED
        device = self._devices.get(agent)
        contacts = self._contacts.get(agent)
        hint = self._extensions.get(agent)
        if (
            device in _OFFLINE_DEVICE
            or (contacts is not None and all(s in _CONTACT_DOWN for s in contacts.values()))
            or (hint is not None and hint & EXT_UNAVAILABLE)
        ):
            return Availability.OFFLINE
        if device in _BUSY_DEVICE or (
            hint is not None and hint & (EXT_INUSE | EXT_BUSY | EXT_RINGING | EXT_ONHOLD)
        ):
            return Availability.BUSY
        if device is not None or contacts is not None or hint is not None:
            return Availability.AVAILABLE
        return Availability.UNKNOWN


# --- AMI frames → updates, through the AMI codec -------------------------------------------


class PresenceDecoder:
    """AMI frames → presence updates (the AMI codec's typed events); counts what it drops."""

    __slots__ = ("decoder",)

    def __init__(self) -> None:
        self.decoder = AmiDecoder(PRESENCE_EVENTS)

    def update(self, frame: FrameLike) -> PresenceUpdate | PresenceFrameProblem | None:
        """One AMI frame → its update, None when irrelevant, a problem when unreadable."""
        try:
            event = self.decoder.decode(frame)
        except MalformedEvent as exc:
            return PresenceFrameProblem(exc.event, exc.reason)
        assert event is None or isinstance(event, PresenceEvent)
        return event

    def snapshot(
        self, frames: Iterable[FrameLike]
    ) -> tuple[list[PresenceUpdate], list[PresenceFrameProblem]]:
        """The frames answering DeviceStateList (and friends) → updates for
        `PresenceTracker.replace`; list markers and unrelated frames are skipped, unreadable
        ones returned."""
        updates: list[PresenceUpdate] = []
        problems: list[PresenceFrameProblem] = []
        for frame in frames:
            result = self.update(frame)
            if isinstance(result, PresenceFrameProblem):
                problems.append(result)
            elif result is not None:
                updates.append(result)
        return updates, problems
