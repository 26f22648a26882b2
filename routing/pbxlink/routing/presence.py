"""Presence of agents, fed from AMI (pure: plain typed inputs, no I/O).

The daemon turns AMI frames into `PresenceUpdate`s with `presence_update_from_frame` (a pure
function over header dicts) and applies them with `PresenceTracker.apply`. At (re)connect it
sends ``DeviceStateList`` (and optionally ``PJSIPShowContacts``, ``ExtensionStateList``,
``QueueStatus``) and hands the answer frames to `presence_snapshot_from_frames` +
`PresenceTracker.replace`, which drops what the snapshot's sources knew before.

Signals, worst wins: DND (custom device state ``Custom:DND<ext>`` not NOT_INUSE) > paused in
any queue > offline (device UNAVAILABLE/INVALID, every known contact unreachable, hint
unavailable) > busy (device or hint in use, busy, ringing, on hold) > available. An agent
nothing was heard about is UNKNOWN (decide() still routes to them: Dial fails fast).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pbxlink.routing.model import Availability

__all__ = [
    "ContactState",
    "ContactUpdate",
    "DeviceState",
    "DeviceStateUpdate",
    "ExtensionUpdate",
    "PresenceFrameProblem",
    "PresenceTracker",
    "PresenceUpdate",
    "QueueMemberRemoval",
    "QueueMemberUpdate",
    "agent_for_device",
    "presence_snapshot_from_frames",
    "presence_update_from_frame",
]

DND_PREFIX = "Custom:DND"


class DeviceState(StrEnum):
    """Asterisk device states (`main/devicestate.c`, as AMI spells them)."""

    UNKNOWN = "UNKNOWN"
    NOT_INUSE = "NOT_INUSE"
    INUSE = "INUSE"
    BUSY = "BUSY"
    INVALID = "INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    RINGING = "RINGING"
    RINGINUSE = "RINGINUSE"
    ONHOLD = "ONHOLD"


class ContactState(StrEnum):
    """PJSIP contact status (`ContactStatus` event / `ContactStatusDetail` Status)."""

    CREATED = "Created"
    REACHABLE = "Reachable"
    UNREACHABLE = "Unreachable"
    REMOVED = "Removed"
    UPDATED = "Updated"
    NONQUALIFIED = "NonQualified"
    UNKNOWN = "Unknown"


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
_CONTACT_STATES = {s.value.lower(): s for s in ContactState}


@dataclass(frozen=True, slots=True)
class DeviceStateUpdate:
    device: str  # "PJSIP/101", "Custom:DND101"
    state: DeviceState


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    agent: str  # endpoint (or AOR) name
    uri: str
    state: ContactState


@dataclass(frozen=True, slots=True)
class ExtensionUpdate:
    exten: str
    status: int  # ast_extension_states bitmask; -1 deleted, -2 removed


@dataclass(frozen=True, slots=True)
class QueueMemberUpdate:
    queue: str
    interface: str  # "PJSIP/101"
    paused: bool


@dataclass(frozen=True, slots=True)
class QueueMemberRemoval:
    queue: str
    interface: str


PresenceUpdate = DeviceStateUpdate | ContactUpdate | ExtensionUpdate | QueueMemberUpdate | QueueMemberRemoval


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


# --- AMI frames → updates (pure functions over header dicts) ---------------------------


def _header(frame: Mapping[str, str], name: str) -> str | None:
    value = frame.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in frame.items():
            if key.lower() == lowered:
                return candidate
    return value


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in {"1", "yes", "true", "on"}:
        return True
    if lowered in {"0", "no", "false", "off"}:
        return False
    return None


_QUEUE_MEMBER_EVENTS = frozenset({"queuememberstatus", "queuememberpause", "queuememberadded", "queuemember"})


def presence_update_from_frame(
    frame: Mapping[str, str],
) -> PresenceUpdate | PresenceFrameProblem | None:
    """One AMI event frame → a presence update, None when irrelevant, a problem when unreadable.

    Handles DeviceStateChange, ContactStatus, ContactStatusDetail, ExtensionStatus,
    QueueMemberStatus, QueueMemberPause, QueueMemberAdded, QueueMember (QueueStatus answer) and
    QueueMemberRemoved.
    """
    event = _header(frame, "Event")
    if event is None:
        return None
    kind = event.lower()
    if kind == "devicestatechange":
        device, state = _header(frame, "Device"), _header(frame, "State")
        if not device or state is None:
            return PresenceFrameProblem(event, "missing Device or State")
        try:
            return DeviceStateUpdate(device, DeviceState(state.strip().upper()))
        except ValueError:
            return PresenceFrameProblem(event, f"unknown device state {state!r}")
    if kind in {"contactstatus", "contactstatusdetail"}:
        agent = _header(frame, "EndpointName") or _header(frame, "AOR")
        uri = _header(frame, "URI")
        raw = _header(frame, "ContactStatus") if kind == "contactstatus" else None
        raw = raw or _header(frame, "Status")
        if not agent or not uri or raw is None:
            return PresenceFrameProblem(event, "missing AOR/EndpointName, URI or status")
        state = _CONTACT_STATES.get(raw.strip().lower())
        if state is None:
            return PresenceFrameProblem(event, f"unknown contact status {raw!r}")
        return ContactUpdate(agent, uri, state)
    if kind == "extensionstatus":
        exten, status = _header(frame, "Exten"), _header(frame, "Status")
        if not exten or status is None:
            return PresenceFrameProblem(event, "missing Exten or Status")
        try:
            return ExtensionUpdate(exten, int(status.strip()))
        except ValueError:
            return PresenceFrameProblem(event, f"non-numeric Status {status!r}")
    if kind in _QUEUE_MEMBER_EVENTS or kind == "queuememberremoved":
        queue = _header(frame, "Queue")
        interface = (
            _header(frame, "StateInterface") or _header(frame, "Interface") or _header(frame, "Location")
        )
        if not queue or not interface:
            return PresenceFrameProblem(event, "missing Queue or Interface")
        if kind == "queuememberremoved":
            return QueueMemberRemoval(queue, interface)
        paused = _flag(_header(frame, "Paused"))
        if paused is None:
            return PresenceFrameProblem(event, "missing or unreadable Paused")
        return QueueMemberUpdate(queue, interface, paused)
    return None


def presence_snapshot_from_frames(
    frames: Iterable[Mapping[str, str]],
) -> tuple[list[PresenceUpdate], list[PresenceFrameProblem]]:
    """The frames answering DeviceStateList (and friends) → updates for `PresenceTracker.replace`.

    List-complete markers and unrelated frames are skipped; unreadable ones are returned.
    """
    updates: list[PresenceUpdate] = []
    problems: list[PresenceFrameProblem] = []
    for frame in frames:
        result = presence_update_from_frame(frame)
        if isinstance(result, PresenceFrameProblem):
            problems.append(result)
        elif result is not None:
            updates.append(result)
    return updates, problems
