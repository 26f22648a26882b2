"""Decode raw AMI frames into typed events, once, at the edge.

:class:`AmiDecoder` maps an :class:`~pbxlink.ami.framing.Frame` to one of the records in
:mod:`pbxlink.ami.events`, or to ``None`` for frames the tracker does not use (action
responses, ``TestEvent``, ``Cdr``, ``RTCP*``, most ``VarSet`` and ``Newexten``, ``CEL`` records
of a type not asked for …).
Dropped frames are counted by event name in :attr:`AmiDecoder.ignored`.

The hot path stays cheap: the event name comes from the frame without parsing its headers,
and ``VarSet``/``Newexten`` frames are checked for the one header that matters by a byte search
of the raw frame before anything else is parsed. A frame that claims to be an event the tracker
uses but lacks a required header raises :class:`MalformedEvent` (one error type, carrying the
event name and the reason); the caller logs it and carries on with the next frame.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from pbxlink.ami import events as ami_events
from pbxlink.ami.events import (
    AgentCalled,
    AgentComplete,
    AgentConnect,
    AgentRingNoAnswer,
    AmiEvent,
    AttendedDestType,
    AttendedTransfer,
    BlindTransfer,
    Bridge,
    BridgeCreate,
    BridgeDestroy,
    BridgeEnter,
    BridgeLeave,
    Cel,
    CelEventType,
    Channel,
    ChannelState,
    ContactState,
    ContactStatus,
    CoreShowChannel,
    CoreShowChannelsComplete,
    DeviceState,
    DeviceStateChange,
    DialBegin,
    DialEnd,
    DialStatus,
    ExtensionStatus,
    FullyBooted,
    Hangup,
    HangupRequest,
    LocalBridge,
    LocalOptimizationBegin,
    LocalOptimizationEnd,
    MixMonitorStart,
    NewCallerid,
    Newchannel,
    NewConnectedLine,
    Newexten,
    Newstate,
    OriginateResponse,
    Pickup,
    QueueCallerAbandon,
    QueueCallerJoin,
    QueueCallerLeave,
    QueueMemberRemoved,
    QueueMemberStatus,
    SuccessfulAuth,
    TrackedVariable,
    TransferResult,
    VarSet,
)


class FrameLike(Protocol):
    """What the decoder needs from a framed AMI message (``framing.Frame`` provides it)."""

    @property
    def raw(self) -> bytes: ...

    @property
    def event(self) -> str | None: ...


class MalformedEvent(ValueError):
    """An event the tracker needs arrived without a header it cannot do without."""

    def __init__(self, event: str, reason: str) -> None:
        super().__init__(f"malformed AMI {event} event: {reason}")
        self.event = event
        self.reason = reason


# Applications whose Newexten the tracker follows (lower case).
TRACKED_APPS = frozenset({"voicemail"})

_TRACKED_VARIABLES = {v.value: v for v in TrackedVariable}
# as published: NAME, or _NAME / __NAME when set for inheritance
_TRACKED_VARIABLE_BYTES = {
    under + v.value.encode(): v for v in TrackedVariable for under in (b"", b"_", b"__")
}
_TRACKED_APP_BYTES = frozenset(app.encode() for app in TRACKED_APPS)
_VARIABLE_MARK = b"\nVariable: "
_CEL_TYPE_MARK = b"\nEventName: "
_CEL_TYPES = {t.value: t for t in CelEventType}
_APPLICATION_MARK = b"\nApplication: "
_FIRST_PRIORITY = re.compile(rb"\nPriority: 1\r?(?:\n|$)")
_UNKNOWN = "<unknown>"
_MARKS: dict[str, bytes] = {}


class _Fields:
    """Header lookup straight in the frame's bytes, by Asterisk's spelling of the key.

    Only the few headers an event needs are read (a byte search each), instead of splitting
    the whole frame: most frames carry 20-40 headers of which the tracker uses a handful.
    Keys are matched case-sensitively as Asterisk writes them (``Uniqueid``, ``DestUniqueid``,
    ``DestUniqueId`` …); the first occurrence wins.
    """

    __slots__ = ("_event", "_raw")

    def __init__(self, event: str, frame: FrameLike) -> None:
        self._event = event
        self._raw = frame.raw

    def opt(self, key: str) -> str | None:
        mark = _MARKS.get(key)
        if mark is None:
            mark = _MARKS[key] = b"\n" + key.encode() + b": "
        raw = self._raw
        start = raw.find(mark)
        if start < 0:
            return None
        start += len(mark)
        end = raw.find(b"\n", start)
        if end < 0:
            end = len(raw)
        if raw[end - 1 : end] == b"\r":
            end -= 1
        return raw[start:end].decode("utf-8", "replace")

    def text(self, key: str, default: str = "") -> str:
        value = self.opt(key)
        return default if value is None else value

    def req(self, key: str) -> str:
        value = self.opt(key)
        if value is None:
            raise MalformedEvent(self._event, f"no {key!r} header")
        return value

    def time(self) -> float | None:
        stamp = self.opt("Timestamp")
        if stamp is None:
            return None
        try:
            return float(stamp)
        except ValueError:
            raise MalformedEvent(self._event, f"bad Timestamp {stamp!r}") from None

    def number(self, key: str) -> float:
        value = self.opt(key)
        if value is None or value == "":
            return 0.0
        try:
            return float(value)
        except ValueError:
            raise MalformedEvent(self._event, f"bad number in {key!r}: {value!r}") from None

    def integer(self, key: str) -> int | None:
        value = self.opt(key)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise MalformedEvent(self._event, f"bad integer in {key!r}: {value!r}") from None

    def channel(self, prefix: str = "") -> Channel:
        snapshot = self.channel_opt(prefix)
        if snapshot is None:
            raise MalformedEvent(self._event, f"no {prefix}Uniqueid/{prefix}Channel headers")
        return snapshot

    def channel_opt(self, prefix: str = "") -> Channel | None:
        """The snapshot under ``prefix`` (``Dest``, ``Transferee`` …).

        Asterisk writes a snapshot's headers as one block in a fixed order, so one regular
        expression reads it; a block in another shape is read header by header instead.
        """
        shape = _SNAPSHOTS.get(prefix)
        if shape is None:
            shape = _SNAPSHOTS[prefix] = _snapshot_shape(prefix)
        block, marks = shape
        raw = self._raw
        values: list[str | None]
        match = block.search(raw)
        if match is not None:
            values = [v.decode("utf-8", "replace") for v in match.groups()]
        else:
            values = self._snapshot_by_header(marks)
        name, state_text, num, caller_name, context, exten, uniqueid, linkedid = values
        if uniqueid is None or name is None:
            return None
        try:
            state = ChannelState(int(state_text or "10"))
        except ValueError:
            state = ChannelState.UNKNOWN
        return Channel(
            name=name,
            uniqueid=uniqueid,
            linkedid=linkedid or uniqueid,
            state=state,
            caller_num=_caller_text(num),
            caller_name=_caller_text(caller_name),
            context=context or "",
            exten=exten or "",
        )

    def _snapshot_by_header(self, marks: tuple[bytes, ...]) -> list[str | None]:
        raw = self._raw
        values: list[str | None] = []
        for mark in marks:
            start = raw.find(mark)
            if start < 0:
                values.append(None)
                continue
            start += len(mark)
            end = raw.find(b"\n", start)
            if end < 0:
                end = len(raw)
            if raw[end - 1 : end] == b"\r":
                end -= 1
            values.append(raw[start:end].decode("utf-8", "replace"))
        return values

    def bridge(self) -> Bridge:
        return Bridge(
            uniqueid=self.req("BridgeUniqueid"),
            type=self.text("BridgeType"),
            technology=self.text("BridgeTechnology"),
        )


# The snapshot headers the Channel record keeps (ast_manager_build_channel_state_string_prefix
# writes them, each under the event's prefix).
_SNAPSHOT_KEYS = (
    b"Channel",
    b"ChannelState",
    b"CallerIDNum",
    b"CallerIDName",
    b"Context",
    b"Exten",
    b"Uniqueid",
    b"Linkedid",
)
# Every header of a snapshot block, in the order Asterisk writes them.
_SNAPSHOT_BLOCK = (
    b"Channel",
    b"ChannelState",
    b"ChannelStateDesc",
    b"CallerIDNum",
    b"CallerIDName",
    b"ConnectedLineNum",
    b"ConnectedLineName",
    b"Language",
    b"AccountCode",
    b"Context",
    b"Exten",
    b"Priority",
    b"Uniqueid",
    b"Linkedid",
)
_SNAPSHOTS: dict[str, tuple[re.Pattern[bytes], tuple[bytes, ...]]] = {}


def _snapshot_shape(prefix: str) -> tuple[re.Pattern[bytes], tuple[bytes, ...]]:
    """For one prefix: the regex of the whole block (capturing the kept headers, in
    ``_SNAPSHOT_KEYS`` order) and the per-header marks of the fallback."""
    p = re.escape(prefix.encode())
    kept = set(_SNAPSHOT_KEYS)
    block = b"".join(
        b"\n" + p + key + (b": ([^\r\n]*)\r?" if key in kept else b": [^\r\n]*\r?") for key in _SNAPSHOT_BLOCK
    )
    marks = tuple(b"\n" + prefix.encode() + key + b": " for key in _SNAPSHOT_KEYS)
    return re.compile(block), marks


def _caller_text(value: str | None) -> str | None:
    """Caller-ID text as a person wrote it: ``<unknown>``/empty → ``None``, C escapes undone."""
    if value is None or value in ("", _UNKNOWN):
        return None
    if "\\" in value:
        return unescape_c(value)
    return value


_C_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "?": "?",
}


def unescape_c(text: str) -> str:
    r"""Undo ``ast_escape_c``: ``\"`` → ``"``, ``\\`` → ``\``, ``\n`` → newline, …"""
    out: list[str] = []
    i = 0
    length = len(text)
    while i < length:
        ch = text[i]
        if ch == "\\" and i + 1 < length:
            nxt = text[i + 1]
            out.append(_C_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _transfer_result(text: str) -> TransferResult:
    try:
        return TransferResult(text)
    except ValueError:
        return TransferResult.OTHER


def _dial_status(text: str) -> DialStatus:
    head = text.split(":", 1)[0]
    try:
        return DialStatus(head)
    except ValueError:
        return DialStatus.OTHER


def _dest_type(text: str) -> AttendedDestType:
    try:
        return AttendedDestType(text)
    except ValueError:
        return AttendedDestType.OTHER


def _header_value(raw: bytes, mark: bytes) -> bytes | None:
    """The value of the header ``mark`` names, found by a byte search (no full parse)."""
    start = raw.find(mark)
    if start < 0:
        return None
    start += len(mark)
    end = raw.find(b"\r", start)
    if end < 0:
        end = raw.find(b"\n", start)
    return raw[start:] if end < 0 else raw[start:end]


def _variable_name(raw_name: bytes) -> TrackedVariable | None:
    return _TRACKED_VARIABLE_BYTES.get(raw_name)


# ---------------------------------------------------------------------------------------------
# One builder per event name.

_Builder = Callable[[_Fields], AmiEvent]


def _newchannel(f: _Fields) -> AmiEvent:
    return Newchannel(f.time(), f.channel())


def _newstate(f: _Fields) -> AmiEvent:
    return Newstate(f.time(), f.channel())


def _newcallerid(f: _Fields) -> AmiEvent:
    return NewCallerid(f.time(), f.channel())


def _newconnectedline(f: _Fields) -> AmiEvent:
    return NewConnectedLine(
        f.time(),
        f.channel(),
        connected_num=_caller_text(f.opt("ConnectedLineNum")),
        connected_name=_caller_text(f.opt("ConnectedLineName")),
    )


def _newexten(f: _Fields) -> AmiEvent:
    return Newexten(f.time(), f.channel(), f.text("Application"), f.text("AppData"))


def _varset(f: _Fields) -> AmiEvent:
    name = f.req("Variable").lstrip("_")
    variable = _TRACKED_VARIABLES.get(name)
    if variable is None:  # the byte search matched; the parsed header must agree
        raise MalformedEvent("VarSet", f"untracked variable {name!r}")
    uniqueid = f.req("Uniqueid")
    return VarSet(
        time=f.time(),
        uniqueid=uniqueid,
        linkedid=f.opt("Linkedid") or uniqueid,
        variable=variable,
        value=f.text("Value"),
    )


def _dialbegin(f: _Fields) -> AmiEvent:
    return DialBegin(f.time(), f.channel_opt(), f.channel("Dest"), f.text("DialString"))


def _dialend(f: _Fields) -> AmiEvent:
    return DialEnd(f.time(), f.channel_opt(), f.channel("Dest"), _dial_status(f.text("DialStatus")))


def _bridgecreate(f: _Fields) -> AmiEvent:
    return BridgeCreate(f.time(), f.bridge())


def _bridgeenter(f: _Fields) -> AmiEvent:
    return BridgeEnter(f.time(), f.bridge(), f.channel(), f.opt("SwapUniqueid") or None)


def _bridgeleave(f: _Fields) -> AmiEvent:
    return BridgeLeave(f.time(), f.bridge(), f.channel())


def _bridgedestroy(f: _Fields) -> AmiEvent:
    return BridgeDestroy(f.time(), f.bridge())


def _blindtransfer(f: _Fields) -> AmiEvent:
    return BlindTransfer(
        time=f.time(),
        result=_transfer_result(f.text("Result")),
        transferer=f.channel_opt("Transferer"),
        transferee=f.channel_opt("Transferee"),
        context=f.text("Context"),
        extension=f.text("Extension"),
        is_external=f.text("IsExternal").lower() == "yes",
    )


def _attendedtransfer(f: _Fields) -> AmiEvent:
    return AttendedTransfer(
        time=f.time(),
        result=_transfer_result(f.text("Result")),
        dest_type=_dest_type(f.text("DestType")),
        orig_transferer=f.channel_opt("OrigTransferer"),
        second_transferer=f.channel_opt("SecondTransferer"),
        transferee=f.channel_opt("Transferee"),
        transfer_target=f.channel_opt("TransferTarget"),
        local_one=f.channel_opt("LocalOne"),
        local_two=f.channel_opt("LocalTwo"),
        dest_bridge=f.opt("DestBridgeUniqueid") or None,
    )


def _localbridge(f: _Fields) -> AmiEvent:
    return LocalBridge(
        time=f.time(),
        local_one=f.channel("LocalOne"),
        local_two=f.channel("LocalTwo"),
        context=f.text("Context"),
        exten=f.text("Exten"),
        optimization=f.text("LocalOptimization").lower() == "yes",
    )


def _localoptbegin(f: _Fields) -> AmiEvent:
    return LocalOptimizationBegin(
        time=f.time(),
        local_one=f.channel("LocalOne"),
        local_two=f.channel("LocalTwo"),
        source=f.channel_opt("Source"),
        dest_bridge=f.opt("DestUniqueId") or None,
    )


def _localoptend(f: _Fields) -> AmiEvent:
    return LocalOptimizationEnd(
        time=f.time(),
        local_one=f.channel("LocalOne"),
        local_two=f.channel("LocalTwo"),
        success=f.text("Success").lower() == "yes",
    )


def _queuecallerjoin(f: _Fields) -> AmiEvent:
    return QueueCallerJoin(f.time(), f.channel(), f.req("Queue"), f.integer("Position") or 0)


def _queuecallerleave(f: _Fields) -> AmiEvent:
    return QueueCallerLeave(f.time(), f.channel(), f.req("Queue"))


def _queuecallerabandon(f: _Fields) -> AmiEvent:
    return QueueCallerAbandon(f.time(), f.channel(), f.req("Queue"), f.number("HoldTime"))


def _agentcalled(f: _Fields) -> AmiEvent:
    return AgentCalled(
        time=f.time(),
        channel=f.channel_opt(),
        member=f.channel_opt("Dest"),
        queue=f.req("Queue"),
        member_name=f.text("MemberName"),
        interface=f.text("Interface"),
    )


def _agentconnect(f: _Fields) -> AmiEvent:
    return AgentConnect(
        time=f.time(),
        channel=f.channel_opt(),
        member=f.channel_opt("Dest"),
        queue=f.req("Queue"),
        member_name=f.text("MemberName"),
        interface=f.text("Interface"),
        hold_seconds=f.number("HoldTime"),
    )


def _agentcomplete(f: _Fields) -> AmiEvent:
    return AgentComplete(
        time=f.time(),
        channel=f.channel_opt(),
        member=f.channel_opt("Dest"),
        queue=f.req("Queue"),
        member_name=f.text("MemberName"),
        interface=f.text("Interface"),
        reason=f.text("Reason"),
    )


def _agentringnoanswer(f: _Fields) -> AmiEvent:
    return AgentRingNoAnswer(
        time=f.time(),
        channel=f.channel_opt(),
        member=f.channel_opt("Dest"),
        queue=f.req("Queue"),
        member_name=f.text("MemberName"),
        interface=f.text("Interface"),
    )


def _pickup(f: _Fields) -> AmiEvent:
    return Pickup(f.time(), f.channel(), f.channel("Target"))


def _hangup(f: _Fields) -> AmiEvent:
    return Hangup(f.time(), f.channel(), f.integer("Cause") or 0)


def _hanguprequest(f: _Fields) -> AmiEvent:
    return HangupRequest(f.time(), f.channel(), soft=False, cause=f.integer("Cause"))


def _softhanguprequest(f: _Fields) -> AmiEvent:
    return HangupRequest(f.time(), f.channel(), soft=True, cause=f.integer("Cause"))


def _mixmonitorstart(f: _Fields) -> AmiEvent:
    return MixMonitorStart(f.time(), f.channel())


def _originateresponse(f: _Fields) -> AmiEvent:
    return OriginateResponse(
        time=f.time(),
        success=f.text("Response").lower() == "success",
        action_id=f.opt("ActionID"),
        channel=f.text("Channel"),
        context=f.text("Context"),
        exten=f.text("Exten"),
        uniqueid=_caller_text(f.opt("Uniqueid")),  # "<unknown>" when the originate failed
        reason=f.integer("Reason"),
    )


def _coreshowchannel(f: _Fields) -> AmiEvent:
    return CoreShowChannel(
        time=f.time(),
        channel=f.channel(),
        bridge_id=f.opt("BridgeId") or None,
        application=f.text("Application"),
        app_data=f.text("ApplicationData"),
        duration_seconds=_duration(f.text("Duration")),
    )


def _coreshowchannelscomplete(f: _Fields) -> AmiEvent:
    return CoreShowChannelsComplete(f.time(), f.integer("ListItems") or 0)


def _fullybooted(f: _Fields) -> AmiEvent:
    return FullyBooted(f.time())


def _successfulauth(f: _Fields) -> AmiEvent:
    return SuccessfulAuth(f.time())


def cel_event_type(text: str) -> CelEventType:
    """A CEL ``EventName``/``eventtype`` as the enum; unknown names are ``OTHER``."""
    return _CEL_TYPES.get(text.strip().upper(), CelEventType.OTHER)


def _cel(f: _Fields) -> AmiEvent:
    uniqueid = f.req("UniqueID")
    return Cel(
        time=f.time(),
        type=cel_event_type(f.req("EventName")),
        channel=f.text("Channel"),
        uniqueid=uniqueid,
        linkedid=f.opt("LinkedID") or uniqueid,
        caller_num=_caller_text(f.opt("CallerIDnum")),
        caller_name=_caller_text(f.opt("CallerIDname")),
        context=f.text("Context"),
        exten=f.text("Exten"),
        application=f.text("Application"),
        app_data=f.text("AppData"),
        peer=f.text("Peer"),
        extra=f.text("Extra"),
    )


_CONTACT_STATES = {s.value.lower(): s for s in ContactState}


def _devicestatechange(f: _Fields) -> AmiEvent:
    device, state = f.opt("Device"), f.opt("State")
    if not device or state is None:
        raise MalformedEvent("DeviceStateChange", "missing Device or State")
    try:
        return DeviceStateChange(device, DeviceState(state.strip().upper()), f.time())
    except ValueError:
        raise MalformedEvent("DeviceStateChange", f"unknown device state {state!r}") from None


def _contact(f: _Fields, event: str, status_header: str | None) -> AmiEvent:
    agent = f.opt("EndpointName") or f.opt("AOR")
    uri = f.opt("URI")
    raw = (f.opt(status_header) if status_header else None) or f.opt("Status")
    if not agent or not uri or raw is None:
        raise MalformedEvent(event, "missing AOR/EndpointName, URI or status")
    state = _CONTACT_STATES.get(raw.strip().lower())
    if state is None:
        raise MalformedEvent(event, f"unknown contact status {raw!r}")
    return ContactStatus(agent, uri, state, f.time())


def _contactstatus(f: _Fields) -> AmiEvent:
    return _contact(f, "ContactStatus", "ContactStatus")


def _contactstatusdetail(f: _Fields) -> AmiEvent:
    return _contact(f, "ContactStatusDetail", None)


def _extensionstatus(f: _Fields) -> AmiEvent:
    exten, status = f.opt("Exten"), f.opt("Status")
    if not exten or status is None:
        raise MalformedEvent("ExtensionStatus", "missing Exten or Status")
    try:
        return ExtensionStatus(exten, int(status.strip()), f.time())
    except ValueError:
        raise MalformedEvent("ExtensionStatus", f"non-numeric Status {status!r}") from None


def _queue_member(f: _Fields, event: str) -> tuple[str, str]:
    queue = f.opt("Queue")
    interface = f.opt("StateInterface") or f.opt("Interface") or f.opt("Location")
    if not queue or not interface:
        raise MalformedEvent(event, "missing Queue or Interface")
    return queue, interface


def _queue_member_status(event: str) -> _Builder:
    def build(f: _Fields) -> AmiEvent:
        queue, interface = _queue_member(f, event)
        paused = (f.opt("Paused") or "").strip().lower()
        if paused not in _FLAGS:
            raise MalformedEvent(event, "missing or unreadable Paused")
        return QueueMemberStatus(queue, interface, _FLAGS[paused], f.time())

    return build


_FLAGS = {
    "1": True,
    "yes": True,
    "true": True,
    "on": True,
    "0": False,
    "no": False,
    "false": False,
    "off": False,
}


def _queuememberremoved(f: _Fields) -> AmiEvent:
    queue, interface = _queue_member(f, "QueueMemberRemoved")
    return QueueMemberRemoved(queue, interface, f.time())


def _duration(text: str) -> float:
    """``HH:MM:SS`` (CoreShowChannel ``Duration``) → seconds; garbage → 0."""
    total = 0.0
    for part in text.split(":"):
        if not part.isdigit():
            return 0.0
        total = total * 60 + int(part)
    return total


_BUILDERS: dict[str, _Builder] = {
    "Newchannel": _newchannel,
    "Newstate": _newstate,
    "NewCallerid": _newcallerid,
    "NewConnectedLine": _newconnectedline,
    "Newexten": _newexten,
    "VarSet": _varset,
    "DialBegin": _dialbegin,
    "DialEnd": _dialend,
    "BridgeCreate": _bridgecreate,
    "BridgeEnter": _bridgeenter,
    "BridgeLeave": _bridgeleave,
    "BridgeDestroy": _bridgedestroy,
    "BlindTransfer": _blindtransfer,
    "AttendedTransfer": _attendedtransfer,
    "LocalBridge": _localbridge,
    "LocalOptimizationBegin": _localoptbegin,
    "LocalOptimizationEnd": _localoptend,
    "QueueCallerJoin": _queuecallerjoin,
    "QueueCallerLeave": _queuecallerleave,
    "QueueCallerAbandon": _queuecallerabandon,
    "AgentCalled": _agentcalled,
    "AgentConnect": _agentconnect,
    "AgentComplete": _agentcomplete,
    "AgentRingNoAnswer": _agentringnoanswer,
    "Pickup": _pickup,
    "Hangup": _hangup,
    "HangupRequest": _hanguprequest,
    "SoftHangupRequest": _softhanguprequest,
    "MixMonitorStart": _mixmonitorstart,
    "OriginateResponse": _originateresponse,
    "CoreShowChannel": _coreshowchannel,
    "CoreShowChannelsComplete": _coreshowchannelscomplete,
    "FullyBooted": _fullybooted,
    "SuccessfulAuth": _successfulauth,
    "CEL": _cel,
    "DeviceStateChange": _devicestatechange,
    "ContactStatus": _contactstatus,
    "ContactStatusDetail": _contactstatusdetail,
    "ExtensionStatus": _extensionstatus,
    "QueueMemberStatus": _queue_member_status("QueueMemberStatus"),
    "QueueMemberPause": _queue_member_status("QueueMemberPause"),
    "QueueMemberAdded": _queue_member_status("QueueMemberAdded"),
    "QueueMember": _queue_member_status("QueueMember"),
    "QueueMemberRemoved": _queuememberremoved,
}

# Every AMI event name this module can decode.
DECODABLE_EVENTS = frozenset(_BUILDERS)

# The typed event each AMI event name decodes into: the class of the same name in
# pbxlink.ami.events, but for these.
_DECODED_AS: dict[str, type] = {
    "SoftHangupRequest": HangupRequest,
    "ContactStatusDetail": ContactStatus,
    "QueueMemberPause": QueueMemberStatus,
    "QueueMemberAdded": QueueMemberStatus,
    "QueueMember": QueueMemberStatus,
    "CEL": Cel,
}
DECODES_INTO: dict[str, type] = {
    name: _DECODED_AS.get(name) or getattr(ami_events, name) for name in _BUILDERS
}


def events_decoding_into(types: Collection[type]) -> frozenset[str]:
    """The AMI event names whose typed events are among ``types`` (e.g. the types a consumer
    has handlers for): decode exactly these, and nothing a consumer handles is dropped."""
    wanted = set(types)
    return frozenset(name for name, kind in DECODES_INTO.items() if kind in wanted)


# Event names are matched case-insensitively (AMI keys and names are).
_CANONICAL = {name.lower(): name for name in _BUILDERS}
_RESOLVED_LIMIT = 4096  # distinct event names remembered (a peer could invent endless ones)


class AmiDecoder:
    """Frames in, typed events out; counts what it drops.

    Not thread-safe; one per AMI stream. ``ignored`` maps an event name (``"<response>"`` for
    action responses) to how many frames of it were dropped.
    """

    __slots__ = ("_builders", "_cel_types", "_resolved", "decoded", "ignored")

    def __init__(
        self,
        events: Collection[str] | None = None,
        *,
        cel_types: Collection[CelEventType] | None = (CelEventType.LINKEDID_END,),
    ) -> None:
        """``events``: the AMI event names to decode (default: every event modelled in
        :mod:`~pbxlink.ami.events`); a consumer passes the ones it uses, e.g.
        :data:`pbxlink.calls.tracker.TRACKED_EVENTS` (derived from the tracker's handler table
        by :func:`events_decoding_into`), and the rest cost nothing.
        ``cel_types``: the ``CEL`` records to decode (``None``: all). By default only
        ``LINKEDID_END`` (what the tracker uses live); the others are dropped after one byte
        search, like untracked ``VarSet`` frames."""
        unknown = set(events or ()) - _BUILDERS.keys()
        if unknown:
            raise ValueError(f"no decoder for AMI events {sorted(unknown)}")
        self._builders = dict(_BUILDERS) if events is None else {n: _BUILDERS[n] for n in events}
        self._resolved: dict[str, tuple[str, _Builder] | None] = {}
        self._cel_types = None if cel_types is None else frozenset(t.value.encode() for t in cel_types)
        self.ignored: Counter[str] = Counter()
        self.decoded = 0

    def decode(self, frame: FrameLike) -> AmiEvent | None:
        name = frame.event
        if name is None:
            self.ignored["<response>"] += 1
            return None
        resolved = self._resolved
        entry = resolved[name] if name in resolved else self._resolve(name)
        if entry is None:
            self.ignored[name] += 1
            return None
        name, build = entry
        if name == "VarSet":
            variable = _header_value(frame.raw, _VARIABLE_MARK)
            if variable is None or _variable_name(variable) is None:
                self.ignored[name] += 1
                return None
        elif name == "Newexten":
            # the tracked applications, and the first step of every extension the dialplan
            # enters (where the call is: an agent's extension before a forward, ...)
            app = _header_value(frame.raw, _APPLICATION_MARK)
            if (app is None or app.lower() not in _TRACKED_APP_BYTES) and _FIRST_PRIORITY.search(
                frame.raw
            ) is None:
                self.ignored[name] += 1
                return None
        elif name == "CEL" and self._cel_types is not None:
            cel_type = _header_value(frame.raw, _CEL_TYPE_MARK)
            if cel_type is None or cel_type not in self._cel_types:
                self.ignored[name] += 1
                return None
        event = build(_Fields(name, frame))
        self.decoded += 1
        return event

    def _resolve(self, name: str) -> tuple[str, _Builder] | None:
        """The builder for an event name as received (names match case-insensitively);
        remembered per name, for a bounded number of distinct names."""
        canonical = name if name in self._builders else _CANONICAL.get(name.lower())
        entry = None
        if canonical is not None and canonical in self._builders:
            entry = (canonical, self._builders[canonical])
        if len(self._resolved) < _RESOLVED_LIMIT:
            self._resolved[name] = entry
        return entry

    def decode_snapshot(self, frames: Iterable[FrameLike]) -> list[CoreShowChannel]:
        """The ``CoreShowChannel`` items of a resync listing (``shell.Resynced.channels``),
        for :meth:`CallTracker.resync`. Malformed items are skipped and counted."""
        channels: list[CoreShowChannel] = []
        for frame in frames:
            try:
                event = self.decode(frame)
            except MalformedEvent:
                self.ignored["<malformed CoreShowChannel>"] += 1
                continue
            if isinstance(event, CoreShowChannel):
                channels.append(event)
        return channels
