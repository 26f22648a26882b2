"""CallTracker's lifecycle on real transcripts: settle time, tick, flat memory, stragglers, resync."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from pbxlink.ami.decode import AmiDecoder
from pbxlink.ami.events import (
    AmiEvent,
    Cel,
    CelEventType,
    Channel,
    ChannelState,
    CoreShowChannel,
    FullyBooted,
    Hangup,
)
from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.model import CallOutcome, LiveEvent, LiveEventType, MissedAt
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker, CallTrackerSettings
from pbxlink.daemon.replay import read_chunks
from pbxlink.wire.instant import Instant

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ami"
SETTINGS = CallTrackerSettings(parties=PartyRules(r"^1\d\d$", frozenset({"trunk"})), settle_seconds=2.0)


def _events(name: str, decoder: AmiDecoder | None = None) -> list[AmiEvent]:
    decoder = decoder or AmiDecoder(TRACKED_EVENTS)
    framer = AmiFramer()
    events: list[AmiEvent] = []
    path = DATA_DIR / f"{name}.ami"
    if not path.exists():
        path = DATA_DIR / f"{name}.ami.gz"
    for chunk in read_chunks(path):
        for frame in framer.feed(chunk):
            event = decoder.decode(frame)
            if event is not None:
                events.append(event)
    return events


def _feed(tracker: CallTracker, events: Sequence[AmiEvent]) -> list[CallOutcome | LiveEvent]:
    out: list[CallOutcome | LiveEvent] = []
    for event in events:
        out.extend(tracker.handle(event))
    return out


def _without_cel(events: Sequence[AmiEvent]) -> list[AmiEvent]:
    """The same session as Asterisk would send it with CEL off (no LINKEDID_END)."""
    return [e for e in events if not isinstance(e, Cel)]


def _outcome_positions(tracker: CallTracker, events: Sequence[AmiEvent]) -> list[int]:
    """The index of every event that made the tracker hand out an outcome."""
    return [
        i for i, event in enumerate(events) if any(isinstance(o, CallOutcome) for o in tracker.handle(event))
    ]


def test_an_outcome_goes_out_at_linkedid_end_without_waiting_for_the_settle_time() -> None:
    """Asterisk may send LINKEDID_END before the last channel's own Hangup event (it does in
    this recording): the outcome goes out at whichever of the two comes last, with no tick."""
    tracker = CallTracker(SETTINGS)
    events = _events("inbound_answered")
    [linkedid_end] = [e for e in events if isinstance(e, Cel) and e.type is CelEventType.LINKEDID_END]
    last_hangup = max(i for i, e in enumerate(events) if isinstance(e, Hangup))
    assert _outcome_positions(tracker, events) == [max(events.index(linkedid_end), last_hangup)]
    assert tracker.active_calls == 0
    assert tracker.tick(tracker.clock + 100) == []  # exactly once


def test_a_call_waits_until_every_one_of_its_linkedids_has_ended() -> None:
    """A pickup merges two linkedids: the first LINKEDID_END alone is not the end."""
    tracker = CallTracker(SETTINGS)
    events = _events("call_pickup_group")
    ends = [e for e in events if isinstance(e, Cel) and e.type is CelEventType.LINKEDID_END]
    assert len({e.linkedid for e in ends}) >= 2
    [position] = _outcome_positions(tracker, events)
    assert position >= max(events.index(e) for e in ends[:-1])  # not at the first linkedid's end
    last_hangup = max(i for i, e in enumerate(events) if isinstance(e, Hangup))
    assert position == max(events.index(ends[-1]), last_hangup)


def test_an_outcome_waits_for_the_settle_time_after_the_last_hangup_when_cel_is_off() -> None:
    tracker = CallTracker(SETTINGS)
    events = _without_cel(_events("inbound_answered"))
    assert not [o for o in _feed(tracker, events) if isinstance(o, CallOutcome)]
    last_hangup = max(e.time or 0.0 for e in events if isinstance(e, Hangup))
    assert tracker.tick(last_hangup + 1.9) == []
    settled = tracker.tick(last_hangup + 2.0)
    outcomes = [o for o in settled if isinstance(o, CallOutcome)]
    assert len(outcomes) == 1
    assert outcomes[0].ended_at == Instant.from_epoch(last_hangup)
    ended = [o for o in settled if isinstance(o, LiveEvent)]
    assert [e.type for e in ended] == [LiveEventType.ENDED]
    assert tracker.tick(last_hangup + 100) == []  # exactly once


def test_the_next_call_s_events_finalize_a_settled_call_without_a_tick() -> None:
    tracker = CallTracker(SETTINGS)
    first = _events("inbound_answered")
    # recorded later in the same lab run; its first timestamped event is the next AMI moment
    following = next(e for e in _events("ivr_hangup") if e.time is not None)
    assert (following.time or 0) > (first[-1].time or 0) + SETTINGS.settle_seconds
    out = _feed(tracker, [*first, following])
    [outcome] = [o for o in out if isinstance(o, CallOutcome)]
    first_channel = next(e for e in first if type(e).__name__ == "Newchannel")
    assert outcome.id == f"pbx1:{first_channel.channel.linkedid}"  # type: ignore[union-attr]


def test_finished_calls_leave_no_state_behind() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("load_100_overlapping")
    out = _feed(tracker, events)
    out += tracker.tick(tracker.clock + 60)
    assert len([o for o in out if isinstance(o, CallOutcome)]) == 100
    assert tracker.active_calls == 0
    assert tracker.tracked_channels == 0
    assert tracker.open_calls() == []


def test_replaying_the_hangups_of_a_finished_call_gives_no_second_outcome() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("blind_transfer_refer")
    first = [o for o in _feed(tracker, events) + tracker.flush_ended() if isinstance(o, CallOutcome)]
    assert len(first) == 1
    stragglers = [e for e in events if isinstance(e, Hangup)]
    again = _feed(tracker, stragglers) + tracker.flush_ended()
    assert [o for o in again if isinstance(o, CallOutcome)] == []
    assert tracker.stats["late_event"] == len(stragglers)


def test_a_call_cut_before_its_end_is_reported_open_not_finalized() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("attended_transfer_completed")
    cut = next(i for i, e in enumerate(events) if isinstance(e, Hangup))
    out = _feed(tracker, events[:cut]) + tracker.flush_ended()
    assert [o for o in out if isinstance(o, CallOutcome)] == []
    [(call_id, channels)] = tracker.open_calls()
    assert call_id.startswith("pbx1:")
    assert any(name.startswith("PJSIP/trunk-") for name in channels)


def test_a_resync_that_lists_nothing_ends_the_calls_it_knew_as_reconstructed() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("inbound_answered")
    bridged = next(i for i, e in enumerate(events) if type(e).__name__ == "BridgeEnter")
    _feed(tracker, events[: bridged + 2])  # both parties in the bridge, then AMI is lost
    resync_at = (events[bridged + 1].time or 0.0) + 30.0
    _feed(tracker, [FullyBooted(time=None)])  # the next login
    out = tracker.resync([], resync_at)
    out += tracker.tick(resync_at + SETTINGS.settle_seconds)
    [outcome] = [o for o in out if isinstance(o, CallOutcome)]
    assert outcome.reconstructed is True
    assert outcome.answered is True
    assert outcome.hangup_by is None
    assert outcome.ended_at == Instant.from_epoch(resync_at)


def test_channels_seen_in_the_new_session_survive_a_listing_taken_before_them() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("inbound_answered")
    boot, rest = events[0], events[1:]
    assert isinstance(boot, FullyBooted)
    # the login's FullyBooted, then the call's first events arrive while the (empty) listing is
    # being taken; the listing is queued after them
    first_hangup = next(i for i, e in enumerate(rest) if isinstance(e, Hangup))
    _feed(tracker, [boot, *rest[:first_hangup]])
    out = tracker.resync([], rest[first_hangup - 1].time or 0.0)
    assert out == []
    assert tracker.stats["resync_kept_unlisted"] == 2
    out = _feed(tracker, rest[first_hangup:]) + tracker.flush_ended()
    [outcome] = [o for o in out if isinstance(o, CallOutcome)]
    assert outcome.reconstructed is False
    assert outcome.hangup_by is not None


def test_a_resync_adopts_live_calls_it_never_saw_start() -> None:
    decoder = AmiDecoder(TRACKED_EVENTS)
    events = _events("resync_call_up_at_connect", decoder)
    listing = [e for e in events if isinstance(e, CoreShowChannel)]
    assert len(listing) == 2  # the trunk leg and 101's leg, bridged
    tracker = CallTracker(SETTINGS)
    now = 1795389740.0
    out = tracker.resync(listing, now)
    answered = [o for o in out if isinstance(o, LiveEvent)]
    assert [(e.type, e.agent) for e in answered] == [(LiveEventType.ANSWERED, "101")]
    assert tracker.active_calls == 1
    # the start is estimated from the listing's Duration
    [item] = [c for c in listing if c.channel.name.startswith("PJSIP/trunk-")]
    assert tracker.open_calls()[0][0] == f"pbx1:{item.channel.linkedid}"


def test_an_empty_tracker_produces_nothing() -> None:
    tracker = CallTracker(SETTINGS)
    assert tracker.tick(0.0) == []
    assert tracker.resync([], 0.0) == []
    assert tracker.flush_ended() == []


@pytest.mark.parametrize("pattern", ["(", "[1-"])
def test_a_bad_agent_pattern_fails_at_construction(pattern: str) -> None:
    with pytest.raises(re.error):
        PartyRules(agent_endpoints=pattern)


def _snapshot_channel(name: str, uniqueid: str, linkedid: str, state: int, exten: str) -> Channel:
    return Channel(
        name=name,
        uniqueid=uniqueid,
        linkedid=linkedid,
        state=ChannelState(state),
        caller_num="0501230000" if name.startswith("PJSIP/trunk") else name[6:9],
        caller_name=None,
        context="from-trunk",
        exten=exten,
    )


def test_a_call_adopted_from_a_snapshot_while_it_rings_a_queue_is_a_queue_miss_not_an_ivr_one() -> None:
    """No CEL: the snapshot after a gap shows the caller in Queue() and an agent ringing; the
    caller then hangs up. Where it was lost and who rang come from the snapshot, its start from
    its age."""
    now = 1_800_000_100.0
    caller = _snapshot_channel("PJSIP/trunk-00000001", "1800000088.1", "1800000088.1", 6, "s")
    agent = _snapshot_channel("PJSIP/101-00000002", "1800000095.2", "1800000088.1", 5, "s")
    listing = [
        CoreShowChannel(None, caller, None, "Queue", "support,rtT,,,30", 12.0),
        CoreShowChannel(None, agent, None, "AppQueue", "(Outgoing Line)", 5.0),
    ]
    tracker = CallTracker(SETTINGS)
    tracker.resync(listing, now)
    out = tracker.handle(Hangup(now + 1, caller, 16)) + tracker.handle(Hangup(now + 1, agent, 26))
    out += tracker.tick(now + 10)
    [outcome] = [o for o in out if isinstance(o, CallOutcome)]
    assert outcome.missed_at is MissedAt.QUEUE
    assert outcome.queue == "support"
    assert outcome.rang == ("101",)  # listed Ringing, created by the queue (AppQueue)
    assert outcome.started_at == Instant.from_epoch(now - 12.0)
    assert outcome.reconstructed
