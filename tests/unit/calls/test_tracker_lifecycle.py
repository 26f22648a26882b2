"""CallTracker's lifecycle on real transcripts: settle time, tick, flat memory, stragglers, resync."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from pbxlink.ami.decode import AmiDecoder
from pbxlink.ami.events import AmiEvent, CoreShowChannel, FullyBooted, Hangup
from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.model import CallOutcome, LiveEvent, LiveEventType
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


def test_an_outcome_waits_for_the_settle_time_after_the_last_hangup() -> None:
    tracker = CallTracker(SETTINGS)
    events = _events("inbound_answered")
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
