"""Typed AMI events: what the call tracker sees instead of header dictionaries.

:mod:`pbxlink.ami.decode` turns raw AMI frames into these records once, at the edge.
Every record is a frozen, slotted dataclass; ``time`` is the AMI ``Timestamp`` header (epoch
seconds, float) or ``None`` when Asterisk sent none (list items of an action response).
Caller-ID strings are already unescaped, and Asterisk's ``<unknown>`` placeholder is ``None``.

Only the events and fields the tracker needs are modelled; the decoder drops (and counts) the
rest. Names follow Asterisk's where they exist (``DialBegin`` → :class:`DialBegin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum


class ChannelState(IntEnum):
    """``ChannelState`` numbers (``include/asterisk/channelstate.h``)."""

    DOWN = 0
    RESERVED = 1
    OFFHOOK = 2
    DIALING = 3
    RING = 4
    RINGING = 5
    UP = 6
    BUSY = 7
    DIALING_OFFHOOK = 8
    PRERING = 9
    UNKNOWN = 10


class DialStatus(Enum):
    """``DialEnd`` ``DialStatus``; anything Asterisk adds later decodes as ``OTHER``."""

    ANSWER = "ANSWER"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    CANCEL = "CANCEL"
    CONGESTION = "CONGESTION"
    CHANUNAVAIL = "CHANUNAVAIL"
    ABORT = "ABORT"
    CONTINUE = "CONTINUE"
    GOTO = "GOTO"
    TIMEDOUT = "TIMEDOUT"
    OTHER = "OTHER"


class TransferResult(Enum):
    SUCCESS = "Success"
    FAIL = "Fail"
    INVALID = "Invalid"
    NOT_PERMITTED = "Not Permitted"
    OTHER = "Other"


class AttendedDestType(Enum):
    """How an attended transfer joined the parties (``DestType``)."""

    BRIDGE = "Bridge"
    APP = "App"
    LINK = "Link"
    THREEWAY = "Threeway"
    FAIL = "Fail"
    OTHER = "Other"


class TrackedVariable(Enum):
    """Channel variables whose ``VarSet`` the tracker reads; every other ``VarSet`` is dropped."""

    INBOUND_DID = "INBOUND_DID"
    MIXMONITOR_FILENAME = "MIXMONITOR_FILENAME"
    AGISTATUS = "AGISTATUS"
    PBXLINK_ROUTE = "PBXLINK_ROUTE"
    PBXLINK_ROUTE_REASON = "PBXLINK_ROUTE_REASON"
    PBXLINK_ROUTE_OWNER = "PBXLINK_ROUTE_OWNER"
    PBXLINK_ROUTE_AGENT = "PBXLINK_ROUTE_AGENT"
    PBXLINK_ROUTE_RULE = "PBXLINK_ROUTE_RULE"
    PBXLINK_ROUTE_MS = "PBXLINK_ROUTE_MS"


@dataclass(frozen=True, slots=True)
class Channel:
    """The channel snapshot every channel event carries (possibly under a prefix).

    Only the fields pbxlink uses are decoded; the connected line is on
    :class:`NewConnectedLine` only."""

    name: str
    uniqueid: str
    linkedid: str
    state: ChannelState
    caller_num: str | None
    caller_name: str | None
    context: str
    exten: str


@dataclass(frozen=True, slots=True)
class Bridge:
    uniqueid: str
    type: str  # "basic", "holding", …
    technology: str  # "simple_bridge", "native_rtp", "holding_bridge", "softmix", …

    @property
    def holding(self) -> bool:
        """A holding bridge (parking, hold music) never means two parties talk."""
        return self.type == "holding" or self.technology == "holding_bridge"


@dataclass(frozen=True, slots=True)
class Newchannel:
    time: float | None
    channel: Channel


@dataclass(frozen=True, slots=True)
class Newstate:
    time: float | None
    channel: Channel


@dataclass(frozen=True, slots=True)
class NewCallerid:
    time: float | None
    channel: Channel


@dataclass(frozen=True, slots=True)
class NewConnectedLine:
    time: float | None
    channel: Channel
    connected_num: str | None
    connected_name: str | None


@dataclass(frozen=True, slots=True)
class Newexten:
    """Only decoded for the applications the tracker follows (see ``decode.TRACKED_APPS``)."""

    time: float | None
    channel: Channel
    application: str
    app_data: str


@dataclass(frozen=True, slots=True)
class VarSet:
    time: float | None
    uniqueid: str
    linkedid: str
    variable: TrackedVariable
    value: str


@dataclass(frozen=True, slots=True)
class DialBegin:
    time: float | None
    caller: Channel | None  # None when the dialing side is an Originate
    dest: Channel
    dial_string: str


@dataclass(frozen=True, slots=True)
class DialEnd:
    time: float | None
    caller: Channel | None
    dest: Channel
    status: DialStatus


@dataclass(frozen=True, slots=True)
class BridgeCreate:
    time: float | None
    bridge: Bridge


@dataclass(frozen=True, slots=True)
class BridgeEnter:
    time: float | None
    bridge: Bridge
    channel: Channel
    swap_uniqueid: str | None


@dataclass(frozen=True, slots=True)
class BridgeLeave:
    time: float | None
    bridge: Bridge
    channel: Channel


@dataclass(frozen=True, slots=True)
class BridgeDestroy:
    time: float | None
    bridge: Bridge


@dataclass(frozen=True, slots=True)
class BlindTransfer:
    time: float | None
    result: TransferResult
    transferer: Channel | None
    transferee: Channel | None
    context: str
    extension: str
    is_external: bool


@dataclass(frozen=True, slots=True)
class AttendedTransfer:
    time: float | None
    result: TransferResult
    dest_type: AttendedDestType
    orig_transferer: Channel | None
    second_transferer: Channel | None
    transferee: Channel | None
    transfer_target: Channel | None
    local_one: Channel | None  # DestType Link
    local_two: Channel | None
    dest_bridge: str | None


@dataclass(frozen=True, slots=True)
class LocalBridge:
    time: float | None
    local_one: Channel
    local_two: Channel
    context: str
    exten: str
    optimization: bool


@dataclass(frozen=True, slots=True)
class LocalOptimizationBegin:
    time: float | None
    local_one: Channel
    local_two: Channel
    source: Channel | None
    dest_bridge: str | None


@dataclass(frozen=True, slots=True)
class LocalOptimizationEnd:
    time: float | None
    local_one: Channel
    local_two: Channel
    success: bool


@dataclass(frozen=True, slots=True)
class QueueCallerJoin:
    time: float | None
    channel: Channel
    queue: str
    position: int


@dataclass(frozen=True, slots=True)
class QueueCallerLeave:
    time: float | None
    channel: Channel
    queue: str


@dataclass(frozen=True, slots=True)
class QueueCallerAbandon:
    time: float | None
    channel: Channel
    queue: str
    hold_seconds: float


@dataclass(frozen=True, slots=True)
class AgentCalled:
    time: float | None
    channel: Channel | None  # the waiting caller
    member: Channel | None  # the member's channel (PJSIP/… or Local/…;1)
    queue: str
    member_name: str
    interface: str


@dataclass(frozen=True, slots=True)
class AgentConnect:
    time: float | None
    channel: Channel | None
    member: Channel | None
    queue: str
    member_name: str
    interface: str
    hold_seconds: float


@dataclass(frozen=True, slots=True)
class AgentComplete:
    time: float | None
    channel: Channel | None
    member: Channel | None
    queue: str
    member_name: str
    interface: str
    reason: str  # caller | agent | transfer


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer:
    time: float | None
    channel: Channel | None
    member: Channel | None
    queue: str
    member_name: str
    interface: str


@dataclass(frozen=True, slots=True)
class Pickup:
    time: float | None
    picker: Channel  # the channel that picked up (Channel*)
    target: Channel  # the ringing channel it took over (Target*)


@dataclass(frozen=True, slots=True)
class Hangup:
    time: float | None
    channel: Channel
    cause: int


@dataclass(frozen=True, slots=True)
class HangupRequest:
    """``HangupRequest`` (``soft=False``: the peer hung up) or ``SoftHangupRequest``."""

    time: float | None
    channel: Channel
    soft: bool
    cause: int | None


@dataclass(frozen=True, slots=True)
class MixMonitorStart:
    time: float | None
    channel: Channel


@dataclass(frozen=True, slots=True)
class OriginateResponse:
    time: float | None
    success: bool
    action_id: str | None
    channel: str  # the dial string, e.g. "PJSIP/101"
    context: str
    exten: str
    uniqueid: str | None
    reason: int | None


@dataclass(frozen=True, slots=True)
class CoreShowChannel:
    """One live channel listed by the ``CoreShowChannels`` action (the resync snapshot)."""

    time: float | None
    channel: Channel
    bridge_id: str | None
    application: str
    app_data: str
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class CoreShowChannelsComplete:
    """End of a ``CoreShowChannels`` listing: the snapshot is complete."""

    time: float | None
    listed: int


@dataclass(frozen=True, slots=True)
class FullyBooted:
    """Asterisk is up, sent right after a login: a new AMI session started."""

    time: float | None


@dataclass(frozen=True, slots=True)
class SuccessfulAuth:
    """An AMI login succeeded (security class). After a (re)login the ``FullyBooted`` and the
    ``CoreShowChannels`` listing carry no ``Timestamp``; this event's time dates them."""

    time: float | None


class CelEventType(Enum):
    """A CEL record's ``EventName`` (``eventtype``); anything Asterisk adds later is ``OTHER``."""

    CHAN_START = "CHAN_START"
    CHAN_END = "CHAN_END"
    ANSWER = "ANSWER"
    HANGUP = "HANGUP"
    APP_START = "APP_START"
    APP_END = "APP_END"
    PARK_START = "PARK_START"
    PARK_END = "PARK_END"
    BRIDGE_ENTER = "BRIDGE_ENTER"
    BRIDGE_EXIT = "BRIDGE_EXIT"
    BLINDTRANSFER = "BLINDTRANSFER"
    ATTENDEDTRANSFER = "ATTENDEDTRANSFER"
    PICKUP = "PICKUP"
    FORWARD = "FORWARD"
    LINKEDID_END = "LINKEDID_END"
    LOCAL_OPTIMIZE = "LOCAL_OPTIMIZE"
    LOCAL_OPTIMIZE_BEGIN = "LOCAL_OPTIMIZE_BEGIN"
    USER_DEFINED = "USER_DEFINED"
    STREAM_BEGIN = "STREAM_BEGIN"
    STREAM_END = "STREAM_END"
    DTMF = "DTMF"
    OTHER = "OTHER"


@dataclass(frozen=True, slots=True)
class Cel:
    """One Channel Event Logging record: an AMI ``CEL`` event, or a row of a CEL backend
    (cel_sqlite3_custom, cel_custom) read back after a gap.

    ``time`` is the AMI ``Timestamp`` for a live event and the record's ``eventtime`` for a
    backend row. ``extra`` is Asterisk's JSON text (``{"hangupcause":16,…}``), kept raw:
    only the CEL conversion (:mod:`pbxlink.ami.cel`) reads it."""

    time: float | None
    type: CelEventType
    channel: str
    uniqueid: str
    linkedid: str
    caller_num: str | None
    caller_name: str | None
    context: str
    exten: str
    application: str
    app_data: str
    peer: str
    extra: str


# --- presence (for routing): device states, PJSIP contacts, hints, queue members ---------------


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


@dataclass(frozen=True, slots=True)
class DeviceStateChange:
    """``DeviceStateChange`` (also the items of a ``DeviceStateList`` answer)."""

    device: str  # "PJSIP/101", "Custom:DND101"
    state: DeviceState
    time: float | None = None


@dataclass(frozen=True, slots=True)
class ContactStatus:
    """``ContactStatus`` / ``ContactStatusDetail`` (``PJSIPShowContacts`` answer)."""

    agent: str  # endpoint (or AOR) name
    uri: str
    state: ContactState
    time: float | None = None


@dataclass(frozen=True, slots=True)
class ExtensionStatus:
    """``ExtensionStatus``: a hint's state bits (``ast_extension_states``; -1 deleted, -2 removed)."""

    exten: str
    status: int
    time: float | None = None


@dataclass(frozen=True, slots=True)
class QueueMemberStatus:
    """``QueueMemberStatus``, ``QueueMemberPause``, ``QueueMemberAdded`` and the ``QueueMember``
    items of a ``QueueStatus`` answer: whether a member is paused in a queue."""

    queue: str
    interface: str  # "PJSIP/101"
    paused: bool
    time: float | None = None


@dataclass(frozen=True, slots=True)
class QueueMemberRemoved:
    queue: str
    interface: str
    time: float | None = None


PresenceEvent = DeviceStateChange | ContactStatus | ExtensionStatus | QueueMemberStatus | QueueMemberRemoved


AmiEvent = (
    Newchannel
    | Newstate
    | NewCallerid
    | NewConnectedLine
    | Newexten
    | VarSet
    | DialBegin
    | DialEnd
    | BridgeCreate
    | BridgeEnter
    | BridgeLeave
    | BridgeDestroy
    | BlindTransfer
    | AttendedTransfer
    | LocalBridge
    | LocalOptimizationBegin
    | LocalOptimizationEnd
    | QueueCallerJoin
    | QueueCallerLeave
    | QueueCallerAbandon
    | AgentCalled
    | AgentConnect
    | AgentComplete
    | AgentRingNoAnswer
    | Pickup
    | Hangup
    | HangupRequest
    | MixMonitorStart
    | OriginateResponse
    | CoreShowChannel
    | CoreShowChannelsComplete
    | FullyBooted
    | SuccessfulAuth
    | Cel
    | DeviceStateChange
    | ContactStatus
    | ExtensionStatus
    | QueueMemberStatus
    | QueueMemberRemoved
)
