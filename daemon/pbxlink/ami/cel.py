"""Asterisk's CEL records → the typed AMI events the call tracker folds.

After an AMI outage (or a daemon restart) the daemon reads Asterisk's own Channel Event Logging
records of the gap from a CEL backend (docs/cel.md) and hands them to :func:`cel_to_events`,
which rebuilds what AMI would have said, as far as CEL tells:

=====================  ==================================================================
CEL record             event(s) for the tracker
=====================  ==================================================================
``CHAN_START``         ``Newchannel`` (state Ring for a call's first channel, else Down);
                       a channel created while another channel of its linkedid runs a
                       dialing application (``Dial``, ``Queue``, ``FollowMe``…) also gets
                       a ``DialBegin`` from that channel, with the matching part of the dial
                       string
(ringing)              CEL has no ringing record: a dialed channel that answered, that is
                       still up at the end of the records, or that hung up with a cause other
                       than busy/unreachable/congestion gets a ``Newstate`` Ringing right
                       after its ``DialBegin`` (the batch is read whole, so the hangup cause is
                       known in advance)
``ANSWER``             ``Newstate`` Up
``APP_START``          ``Queue`` → ``QueueCallerJoin``; ``VoiceMail`` → ``Newexten``
``APP_END``            ``Queue`` → ``QueueCallerLeave``
``BRIDGE_ENTER/EXIT``  ``BridgeEnter``/``BridgeLeave`` (bridge id and technology from
                       ``extra``; a holding bridge is a holding bridge)
``BLINDTRANSFER``      ``BlindTransfer`` (extension, transferee from ``extra``)
``ATTENDEDTRANSFER``   ``AttendedTransfer`` (the channels named in ``extra``)
``PICKUP``             ``Pickup``
``HANGUP``             ``HangupRequest`` for the channel ``extra.hangupsource`` names (who hung
                       up on their own), then ``Hangup`` with ``extra.hangupcause``
``LINKEDID_END``       passed on (the tracker finalizes on it)
=====================  ==================================================================

Pure: records in (oldest first), events out. What CEL cannot say (channel variables such as
``INBOUND_DID`` and pbxlink's routing variables, the exact ring time) is missing from the
result; the tracker marks every call it rebuilds this way ``reconstructed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pbxlink.ami.events import (
    AmiEvent,
    AttendedDestType,
    AttendedTransfer,
    BlindTransfer,
    Bridge,
    BridgeEnter,
    BridgeLeave,
    Cel,
    CelEventType,
    Channel,
    ChannelState,
    DialBegin,
    Hangup,
    HangupRequest,
    Newchannel,
    Newexten,
    Newstate,
    Pickup,
    QueueCallerJoin,
    QueueCallerLeave,
    TransferResult,
)

# Applications that create (dial) other channels of the same linkedid, lower case.
DIALING_APPS = frozenset({"dial", "queue", "followme", "page", "originate"})
# Hangup causes of a dialed channel that never rang (Q.850): unallocated number, no route,
# busy, subscriber absent, destination out of order, invalid number, congestion, network
# out of order, temporary failure, switching congestion, channel unavailable, bearer
# capability unavailable, incompatible destination.
NO_RING_CAUSES = frozenset({1, 2, 3, 17, 20, 27, 28, 34, 38, 41, 42, 44, 58, 88})


# What a dialed channel's own records say it is running: created by Dial(), by Queue(), or the
# first leg of an Originate (which no channel dialed).
_DIALED_BY_DIAL = frozenset({"appdial", "appqueue"})
_ORIGINATED = "appdial2"


@dataclass
class _ChanState:
    snap: Channel
    application: str = ""
    app_data: str = ""
    alive: bool = True
    queue_joined: bool = False
    voicemail: bool = False


@dataclass
class _Batch:
    records: Sequence[Cel]
    rang: set[str]
    # per channel: (position, application, app data) of its records that name one
    apps: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    dialed: dict[str, str] = field(default_factory=dict)  # uniqueid → appdial/appqueue/appdial2
    first_record: dict[str, int] = field(default_factory=dict)  # uniqueid → position
    members: dict[str, list[str]] = field(default_factory=dict)  # linkedid → uniqueids
    chans: dict[str, _ChanState] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)  # channel name → uniqueid
    linkedid_first: set[str] = field(default_factory=set)
    out: list[AmiEvent] = field(default_factory=list)
    position: int = 0


def cel_to_events(records: Iterable[Cel]) -> list[AmiEvent]:
    """The tracker's events for CEL records (oldest first; see the module's table)."""
    ordered = sorted(records, key=lambda r: r.time or 0.0)  # stable: equal times keep their order
    batch = _Batch(ordered, _channels_that_rang(ordered))
    for position, record in enumerate(ordered):
        if record.uniqueid not in batch.first_record:
            batch.first_record[record.uniqueid] = position
            batch.members.setdefault(record.linkedid, []).append(record.uniqueid)
        if record.application:
            batch.apps.setdefault(record.uniqueid, []).append((position, record.application, record.app_data))
            app = record.application.lower()
            if app in _DIALED_BY_DIAL or app == _ORIGINATED:
                batch.dialed.setdefault(record.uniqueid, app)
    for position, record in enumerate(ordered):
        batch.position = position
        _convert(record, batch)
    return batch.out


def _channels_that_rang(records: Sequence[Cel]) -> set[str]:
    """Uniqueids of the channels that (by CEL's account) got as far as ringing."""
    hangup_cause: dict[str, int] = {}
    answered: set[str] = set()
    for record in records:
        if record.type is CelEventType.HANGUP:
            hangup_cause[record.uniqueid] = _int(_extra(record).get("hangupcause"))
        elif record.type is CelEventType.ANSWER:
            answered.add(record.uniqueid)
    started = {r.uniqueid for r in records if r.type is CelEventType.CHAN_START}
    return {
        uniqueid
        for uniqueid in started
        if uniqueid in answered or hangup_cause.get(uniqueid, 0) not in NO_RING_CAUSES
    }


def _convert(record: Cel, batch: _Batch) -> None:
    kind = record.type
    when = record.time
    out = batch.out
    if kind is CelEventType.LINKEDID_END:
        out.append(record)
        return
    state = batch.chans.get(record.uniqueid)
    if kind is CelEventType.CHAN_START or state is None:
        state = _start(record, batch)
        if kind is CelEventType.CHAN_START:
            return
    _refresh(state, record)
    if record.application and kind is not CelEventType.APP_END:
        state.application, state.app_data = record.application, record.app_data
        app = record.application.lower()
        if app == "voicemail" and not state.voicemail:
            state.voicemail = True
            out.append(Newexten(when, state.snap, record.application, record.app_data))
        elif app == "queue":
            _join_queue(state, when, batch)
    if kind is CelEventType.ANSWER:
        state.snap = _with_state(state.snap, ChannelState.UP)
        out.append(Newstate(when, state.snap))
    elif kind is CelEventType.APP_END:
        if record.application.lower() == "queue" and state.queue_joined:
            out.append(QueueCallerLeave(when, state.snap, record.app_data.split(",", 1)[0]))
            state.queue_joined = False
        state.application, state.app_data = "", ""
    elif kind in (CelEventType.BRIDGE_ENTER, CelEventType.BRIDGE_EXIT):
        extra = _extra(record)
        bridge_id = str(extra.get("bridge_id") or "")
        if not bridge_id:
            return
        bridge = _bridge(bridge_id, str(extra.get("bridge_technology") or ""))
        if kind is CelEventType.BRIDGE_ENTER:
            out.append(BridgeEnter(when, bridge, state.snap, None))
        else:
            out.append(BridgeLeave(when, bridge, state.snap))
    elif kind is CelEventType.BLINDTRANSFER:
        extra = _extra(record)
        out.append(
            BlindTransfer(
                time=when,
                result=TransferResult.SUCCESS,
                transferer=state.snap,
                transferee=_known(batch, extra, "transferee_channel"),
                context=str(extra.get("context") or ""),
                extension=str(extra.get("extension") or ""),
                is_external=False,
            )
        )
    elif kind is CelEventType.ATTENDEDTRANSFER:
        extra = _extra(record)
        out.append(
            AttendedTransfer(
                time=when,
                result=TransferResult.SUCCESS,
                dest_type=AttendedDestType.BRIDGE,
                orig_transferer=state.snap,
                second_transferer=_known(batch, extra, "channel2"),
                transferee=_known(batch, extra, "transferee_channel"),
                transfer_target=_known(batch, extra, "transfer_target_channel"),
                local_one=None,
                local_two=None,
                dest_bridge=str(extra.get("bridge1_id") or "") or None,
            )
        )
    elif kind is CelEventType.PICKUP:
        picker = _known(batch, _extra(record), "pickup_channel")
        if picker is not None:
            out.append(Pickup(when, picker, state.snap))
    elif kind is CelEventType.HANGUP:
        if not state.alive:
            return
        extra = _extra(record)
        source = str(extra.get("hangupsource") or "")
        source_id = batch.by_name.get(source)
        source_state = None if source_id is None else batch.chans.get(source_id)
        if source_state is not None and source_state.alive:
            out.append(HangupRequest(when, source_state.snap, soft=False, cause=None))
        state.alive = False
        out.append(Hangup(when, state.snap, _int(extra.get("hangupcause"))))


def _join_queue(state: _ChanState, when: float | None, batch: _Batch) -> None:
    if not state.queue_joined:
        state.queue_joined = True
        batch.out.append(QueueCallerJoin(when, state.snap, state.app_data.split(",", 1)[0], 0))


def _start(record: Cel, batch: _Batch) -> _ChanState:
    """A channel seen for the first time (its CHAN_START, or the first record of a channel
    that started before the records begin)."""
    first = record.linkedid not in batch.linkedid_first and record.linkedid == record.uniqueid
    batch.linkedid_first.add(record.linkedid)
    snap = Channel(
        name=record.channel,
        uniqueid=record.uniqueid,
        linkedid=record.linkedid,
        state=ChannelState.RING if first else ChannelState.DOWN,
        caller_num=record.caller_num,
        caller_name=record.caller_name,
        context=record.context,
        exten=record.exten,
    )
    state = _ChanState(snap)
    batch.chans[record.uniqueid] = state
    batch.by_name[record.channel] = record.uniqueid
    batch.out.append(Newchannel(record.time, snap))
    if record.type is not CelEventType.CHAN_START:
        return state
    if batch.dialed.get(record.uniqueid) == _ORIGINATED:
        # the first leg of an Originate (click-to-call): rung with no calling channel
        batch.out.append(DialBegin(record.time, None, snap, _device(record.channel)))
    elif first:
        return state
    else:
        dialer = _dialer(record, batch)
        if dialer is None:
            dialer = _origin_fallback(record, batch)
            if dialer is None:
                return state
            target = ""  # who dialed is inferred: no dial string to read a number from
        else:
            if dialer.application.lower() == "queue":
                _join_queue(dialer, record.time, batch)
            target = _dial_target(dialer, record.channel)
        batch.out.append(DialBegin(record.time, dialer.snap, snap, target))
    if record.uniqueid in batch.rang:
        state.snap = _with_state(snap, ChannelState.RINGING)
        batch.out.append(Newstate(record.time, state.snap))
    return state


def _dialer(record: Cel, batch: _Batch) -> _ChanState | None:
    """The channel whose dialing application created this one: alive, same linkedid, running
    Dial/Queue/…; the one whose dial string names this channel's device first, else the
    newest such channel. The second half of a Local pair is created by its first half."""
    if record.channel.startswith("Local/") and (
        record.channel.endswith(";2") or batch.dialed.get(record.uniqueid) not in _DIALED_BY_DIAL
    ):
        # the second half is created by the first; a first half that no Dial()/Queue() ran
        # was created by a feature (an attended transfer's consultation)
        return None
    candidates = []
    for state in _linkedid_channels(batch, record.linkedid):
        if not state.alive or state.snap.linkedid != record.linkedid:
            continue
        if state.snap.uniqueid == record.uniqueid:
            continue
        if state.application.lower() not in DIALING_APPS:
            # no APP_START seen (cel.conf "apps" without it): what its next record runs
            upcoming = _next_app(batch, state.snap.uniqueid)
            if upcoming is None or upcoming[0].lower() not in DIALING_APPS:
                continue
            state.application, state.app_data = upcoming
        candidates.append(state)
    device = _device(record.channel)
    for state in reversed(candidates):
        if any(_device_of_target(t) == device for t in _targets(state.app_data)):
            return state
    # A Local channel's second half runs the dialplan that dials: when no dial string names
    # this device, the newest such half is the likelier dialer (a transfer's consultation).
    halves = [
        s
        for s in _linkedid_channels(batch, record.linkedid)
        if s.alive and s.snap.name.startswith("Local/") and s.snap.name.endswith(";2")
    ]
    if halves:
        return halves[-1]
    return candidates[-1] if candidates else None


def _origin_fallback(record: Cel, batch: _Batch) -> _ChanState | None:
    """A channel whose own records say Dial()/Queue() created it, when no record says which
    channel was dialing (no APP_START, and the dialer's records name no application after):
    the linkedid's first channel, if it is still up."""
    if batch.dialed.get(record.uniqueid) not in _DIALED_BY_DIAL:
        return None
    origin = next(
        (s for s in _linkedid_channels(batch, record.linkedid) if s.snap.uniqueid == record.linkedid), None
    )
    return origin if origin is not None and origin.alive else None


def _linkedid_channels(batch: _Batch, linkedid: str) -> list[_ChanState]:
    """The channels of a linkedid up now: those seen so far, and those already up when the
    records begin (no CHAN_START of theirs), registered from their first record."""
    found = []
    for uniqueid in batch.members.get(linkedid, ()):
        state = batch.chans.get(uniqueid)
        if state is None:
            first = batch.records[batch.first_record[uniqueid]]
            if first.type is CelEventType.CHAN_START:
                continue  # not created yet
            state = _start(first, batch)
        found.append(state)
    return found


def _next_app(batch: _Batch, uniqueid: str) -> tuple[str, str] | None:
    """The application a channel's next record (after the current one) names."""
    for position, app, data in batch.apps.get(uniqueid, ()):
        if position > batch.position:
            return app, data
    return None


def _dial_target(dialer: _ChanState, channel: str) -> str:
    """The part of the dialer's dial string that reached ``channel`` (``PJSIP/101``)."""
    device = _device(channel)
    targets = _targets(dialer.app_data) if dialer.application.lower() == "dial" else []
    for target in targets:
        if _device_of_target(target) == device:
            return target
    return targets[0] if len(targets) == 1 else device


def _targets(app_data: str) -> list[str]:
    return [t.strip() for t in app_data.split(",", 1)[0].split("&") if t.strip()]


def _device(channel: str) -> str:
    """``PJSIP/101-0000002a`` → ``PJSIP/101``; ``Local/200@ctx-00000003;1`` → ``Local/200@ctx``."""
    name = channel[:-2] if channel[-2:-1] == ";" else channel
    base, dash, _ = name.rpartition("-")
    return base if dash else name


def _device_of_target(target: str) -> str:
    """The device a Dial() target reaches: ``PJSIP/0501234567@trunk`` → ``PJSIP/trunk``,
    ``PJSIP/trunk/sip:…`` → ``PJSIP/trunk``, ``Local/200@ctx/n`` → ``Local/200@ctx``."""
    tech, _, resource = target.partition("/")
    if tech.lower() == "local":
        return f"{tech}/{resource.split('/', 1)[0]}"
    resource = resource.split("/", 1)[0]
    if "@" in resource:
        resource = resource.split("@", 1)[1]
    return f"{tech}/{resource}"


def _refresh(state: _ChanState, record: Cel) -> None:
    """Carry what a record says about its channel now (its linkedid can change)."""
    snap = state.snap
    if record.linkedid and record.linkedid != snap.linkedid:
        state.snap = Channel(
            name=snap.name,
            uniqueid=snap.uniqueid,
            linkedid=record.linkedid,
            state=snap.state,
            caller_num=snap.caller_num,
            caller_name=snap.caller_name,
            context=snap.context,
            exten=snap.exten,
        )


def _with_state(snap: Channel, state: ChannelState) -> Channel:
    return Channel(
        name=snap.name,
        uniqueid=snap.uniqueid,
        linkedid=snap.linkedid,
        state=state,
        caller_num=snap.caller_num,
        caller_name=snap.caller_name,
        context=snap.context,
        exten=snap.exten,
    )


def _known(batch: _Batch, extra: dict[str, object], prefix: str) -> Channel | None:
    """A channel an ``extra`` names (``<prefix>_uniqueid`` / ``<prefix>_name``)."""
    uniqueid = str(extra.get(f"{prefix}_uniqueid") or "")
    state = batch.chans.get(uniqueid) if uniqueid else None
    if state is None:
        by_name = batch.by_name.get(str(extra.get(f"{prefix}_name") or extra.get(prefix) or ""))
        state = None if by_name is None else batch.chans.get(by_name)
    return None if state is None else state.snap


def _bridge(bridge_id: str, technology: str) -> Bridge:
    if technology == "holding_bridge":
        kind = "holding"
    elif technology == "softmix":
        kind = "base"  # ConfBridge: a conference, not a two-party basic bridge
    else:
        kind = "basic"
    return Bridge(uniqueid=bridge_id, type=kind, technology=technology)


def _extra(record: Cel) -> dict[str, object]:
    """``extra`` as a dict; anything that is not a JSON object is empty."""
    if not record.extra or not record.extra.startswith("{"):
        return {}
    try:
        value = json.loads(record.extra)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
