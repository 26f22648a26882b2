"""CallTracker: a pure fold of typed AMI events into one outcome per finished call.

How it decides (docs/outcome.md has the long form):

* **Grouping.** Channels are grouped by ``Linkedid``. Groups merge, transitively, whenever AMI
  shows that they belong together: a channel reports a different linkedid (basic bridges rewrite
  it), a dial connects two groups, two groups share a basic bridge, a pickup, a blind or an
  attended transfer, an agent's own call meets an outside caller's call in a multi-party bridge
  (a conference). The older group absorbs the newer one; its linkedid is the call's id.
* **Parties.** Every channel is an agent's phone, the outside world, or plumbing (Local halves,
  announcers …), by :class:`~pbxlink.calls.parties.PartyRules`. The *origin* is the first
  non-plumbing channel: outside → inbound; an agent → outbound if the outside world is reached (or
  an Originate targets it), else internal.
* **Talking.** After every bridge change the tracker walks the graph "same non-holding bridge"
  + "the two halves of a Local pair" from the other party (the outside channels; for internal calls
  the caller's phone) and collects the agents' phones it reaches. Each agent reached starts a
  handling segment; an agent no longer reached ends it. ``answered`` means at least one segment:
  an IVR ``Answer()``, a voicemail box or a Local channel answering never counts. An outside leg
  dialed for an inbound call nobody has answered yet (follow-me, call forward) stands for the
  agent whose forward it is.
* **Where a call was lost.** Several agents ringing at once for it (one ``Dial`` with ``&``, a
  queue, Local members) is a group (``queue``) miss; one agent alone an ``agent`` miss; the last
  ring decides, voicemail wins. Nothing here depends on context or extension names.
* **Ending.** A call finalizes when its last channel has hung up and Asterisk has said, with a
  CEL ``LINKEDID_END``, that every linkedid of the call is finished; without CEL over AMI, after
  ``settle_seconds`` of AMI time (late transfer events, stragglers). Then its state is dropped.
* **Backfill.** :meth:`CallTracker.backfill` folds events rebuilt from another source (Asterisk's
  CEL records of an AMI gap, :mod:`pbxlink.ami.cel`) through the same handlers; the calls they
  touch are ``reconstructed`` and produce no stale live events (only ``ended``).
* **Resync.** After an AMI (re)login the shell lists live channels (``CoreShowChannels``);
  :meth:`CallTracker.resync` ends what vanished during the gap and adopts what it did not know,
  marking those calls ``reconstructed``.

The tracker never reads a clock: time is the events' ``Timestamp`` and the ``now`` given to
:meth:`CallTracker.tick` / :meth:`CallTracker.resync`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from msgspec import UNSET

from pbxlink.ami.decode import events_decoding_into
from pbxlink.ami.events import (
    AgentCalled,
    AmiEvent,
    AttendedTransfer,
    BlindTransfer,
    BridgeDestroy,
    BridgeEnter,
    BridgeLeave,
    Cel,
    CelEventType,
    Channel,
    ChannelState,
    CoreShowChannel,
    CoreShowChannelsComplete,
    DialBegin,
    FullyBooted,
    Hangup,
    HangupRequest,
    LocalBridge,
    NewCallerid,
    Newchannel,
    NewConnectedLine,
    Newexten,
    Newstate,
    OriginateResponse,
    Pickup,
    QueueCallerJoin,
    QueueCallerLeave,
    SuccessfulAuth,
    TrackedVariable,
    TransferResult,
    VarSet,
)
from pbxlink.calls.model import (
    CallOutcome,
    Direction,
    ExternalParty,
    HandlerSegment,
    HangupBy,
    LiveEvent,
    LiveEventType,
    MissedAt,
    RoutingDecision,
    TrackerOutput,
    Transfer,
    TransferKind,
)
from pbxlink.calls.parties import Party, PartyClassifier, PartyKind, PartyRules
from pbxlink.wire.instant import Instant, seconds
from pbxlink.wire.phone import normalize

# A segment that ends and restarts for the same agent within this many seconds is one segment
# (Local channel optimization moves the agent's phone between bridges).
_REJOIN_SECONDS = 1.0
# Finished channels are remembered this long (AMI seconds), and at most this many, so that a
# straggling event cannot start a ghost call.
_FINISHED_SECONDS = 60.0
_FINISHED_MEMORY = 50_000
# The AMI session of a channel last seen in a backfill (CEL records of a gap): none, so the
# next CoreShowChannels snapshot ends it if it is not listed.
_BACKFILLED = -1


@dataclass(frozen=True, slots=True)
class CallTrackerSettings:
    node: str = "pbx1"
    parties: PartyRules = field(default_factory=PartyRules)
    settle_seconds: float = 2.0
    default_region: str = "UA"


class _Chan:
    __slots__ = (
        "agent_exten",
        "alive",
        "bridge",
        "call",
        "caller_name",
        "caller_num",
        "created",
        "dialed_agents",
        "dialer",
        "exten",
        "forward_agent",
        "forward_number",
        "linkedid",
        "name",
        "order",
        "party",
        "peer",
        "ring_kind",
        "ringing",
        "rung",
        "session",
        "uniqueid",
        "up",
    )

    def __init__(self, snap: Channel, party: Party, call: _Call, created: float) -> None:
        self.uniqueid = snap.uniqueid
        self.order = (created, uniqueid_order(snap.uniqueid))
        self.name = snap.name
        self.linkedid = snap.linkedid
        self.party = party
        self.call = call
        self.created = created
        self.caller_num = snap.caller_num
        self.caller_name = snap.caller_name
        self.exten = snap.exten
        self.up = snap.state is ChannelState.UP
        self.ringing = snap.state is ChannelState.RINGING  # ever seen ringing
        self.alive = True
        self.bridge: str | None = None
        self.peer: _Chan | None = None
        self.dialed_agents: list[str] = []
        self.session = 0  # the AMI session (FullyBooted count) of its latest event
        self.dialer: _Chan | None = None  # the channel whose Dial() created this one
        self.ring_kind: _RingKind | None = None  # set when an agent's phone is dialed
        self.rung = False
        # the last agent's extension this (non-agent) channel's dialplan entered (Newexten)
        self.agent_exten: str | None = None
        # an outside leg dialed to reach an agent elsewhere (follow-me, call forward): whose
        # forward it is, and the number dialed
        self.forward_agent: str | None = None
        self.forward_number: str | None = None

    @property
    def agent(self) -> str | None:
        return self.party.endpoint if self.party.kind is PartyKind.AGENT else None


class _RingKind(Enum):
    FOR_CALL = "for_call"  # dialed to reach the other party (Dial, Queue, Local member, transfer)
    CONSULTATION = "consultation"  # dialed by a transfer feature to consult a colleague


class _Segment:
    __slots__ = ("agent", "chan", "end", "number", "start")

    def __init__(self, agent: str, chan: _Chan, start: float) -> None:
        self.agent = agent
        self.chan = chan  # the agent's phone channel that talks (or their forward's outside leg)
        self.start = start
        self.end: float | None = None
        self.number = chan.forward_number if chan.forward_agent is not None else None


class _Span(NamedTuple):
    """A finished handling segment in AMI time (epoch seconds)."""

    agent: str
    answered_at: float
    ended_at: float
    forwarded_to: str | None = None  # the outside number of the agent's forward that took it


class _TransferRecord:
    __slots__ = ("at", "from_agent", "kind", "to")

    def __init__(self, kind: TransferKind, from_agent: str | None, to: str | None, at: float):
        self.kind = kind
        self.from_agent = from_agent
        self.to = to
        self.at = at


class _Call:
    __slots__ = (
        "active",
        "backfilled",
        "channels",
        "consulted",
        "deadline",
        "end_inferred",
        "ended_at",
        "ended_linkedids",
        "external_dial",
        "gap_inferred",
        "hangup_by",
        "in_queue",
        "key",
        "last_agent",
        "linkedids",
        "live",
        "originate_exten",
        "originated_agent",
        "queue",
        "rang",
        "recordings",
        "segments",
        "seq",
        "stage",
        "start_inferred",
        "transfers",
        "variables",
        "voicemail",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.linkedids: set[str] = {key}
        self.channels: dict[str, _Chan] = {}
        self.live = 0
        self.start_inferred = False
        self.end_inferred = False
        self.gap_inferred = False  # bridges changed while AMI was away (talk times inferred)
        self.backfilled = False  # some of its events were rebuilt from CEL records of a gap
        self.ended_linkedids: set[str] = set()  # CEL LINKEDID_END seen for these
        self.ended_at: float | None = None
        self.deadline: float | None = None
        self.originated_agent: str | None = None
        self.originate_exten: str | None = None
        self.external_dial: str | None = None
        self.stage: MissedAt | None = None
        self.in_queue = False
        self.last_agent: str | None = None  # the agent whose phone was dialed last for the call
        self.queue: str | None = None
        self.voicemail = False
        self.rang: list[str] = []
        self.consulted: list[str] = []
        self.segments: list[_Segment] = []
        self.active: dict[str, _Segment] = {}
        self.transfers: list[_TransferRecord] = []
        self.recordings: list[str] = []
        self.variables: dict[TrackedVariable, str] = {}
        self.hangup_by: HangupBy | None = None
        self.seq = 0

    def origin(self) -> _Chan | None:
        """The first channel that is a person's (agent or outside); plumbing only if none is."""
        best: _Chan | None = None
        fallback: _Chan | None = None
        for chan in self.channels.values():
            if chan.party.kind is PartyKind.PLUMBING:
                if fallback is None or _earlier(chan, fallback):
                    fallback = chan
            elif best is None or _earlier(chan, best):
                best = chan
        return best if best is not None else fallback

    def started(self) -> float:
        return min(chan.created for chan in self.channels.values())


def _earlier(a: _Chan, b: _Chan) -> bool:
    return a.order < b.order


def uniqueid_order(uniqueid: str) -> tuple[int, int, str]:
    """Sort key of a Uniqueid/Linkedid: ``[system-]epoch.seq`` by numbers, not as a string."""
    tail = uniqueid.rsplit("-", 1)[-1]
    epoch_text, _, seq_text = tail.partition(".")
    try:
        return (int(epoch_text), int(seq_text or 0), uniqueid)
    except ValueError:
        return (0, 0, uniqueid)


class CallTracker:
    """Typed AMI events in, :class:`CallOutcome` and :class:`LiveEvent` records out. Pure.

    ``handle(event)`` returns what the event caused (live events, and the outcomes of calls whose
    settle time has passed by the event's time); ``tick(now)`` finalizes settled calls when AMI
    is quiet; ``resync(channels, now)`` reconciles with a ``CoreShowChannels`` snapshot.
    """

    def __init__(self, settings: CallTrackerSettings | None = None) -> None:
        self.settings = settings or CallTrackerSettings()
        self._classifier = PartyClassifier(self.settings.parties)
        self._party_cache: dict[str, Party] = {}
        self._numbers: dict[str, ExternalParty] = {}
        self._chans: dict[str, _Chan] = {}
        self._calls: dict[str, _Call] = {}  # linkedid → call (every linkedid of every call)
        self._bridges: dict[str, set[_Chan]] = {}
        self._holding: set[str] = set()
        self._local_halves: dict[str, _Chan] = {}  # Local pair base name → the half seen first
        self._deadlines: list[tuple[float, int, _Call]] = []
        self._tiebreak = itertools.count()
        self._finished: OrderedDict[str, float] = OrderedDict()  # uniqueid → finalized at
        self._snapshot: list[CoreShowChannel] = []
        self._clock = 0.0
        self._active = 0
        self._session = 0  # FullyBooted events seen: one per AMI login
        self._booted_since_resync = False
        self._backfilling = False
        self.stats: Counter[str] = Counter()
        self._handlers: dict[type, Callable[[AmiEvent, float, list[TrackerOutput]], None]] = {
            Newchannel: self._on_channel,
            Newstate: self._on_channel,
            NewCallerid: self._on_channel,
            NewConnectedLine: self._on_channel,
            Newexten: self._on_newexten,
            VarSet: self._on_varset,
            DialBegin: self._on_dial_begin,
            BridgeEnter: self._on_bridge_enter,
            BridgeLeave: self._on_bridge_leave,
            BridgeDestroy: self._on_bridge_destroy,
            BlindTransfer: self._on_blind_transfer,
            AttendedTransfer: self._on_attended_transfer,
            LocalBridge: self._on_local_bridge,
            QueueCallerJoin: self._on_queue_join,
            QueueCallerLeave: self._on_queue_leave,
            AgentCalled: self._on_agent_called,
            Pickup: self._on_pickup,
            Hangup: self._on_hangup,
            HangupRequest: self._on_hangup_request,
            OriginateResponse: self._on_originate_response,
            CoreShowChannel: self._on_core_show_channel,
            CoreShowChannelsComplete: self._on_core_show_complete,
            FullyBooted: self._on_fully_booted,
            SuccessfulAuth: self._on_clock_only,
            Cel: self._on_cel,
        }

    # -----------------------------------------------------------------------------------------
    # public API

    @property
    def handled_events(self) -> frozenset[type]:
        """The typed AMI events this tracker has a handler for (its handler table's keys)."""
        return frozenset(self._handlers)

    @property
    def active_calls(self) -> int:
        """Calls being tracked (live, or ended and settling)."""
        return self._active

    @property
    def tracked_channels(self) -> int:
        """Channels held in memory (live ones, and those of calls not yet finalized)."""
        return len(self._chans)

    @property
    def clock(self) -> float:
        """The latest AMI time seen (or given to tick/resync)."""
        return self._clock

    def handle(self, event: AmiEvent) -> list[TrackerOutput]:
        out: list[TrackerOutput] = []
        when = event.time
        if when is not None and when > self._clock:
            self._clock = when
            if self._deadlines and self._deadlines[0][0] <= when:
                self._finalize_due(when, out)
        handler = self._handlers.get(type(event))
        if handler is None:
            self.stats["unused_event"] += 1
            return out
        handler(event, self._clock if when is None else when, out)
        return out

    def tick(self, now: float) -> list[TrackerOutput]:
        """Finalize calls whose settle time is over at ``now`` (AMI time, epoch seconds)."""
        out: list[TrackerOutput] = []
        self._clock = max(self._clock, now)
        self._finalize_due(now, out)
        return out

    def backfill(self, events: Iterable[AmiEvent]) -> list[TrackerOutput]:
        """Fold events that happened while AMI was away, rebuilt from Asterisk's CEL records
        (:func:`pbxlink.ami.cel.cel_to_events`), oldest first.

        They go through the same handlers as live events. Every call they touch is marked
        ``reconstructed``; live events (ringing, answered, transferred) are not produced for
        them (they are history by now), except ``ended`` for the calls that finalize. Events of
        calls already finalized are dropped like any late event, so a call is never reported
        twice."""
        out: list[TrackerOutput] = []
        self._backfilling = True
        try:
            for event in events:
                self.stats["backfilled_event"] += 1
                out.extend(self.handle(event))
        finally:
            self._backfilling = False
        return out

    def flush_ended(self) -> list[TrackerOutput]:
        """Finalize every call whose channels are all gone, settle time or not (end of input)."""
        return self.tick(float("inf")) if self._deadlines else []

    def open_calls(self) -> list[tuple[str, list[str]]]:
        """Calls with live channels: (call id, channel names). For end-of-input reports."""
        seen: dict[int, _Call] = {id(call): call for call in self._calls.values()}
        return [
            (
                self._call_id(call),
                sorted(ch.name for ch in call.channels.values() if ch.alive),
            )
            for call in seen.values()
            if call.live > 0
        ]

    def resync(self, channels: Sequence[CoreShowChannel], now: float) -> list[TrackerOutput]:
        """Reconcile with the PBX's list of live channels after an AMI (re)login."""
        out: list[TrackerOutput] = []
        self._clock = max(self._clock, now)
        self.stats["resync"] += 1
        listed = {item.channel.uniqueid: item for item in channels}
        touched: dict[int, _Call] = {}
        # Channels that ended while AMI was away. A channel already seen in this session's own
        # events may be newer than the listing (frames that arrive while the listing is taken
        # come before it): its Hangup will be seen live.
        session = self._session if self._booted_since_resync else None
        vanished = [
            c for c in self._chans.values() if c.alive and c.uniqueid not in listed and c.session != session
        ]
        self.stats["resync_kept_unlisted"] += sum(
            1 for c in self._chans.values() if c.alive and c.uniqueid not in listed
        ) - len(vanished)
        self._booted_since_resync = False
        for chan in vanished:
            call = chan.call
            call.end_inferred = True
            touched[id(call)] = call
            self._leave_bridge(chan)
            self._end_channel(chan, now, out)
        # channels we did not know, and what changed for those we did
        dialed: list[_Chan] = []  # adopted agents' phones that Dial()/Queue() created
        for item in channels:
            snap = item.channel
            if snap.uniqueid in self._finished:
                continue
            known = self._chans.get(snap.uniqueid)
            if known is None:
                adopted = self._channel(snap, now - item.duration_seconds, fresh=False)
                if adopted is None:
                    continue
                chan = adopted
                chan.call.start_inferred = True
                self._adopt_stage(chan, item)
                if chan.party.kind is PartyKind.AGENT and item.application in ("AppDial", "AppQueue"):
                    dialed.append(chan)
            else:
                chan = self._update(known, snap)
                if chan.call.start_inferred and item.duration_seconds > 0:
                    # first seen in this session's events (not at its start): its age is better
                    chan.created = min(chan.created, now - item.duration_seconds)
                    chan.order = (chan.created, chan.order[1])
            chan.up = snap.state is ChannelState.UP
            if chan.bridge != item.bridge_id:
                chan.call.gap_inferred = chan.call.gap_inferred or known is not None
                self._leave_bridge(chan)
                if item.bridge_id:
                    self._enter_bridge(chan, item.bridge_id)
            touched[id(chan.call)] = chan.call
        for chan in dialed:
            # ringing for the call when pbxlink came back (a phone already answered is left as
            # before: a "ringing" live event for it would be stale)
            if chan.alive and chan.ring_kind is None and chan.ringing and not chan.up and not chan.rung:
                chan.ring_kind = _RingKind.FOR_CALL
                self._rung(chan, now, out)
        for call in touched.values():
            if call.live > 0:
                self._recompute(call, now, out)
        self._finalize_due(now, out)
        return out

    def _adopt_stage(self, chan: _Chan, item: CoreShowChannel) -> None:
        """A channel first seen in a snapshot that runs Dial() or Queue(): the call was ringing
        agents (or waiting in a queue) when pbxlink came back, not lost in the IVR."""
        call = chan.call
        app = item.application.lower()
        if app not in ("dial", "queue") or chan.party.kind is PartyKind.AGENT or call.segments:
            return
        if app == "queue":
            call.in_queue = True
            call.queue = item.app_data.split(",", 1)[0] or call.queue
            call.stage = MissedAt.QUEUE
        elif call.stage is None and not call.voicemail:
            call.stage = MissedAt.AGENT

    # -----------------------------------------------------------------------------------------
    # channels and calls

    def _party(self, name: str) -> Party:
        # Channel names differ per channel only by their sequence suffix (and ;1/;2 for Local
        # halves): cache by the rest, so the cache holds one entry per endpoint.
        base, _, _ = name.rpartition("-")
        key = (base or name) + name[-2:] if name[-2:-1] == ";" else base or name
        party = self._party_cache.get(key)
        if party is None:
            party = self._classifier.classify(name)
            if party.local_base is not None:
                return party  # the pair's base name is per pair: not cacheable
            if len(self._party_cache) > 10_000:
                self._party_cache.clear()
            self._party_cache[key] = party
        return party

    def _channel(self, snap: Channel, when: float, *, fresh: bool) -> _Chan | None:
        """The tracked channel for a snapshot, created on first sight."""
        chan = self._chans.get(snap.uniqueid)
        if chan is not None:
            chan.session = self._session
            if self._backfilling:
                chan.session = _BACKFILLED  # the next snapshot decides whether it is still up
                chan.call.backfilled = True
            return self._update(chan, snap)
        if snap.uniqueid in self._finished:
            self.stats["late_event"] += 1
            return None
        call = self._calls.get(snap.linkedid)
        if call is None:
            call = _Call(snap.linkedid)
            call.start_inferred = not fresh
            self._calls[snap.linkedid] = call
            self._active += 1
        elif call.deadline is not None:
            call.deadline = None  # a new channel revives a call that was settling
        if self._backfilling:
            call.backfilled = True
        party = self._party(snap.name)
        chan = _Chan(snap, party, call, when)
        chan.session = _BACKFILLED if self._backfilling else self._session
        self._chans[snap.uniqueid] = chan
        call.channels[snap.uniqueid] = chan
        call.live += 1
        if party.local_base is not None:
            other = self._local_halves.pop(party.local_base, None)
            if other is not None and other.alive:
                chan.peer, other.peer = other, chan
            else:
                self._local_halves[party.local_base] = chan
        return chan

    def _update(self, chan: _Chan, snap: Channel) -> _Chan:
        if snap.caller_num is not None:
            chan.caller_num = snap.caller_num
        if snap.caller_name is not None:
            chan.caller_name = snap.caller_name
        if snap.state is ChannelState.UP:
            chan.up = True
        elif snap.state is ChannelState.RINGING:
            chan.ringing = True
        if snap.linkedid != chan.linkedid:
            chan.linkedid = snap.linkedid
            other = self._calls.get(snap.linkedid)
            if other is None:
                chan.call.linkedids.add(snap.linkedid)
                self._calls[snap.linkedid] = chan.call
            elif other is not chan.call:
                self._merge(chan.call, other)
        return chan

    def _merge(self, a: _Call, b: _Call) -> _Call:
        """One call from two: the older absorbs the newer. Returns the survivor."""
        if a is b:
            return a
        keep, gone = (a, b) if uniqueid_order(a.key) <= uniqueid_order(b.key) else (b, a)
        self.stats["merge"] += 1
        self._active -= 1
        for chan in gone.channels.values():
            chan.call = keep
            keep.channels[chan.uniqueid] = chan
        keep.live += gone.live
        for linkedid in gone.linkedids:
            self._calls[linkedid] = keep
        keep.linkedids |= gone.linkedids
        # Whatever part had to be inferred makes the merged call reconstructed.
        keep.start_inferred = keep.start_inferred or gone.start_inferred
        keep.end_inferred = keep.end_inferred or gone.end_inferred
        keep.gap_inferred = keep.gap_inferred or gone.gap_inferred
        keep.backfilled = keep.backfilled or gone.backfilled
        keep.ended_linkedids |= gone.ended_linkedids
        if gone.ended_at is not None and (keep.ended_at is None or gone.ended_at > keep.ended_at):
            keep.ended_at = gone.ended_at
        keep.originated_agent = keep.originated_agent or gone.originated_agent
        keep.originate_exten = keep.originate_exten or gone.originate_exten
        keep.external_dial = keep.external_dial or gone.external_dial
        keep.in_queue = keep.in_queue or gone.in_queue
        keep.last_agent = keep.last_agent or gone.last_agent
        keep.queue = keep.queue or gone.queue
        keep.voicemail = keep.voicemail or gone.voicemail
        if keep.stage is None:
            keep.stage = gone.stage
        for agent in gone.rang:
            if agent not in keep.rang:
                keep.rang.append(agent)
        for agent in gone.consulted:
            if agent not in keep.consulted:
                keep.consulted.append(agent)
        # The newer group's talk segments were relative to its own other party (e.g. an
        # agent-to-agent consultation); the merged call recomputes who talks with its party.
        keep.transfers.extend(gone.transfers)
        keep.transfers.sort(key=lambda t: t.at)
        keep.recordings.extend(r for r in gone.recordings if r not in keep.recordings)
        for variable, value in gone.variables.items():
            keep.variables.setdefault(variable, value)
        keep.hangup_by = keep.hangup_by or gone.hangup_by
        keep.seq = max(keep.seq, gone.seq)
        keep.deadline = None if keep.live > 0 else keep.deadline
        gone.deadline = None
        gone.channels = {}
        return keep

    def _join(self, *chans: _Chan | None) -> _Call | None:
        present = [c for c in chans if c is not None]
        if not present:
            return None
        call = present[0].call
        for chan in present[1:]:
            call = self._merge(call, chan.call)
        return call

    def _end_channel(self, chan: _Chan, when: float, out: list[TrackerOutput]) -> None:
        if not chan.alive:
            return
        chan.alive = False
        call = chan.call
        call.live -= 1
        if call.ended_at is None or when > call.ended_at:
            call.ended_at = when
        base = chan.party.local_base
        if base is not None and self._local_halves.get(base) is chan:
            del self._local_halves[base]
        if call.live > 0:
            self._recompute(call, when, out)
        else:
            call.live = 0
            self._close_segments(call, when)
            if call.linkedids <= call.ended_linkedids:
                self._finalize(call, out)  # Asterisk already said every linkedid is finished
                return
            call.deadline = when + self.settings.settle_seconds
            heapq.heappush(self._deadlines, (call.deadline, next(self._tiebreak), call))

    # -----------------------------------------------------------------------------------------
    # bridges and who talks with whom

    def _enter_bridge(self, chan: _Chan, bridge_id: str) -> None:
        chan.bridge = bridge_id
        self._bridges.setdefault(bridge_id, set()).add(chan)

    def _leave_bridge(self, chan: _Chan) -> None:
        if chan.bridge is None:
            return
        members = self._bridges.get(chan.bridge)
        if members is not None:
            members.discard(chan)
        chan.bridge = None

    def _other_party(self, call: _Call) -> tuple[list[_Chan], str | None]:
        """The channels the agents talk *with*, and the agent to leave out (internal caller)."""
        externals = [
            c
            for c in call.channels.values()
            if c.alive and c.party.kind is PartyKind.EXTERNAL and c.forward_agent is None
        ]
        if externals:
            return externals, None
        origin = call.origin()
        if origin is not None and origin.alive and origin.party.kind is PartyKind.AGENT:
            return [origin], origin.party.endpoint
        return [], None

    def _talking_agents(self, call: _Call) -> dict[str, _Chan]:
        party, exclude = self._other_party(call)
        if not party:
            return {}
        seen: set[_Chan] = set(party)
        todo = list(party)
        agents: dict[str, _Chan] = {}
        while todo:
            chan = todo.pop()
            neighbours: list[_Chan] = []
            if chan.bridge is not None and chan.bridge not in self._holding:
                neighbours.extend(self._bridges.get(chan.bridge, ()))
            if chan.peer is not None and chan.peer.alive:
                neighbours.append(chan.peer)
            for other in neighbours:
                if other in seen or not other.alive:
                    continue
                seen.add(other)
                todo.append(other)
                agent = other.agent or other.forward_agent
                if agent is not None and agent != exclude:
                    agents.setdefault(agent, other)
        return agents

    def _recompute(self, call: _Call, when: float, out: list[TrackerOutput]) -> None:
        talking = self._talking_agents(call)
        for agent in [a for a in call.active if a not in talking]:
            segment = call.active[agent]
            if not talking and segment.chan.alive and self._other_party(call)[0]:
                # The agent stepped out of the bridge but is still on the call and nobody else
                # took over: a hold, a consultation. Still the same handling.
                continue
            call.active.pop(agent).end = when
        for agent in sorted(talking.keys() - call.active.keys()):
            rejoin = next(
                (
                    s
                    for s in reversed(call.segments)
                    if s.agent == agent and s.end is not None and when - s.end <= _REJOIN_SECONDS
                ),
                None,
            )
            if rejoin is not None:
                rejoin.end = None
                call.active[agent] = rejoin
                continue
            segment = _Segment(agent, talking[agent], when)
            call.segments.append(segment)
            call.active[agent] = segment
            for transfer in call.transfers:
                if transfer.to is None and transfer.at <= when and transfer.from_agent != agent:
                    transfer.to = agent
            self._live(call, LiveEventType.ANSWERED, when, out, agent=agent)

    def _close_segments(self, call: _Call, when: float) -> None:
        for segment in call.active.values():
            segment.end = when
        call.active.clear()

    # -----------------------------------------------------------------------------------------
    # event handlers

    def _on_channel(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, Newchannel | Newstate | NewCallerid | NewConnectedLine)
        chan = self._channel(event.channel, when, fresh=isinstance(event, Newchannel))
        if (
            chan is not None
            and chan.ring_kind is not None
            and not chan.rung
            and event.channel.state in (ChannelState.RINGING, ChannelState.UP)
        ):
            self._rung(chan, when, out)

    def _rung(self, chan: _Chan, when: float, out: list[TrackerOutput]) -> None:
        """A dialed agent's phone rings (or answers at once): it rang for this call."""
        chan.rung = True
        agent = chan.party.endpoint
        call = chan.call
        target = call.consulted if chan.ring_kind is _RingKind.CONSULTATION else call.rang
        if agent not in target:
            target.append(agent)
        if (
            chan.ring_kind is _RingKind.FOR_CALL
            and not call.segments
            and not call.voicemail
            and self._rings_with_others(call, agent)
        ):
            call.stage = MissedAt.QUEUE  # several agents rung at once: a group
        self._live(call, LiveEventType.RINGING, when, out, agent=agent)

    def _on_newexten(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, Newexten)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None:
            return
        if chan.party.kind is PartyKind.AGENT:
            return
        if event.application.lower() == "voicemail":
            chan.call.voicemail = True
        exten = event.channel.exten
        if exten and self._classifier.is_agent_endpoint(exten):
            chan.agent_exten = exten  # the caller's dialplan is at an agent's extension

    def _on_varset(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, VarSet)
        chan = self._chans.get(event.uniqueid)
        if chan is None:
            self.stats["varset_unknown_channel"] += 1
            return
        call = chan.call
        if event.variable is TrackedVariable.MIXMONITOR_FILENAME:
            if event.value and event.value not in call.recordings:
                call.recordings.append(event.value)
        else:
            call.variables[event.variable] = event.value

    def _on_dial_begin(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, DialBegin)
        dest = self._channel(event.dest, when, fresh=False)
        caller = None if event.caller is None else self._channel(event.caller, when, fresh=False)
        call = self._join(caller, dest)
        if dest is None or call is None:
            return
        kind = dest.party.kind
        dest.dialer = caller
        if caller is None and kind is PartyKind.AGENT and call.originated_agent is None:
            call.originated_agent = dest.party.endpoint  # Originate: the agent's leg rings first
        if caller is not None and kind is PartyKind.AGENT:
            caller.dialed_agents.append(dest.party.endpoint)
        if kind is PartyKind.AGENT:
            dest.ring_kind = _ring_kind(caller)
            if dest.ring_kind is _RingKind.FOR_CALL:
                call.last_agent = dest.party.endpoint
                self._ringing_stage(call, dest.party.endpoint)
            if (dest.up or dest.ringing) and not dest.rung:
                # the phone's 180 can be reported before the DialBegin that caused it
                self._rung(dest, when, out)
        elif kind is PartyKind.EXTERNAL:
            origin = call.origin()
            if origin is not None and origin.party.kind is PartyKind.AGENT:
                number = dialed_number(event.dial_string)
                if call.external_dial is None and number:
                    call.external_dial = number
                self._live(call, LiveEventType.RINGING, when, out, agent=origin.party.endpoint)
            elif (
                origin is not None
                and origin is not dest
                and origin.party.kind is PartyKind.EXTERNAL
                and not call.segments
                and _ring_kind(caller) is _RingKind.FOR_CALL
            ):
                # an inbound call nobody has answered yet dialed out again: an agent's follow-me
                # or call forward (after an answer it is a transfer out, not a forward)
                agent = self._forwarding_agent(caller, call)
                if agent is not None:
                    dest.forward_agent = agent
                    dest.forward_number = dialed_number(event.dial_string)
                    self._ringing_stage(call, agent)

    def _ringing_stage(self, call: _Call, agent: str) -> None:
        """The call now rings ``agent`` (their phone or their forward): where it would be lost."""
        if call.segments or call.voicemail:
            return
        grouped = call.in_queue or self._rings_with_others(call, agent)
        call.stage = MissedAt.QUEUE if grouped else MissedAt.AGENT

    def _rings_with_others(self, call: _Call, agent: str) -> bool:
        """Does another agent ring for the call right now (their phone, or their forward)?"""
        for chan in call.channels.values():
            if not chan.alive or chan.up:
                continue
            if chan.forward_agent is not None and chan.forward_agent != agent:
                return True
            if (
                chan.rung
                and chan.ring_kind is _RingKind.FOR_CALL
                and chan.party.kind is PartyKind.AGENT
                and chan.party.endpoint != agent
            ):
                return True
        return False

    def _forwarding_agent(self, caller: _Chan | None, call: _Call) -> str | None:
        """Whose forward an outside leg of an inbound call is: the agent's extension the dial
        chain's dialplan last entered, else the agent whose phone the call rang last."""
        current = caller
        seen: set[_Chan] = set()
        while current is not None and current not in seen:
            seen.add(current)
            if current.agent_exten is not None:
                return current.agent_exten
            if current.dialer is not None:
                current = current.dialer
            elif current.peer is not None and current.peer not in seen:
                current = current.peer
            else:
                break
        return call.last_agent

    def _on_bridge_enter(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, BridgeEnter)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None:
            return
        bridge_id = event.bridge.uniqueid
        if event.bridge.holding:
            self._holding.add(bridge_id)
        self._leave_bridge(chan)
        members = self._bridges.get(bridge_id, set())
        call = chan.call
        if not event.bridge.holding:
            for other in list(members):
                if event.bridge.type == "basic" or _joins_conference(call, other.call):
                    call = self._merge(call, other.call)
        self._enter_bridge(chan, bridge_id)
        self._recompute(call, when, out)

    def _on_bridge_leave(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, BridgeLeave)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None:
            return
        self._leave_bridge(chan)
        self._recompute(chan.call, when, out)

    def _on_bridge_destroy(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, BridgeDestroy)
        for chan in self._bridges.pop(event.bridge.uniqueid, set()):
            chan.bridge = None
        self._holding.discard(event.bridge.uniqueid)

    def _on_blind_transfer(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, BlindTransfer)
        if event.result is not TransferResult.SUCCESS:
            return
        transferer = self._opt_channel(event.transferer, when)
        transferee = self._opt_channel(event.transferee, when)
        call = self._join(transferer, transferee)
        if call is None:
            return
        from_agent = None if transferer is None else transferer.agent
        to = event.extension or None
        call.transfers.append(_TransferRecord(TransferKind.BLIND, from_agent, to, when))
        self._live(
            call,
            LiveEventType.TRANSFERRED,
            when,
            out,
            agent=from_agent,
            from_agent=from_agent,
            to_agent=to,
        )

    def _on_attended_transfer(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, AttendedTransfer)
        if event.result is not TransferResult.SUCCESS:
            return
        orig = self._opt_channel(event.orig_transferer, when)
        second = self._opt_channel(event.second_transferer, when)
        transferee = self._opt_channel(event.transferee, when)
        target = self._opt_channel(event.transfer_target, when)
        one = self._opt_channel(event.local_one, when)
        two = self._opt_channel(event.local_two, when)
        call = self._join(orig, second, transferee, target, one, two)
        if call is None:
            return
        if one is not None and two is not None:
            one.peer, two.peer = two, one
        from_agent = next((c.agent for c in (orig, second) if c is not None and c.agent), None)
        self._recompute(call, when, out)
        to = None if target is None else self._resolve_agent(target, exclude=from_agent)
        if to is None:
            # Asterisk leaves TransferTarget out when the consultation's Local half was already
            # moved into the caller's bridge: the target is whoever now talks with the caller.
            talking = [s for s in call.active.values() if s.agent != from_agent]
            to = max(talking, key=lambda s: s.start).agent if talking else None
        call.transfers.append(_TransferRecord(TransferKind.ATTENDED, from_agent, to, when))
        self._live(
            call,
            LiveEventType.TRANSFERRED,
            when,
            out,
            agent=from_agent,
            from_agent=from_agent,
            to_agent=to,
        )

    def _resolve_agent(self, chan: _Chan, exclude: str | None) -> str | None:
        """The agent behind a channel: itself, or through Local pairs and bridges."""
        seen: set[_Chan] = set()
        todo = [chan]
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            agent = current.agent
            if agent is not None and agent != exclude:
                return agent
            for dialed in current.dialed_agents:
                if dialed != exclude:
                    return dialed
            if current.peer is not None:
                todo.append(current.peer)
            if current.bridge is not None:
                todo.extend(self._bridges.get(current.bridge, ()))
        return None

    def _on_local_bridge(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, LocalBridge)
        one = self._channel(event.local_one, when, fresh=False)
        two = self._channel(event.local_two, when, fresh=False)
        if one is None or two is None:
            return
        one.peer, two.peer = two, one
        self._join(one, two)

    def _on_queue_join(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, QueueCallerJoin)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None:
            return
        call = chan.call
        call.in_queue = True
        call.queue = event.queue
        if not call.segments and not call.voicemail:
            call.stage = MissedAt.QUEUE

    def _on_queue_leave(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, QueueCallerLeave)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is not None:
            chan.call.in_queue = False

    def _on_agent_called(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, AgentCalled)
        # who rang is decided by the member channel's own state (a busy member never rings)
        self._join(self._opt_channel(event.channel, when), self._opt_channel(event.member, when))

    def _on_pickup(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, Pickup)
        picker = self._channel(event.picker, when, fresh=False)
        target = self._channel(event.target, when, fresh=False)
        call = self._join(target, picker)
        if call is not None:
            self.stats["pickup"] += 1
            self._recompute(call, when, out)

    def _on_hangup(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, Hangup)
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None:
            return
        self._leave_bridge(chan)
        self._end_channel(chan, when, out)

    def _on_hangup_request(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, HangupRequest)
        if event.soft or event.channel.state is ChannelState.BUSY:
            # BUSY: the PBX has just indicated busy/congestion to this leg (Busy(),
            # Congestion()) and hangs it up itself; the party did not hang up
            return
        chan = self._channel(event.channel, when, fresh=False)
        if chan is None or chan.party.kind is PartyKind.PLUMBING:
            return
        call = chan.call
        if chan.up or chan.party.kind is PartyKind.EXTERNAL or chan is call.origin():
            call.hangup_by = HangupBy.AGENT if chan.party.kind is PartyKind.AGENT else HangupBy.EXTERNAL

    def _on_originate_response(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, OriginateResponse)
        chan = None if event.uniqueid is None else self._chans.get(event.uniqueid)
        if chan is None and event.channel:
            # A failed Originate reports no Uniqueid: take the newest live channel of that
            # dial string ("PJSIP/101" → "PJSIP/101-0000002a") that an Originate rang.
            prefix = event.channel + "-"
            rung = [
                c
                for c in self._chans.values()
                if c.alive
                and c.name.startswith(prefix)
                and c.call.originated_agent is not None
                and c.call.originate_exten is None
            ]
            chan = max(rung, key=lambda c: c.order) if rung else None
        if chan is not None and event.exten:
            chan.call.originate_exten = event.exten

    def _on_core_show_channel(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        assert isinstance(event, CoreShowChannel)
        self._snapshot.append(event)

    def _on_core_show_complete(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        snapshot, self._snapshot = self._snapshot, []
        out.extend(self.resync(snapshot, when))

    def _on_fully_booted(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        self._snapshot = []  # a new session: a listing in progress belongs to the old one
        self._session += 1
        self._booted_since_resync = True

    def _on_cel(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        """CEL ``LINKEDID_END``: Asterisk has destroyed the last channel of a linkedid. Once
        that is so for every linkedid of a call whose channels are all gone, the call is over:
        its outcome goes out now instead of after ``settle_seconds``."""
        assert isinstance(event, Cel)
        if event.type is not CelEventType.LINKEDID_END:
            return
        call = self._calls.get(event.linkedid)
        if call is None:
            return  # already finalized (or never followed)
        call.ended_linkedids.add(event.linkedid)
        if call.live == 0 and call.channels and call.linkedids <= call.ended_linkedids:
            self.stats["final_on_linkedid_end"] += 1
            self._finalize(call, out)

    def _on_clock_only(self, event: AmiEvent, when: float, out: list[TrackerOutput]) -> None:
        """Only its Timestamp matters (handle() has already advanced the clock)."""

    def _opt_channel(self, snap: Channel | None, when: float) -> _Chan | None:
        return None if snap is None else self._channel(snap, when, fresh=False)

    # -----------------------------------------------------------------------------------------
    # finalizing

    def _finalize_due(self, now: float, out: list[TrackerOutput]) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, call = heapq.heappop(self._deadlines)
            if call.deadline != deadline or call.live > 0 or not call.channels:
                continue  # revived, merged away, or rescheduled
            self._finalize(call, out)

    def _finalize(self, call: _Call, out: list[TrackerOutput]) -> None:
        outcome = self._outcome(call)
        for linkedid in call.linkedids:
            if self._calls.get(linkedid) is call:
                del self._calls[linkedid]
        for uniqueid in call.channels:
            self._chans.pop(uniqueid, None)
            self._remember_finished(uniqueid, self._clock)
        call.channels = {}
        call.deadline = None
        self._active -= 1
        if outcome is None:
            self.stats["call_without_parties"] += 1
            return
        self.stats["outcome"] += 1
        self._live(
            call,
            LiveEventType.ENDED,
            outcome.ended_at.timestamp(),
            out,
            agent=outcome.last_handled_by or outcome.initiator,
            direction=outcome.direction,
            external=outcome.external,
            line=outcome.line,
        )
        out.append(outcome)

    def _remember_finished(self, uniqueid: str, when: float) -> None:
        finished = self._finished
        finished[uniqueid] = when
        horizon = when - _FINISHED_SECONDS
        while finished:
            oldest, at = next(iter(finished.items()))
            if at >= horizon and len(finished) <= _FINISHED_MEMORY:
                break
            del finished[oldest]

    def _call_id(self, call: _Call) -> str:
        return f"{self.settings.node}:{call.key}"

    def _direction(self, call: _Call) -> Direction | None:
        origin = call.origin()
        if origin is None or origin.party.kind is PartyKind.PLUMBING:
            return None
        if origin.party.kind is PartyKind.EXTERNAL:
            return Direction.INBOUND
        has_external = any(c.party.kind is PartyKind.EXTERNAL for c in call.channels.values())
        if has_external:
            return Direction.OUTBOUND
        if call.originated_agent is not None:
            # A click-to-call whose agent leg never answered: the customer was never dialed.
            # Outbound, unless the Originate targeted another agent's extension.
            exten = call.originate_exten
            if exten is None or not self._classifier.is_agent_endpoint(exten):
                return Direction.OUTBOUND
        return Direction.INTERNAL

    def _external(self, call: _Call, direction: Direction) -> ExternalParty | None:
        if direction is Direction.INTERNAL:
            return None
        raw: str | None
        origin = call.origin()
        if direction is Direction.INBOUND:
            raw = None if origin is None else origin.caller_num
        else:
            raw = call.external_dial or call.originate_exten
            if raw is None:
                raw = next(
                    (
                        c.exten or c.caller_num
                        for c in call.channels.values()
                        if c.party.kind is PartyKind.EXTERNAL
                    ),
                    None,
                )
        return self._external_party(raw or "")

    def _external_party(self, raw: str) -> ExternalParty:
        if not raw:
            return ExternalParty(raw="", e164=None)
        party = self._numbers.get(raw)
        if party is None:
            party = ExternalParty(raw=raw, e164=normalize(raw, self.settings.default_region).e164)
            if len(self._numbers) > 10_000:
                self._numbers.clear()
            self._numbers[raw] = party
        return party

    def _line(self, call: _Call, direction: Direction) -> str | None:
        if direction is not Direction.INBOUND:
            return None
        did = call.variables.get(TrackedVariable.INBOUND_DID)
        if did:
            return did
        origin = call.origin()
        if origin is None or not origin.exten or origin.exten == "s":
            return None
        return origin.exten

    def _outcome(self, call: _Call) -> CallOutcome | None:
        direction = self._direction(call)
        if direction is None:
            return None
        origin = call.origin()
        assert origin is not None
        started = call.started()
        ended = call.ended_at if call.ended_at is not None else started
        segments = tuple(
            _Span(s.agent, s.start, s.end if s.end is not None else ended, s.number) for s in call.segments
        )
        answered = bool(segments)
        handler_agents = {s.agent for s in segments}
        initiator: str | None = None
        if direction is not Direction.INBOUND:
            initiator = call.originated_agent or origin.agent
        missed_at: MissedAt | None = None
        if not answered:
            if direction is Direction.INBOUND:
                missed_at = MissedAt.VOICEMAIL if call.voicemail else (call.stage or MissedAt.IVR)
            elif direction is Direction.OUTBOUND:
                reached = any(c.party.kind is PartyKind.EXTERNAL for c in call.channels.values())
                missed_at = MissedAt.EXTERNAL if reached else MissedAt.AGENT
            elif any(agent != initiator for agent in call.rang) or call.stage is not None:
                missed_at = MissedAt.AGENT
        answered_at = min((s.answered_at for s in segments), default=None)
        last = max(segments, key=lambda s: (s.ended_at, s.answered_at), default=None)
        external = self._external(call, direction)
        line = self._line(call, direction)
        return CallOutcome(
            id=self._call_id(call),
            linkedids=tuple(sorted(call.linkedids, key=uniqueid_order)),
            direction=direction,
            answered=answered,
            missed_at=missed_at,
            external=external,
            line=line,
            initiator=initiator,
            first_answered_by=segments[0].agent if segments else None,
            last_handled_by=None if last is None else last.agent,
            handlers=tuple(
                HandlerSegment(
                    agent=s.agent,
                    answered_at=Instant.from_epoch(s.answered_at),
                    ended_at=Instant.from_epoch(s.ended_at),
                    talk_seconds=seconds(s.ended_at - s.answered_at),
                    forwarded_to=UNSET if s.forwarded_to is None else s.forwarded_to,
                )
                for s in segments
            ),
            rang=tuple(
                agent
                for agent in [
                    *call.rang,
                    *(a for a in call.consulted if a not in call.rang and a in handler_agents),
                ]
                if agent != initiator
            ),
            transfers=tuple(
                Transfer(kind=t.kind, from_agent=t.from_agent, to=t.to, at=Instant.from_epoch(t.at))
                for t in call.transfers
            ),
            queue=call.queue,
            started_at=Instant.from_epoch(started),
            answered_at=None if answered_at is None else Instant.from_epoch(answered_at),
            ended_at=Instant.from_epoch(ended),
            ring_seconds=seconds((answered_at if answered_at is not None else ended) - started),
            talk_seconds=seconds(_covered_seconds((s.answered_at, s.ended_at) for s in segments)),
            hangup_by=None if call.end_inferred else (call.hangup_by or HangupBy.SYSTEM),
            recordings=tuple(call.recordings),
            routing=self._routing(call, external, line),
            reconstructed=call.start_inferred or call.end_inferred or call.gap_inferred or call.backfilled,
        )

    def _routing(
        self, call: _Call, external: ExternalParty | None, line: str | None
    ) -> RoutingDecision | None:
        variables = call.variables
        agi_status = variables.get(TrackedVariable.AGISTATUS)
        asked = any(v.name.startswith("PBXLINK_ROUTE") and value for v, value in variables.items())
        if not asked and agi_status is None:
            return None
        if not asked and agi_status != "SUCCESS":
            # the dialplan asked pbxlink and got no answer (AGI connect refused, hung up …)
            return RoutingDecision(
                target=None,
                agent=None,
                reason=f"agi_{agi_status.lower()}" if agi_status else "agi_failure",
                owner=None,
                rule=None,
                caller_e164=None if external is None else external.e164,
                line=line,
                decided_in_ms=None,
            )
        target = variables.get(TrackedVariable.PBXLINK_ROUTE) or None
        agent = variables.get(TrackedVariable.PBXLINK_ROUTE_AGENT) or None
        if agent is None and target is not None:
            agent = target.rsplit("/", 1)[-1] or None
        millis_text = variables.get(TrackedVariable.PBXLINK_ROUTE_MS)
        try:
            millis = None if not millis_text else float(millis_text)
        except ValueError:
            millis = None
        return RoutingDecision(
            target=target,
            agent=agent,
            reason=variables.get(TrackedVariable.PBXLINK_ROUTE_REASON, ""),
            owner=variables.get(TrackedVariable.PBXLINK_ROUTE_OWNER) or None,
            rule=variables.get(TrackedVariable.PBXLINK_ROUTE_RULE) or None,
            caller_e164=None if external is None else external.e164,
            line=line,
            decided_in_ms=millis,
        )

    # -----------------------------------------------------------------------------------------
    # live events

    def _live(
        self,
        call: _Call,
        kind: LiveEventType,
        when: float,
        out: list[TrackerOutput],
        *,
        agent: str | None,
        from_agent: str | None = None,
        to_agent: str | None = None,
        direction: Direction | None = None,
        external: ExternalParty | None = None,
        line: str | None = None,
    ) -> None:
        if self._backfilling and kind is not LiveEventType.ENDED:
            return  # history by now: only the outcome (and its "ended") goes out
        if direction is None:
            direction = self._direction(call)
            if direction is None:
                return
            external = self._external(call, direction)
            if external is not None and not external.raw and direction is Direction.OUTBOUND:
                external = None  # a click-to-call's customer number is not known yet
            line = self._line(call, direction)
        call.seq += 1
        out.append(
            LiveEvent(
                type=kind,
                call_id=self._call_id(call),
                seq=call.seq,
                time=Instant.from_epoch(when),
                direction=direction,
                external=external,
                line=line,
                agent=agent,
                queue=call.queue,
                # written on transfers only
                from_agent=from_agent if kind is LiveEventType.TRANSFERRED else UNSET,
                to_agent=to_agent if kind is LiveEventType.TRANSFERRED else UNSET,
            )
        )


def _joins_conference(a: _Call, b: _Call) -> bool:
    """Two calls meet in a multi-party bridge (ConfBridge): an agent who dialed into it (a call
    with no outside party) joins the outside caller's call; two outside callers stay apart."""
    if a is b:
        return False
    a_out = any(c.party.kind is PartyKind.EXTERNAL for c in a.channels.values())
    b_out = any(c.party.kind is PartyKind.EXTERNAL for c in b.channels.values())
    if a_out == b_out:
        return False
    agents_only = b if a_out else a
    origin = agents_only.origin()
    return origin is not None and origin.party.kind is PartyKind.AGENT


def _ring_kind(caller: _Chan | None) -> _RingKind:
    """Why an agent's phone is dialed: for the call, or for a transfer's consultation.

    Follows the dial chain up from the dialing channel: a person's channel (the caller, an
    agent placing a call) or an Originate means the ring is for the call; a Local half whose
    pair nobody dialed was created by a transfer feature (``Atxfer``) to consult.
    """
    current = caller
    seen: set[_Chan] = set()
    while current is not None and current not in seen:
        seen.add(current)
        if current.party.kind is not PartyKind.PLUMBING:
            return _RingKind.FOR_CALL
        if current.dialer is not None:
            current = current.dialer
        elif current.peer is not None and current.peer not in seen:
            current = current.peer
        else:
            return _RingKind.CONSULTATION
    return _RingKind.FOR_CALL


def dialed_number(dial_string: str) -> str | None:
    """The number in a Dial() string: ``0981234567@trunk`` → ``0981234567``;
    ``trunk/sip:+380981234567@carrier`` → ``+380981234567``."""
    text = dial_string.strip()
    if not text:
        return None
    if "/" in text:
        text = text.split("/", 1)[1]
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
    user = text.split("@", 1)[0]
    return user or None


def _covered_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total = 0.0
    current_start: float | None = None
    current_end = 0.0
    for start, end in sorted(intervals):
        if current_start is None or start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total += current_end - current_start
    return total


# The AMI event names the tracker uses, derived from its handler table: decode only these
# (``AmiDecoder(TRACKED_EVENTS)``) and nothing it handles is dropped.
TRACKED_EVENTS = events_decoding_into(CallTracker().handled_events)
