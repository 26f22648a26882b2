"""Sample wire records, valid and typed, for tests, benchmarks and docs (not used at run time)."""

from __future__ import annotations

from typing import Any

import msgspec

from pbxlink.wire.instant import Instant
from pbxlink.wire.model import (
    CallOutcome,
    Direction,
    ExternalParty,
    HandlerSegment,
    HangupBy,
    LiveEvent,
    LiveEventType,
    MissedAt,
)

__all__ = ["sample_event", "sample_outcome"]

_CALLER = ExternalParty(raw="0981234567", e164="+380981234567")
_START = 1_795_389_600.0


def sample_outcome(
    call_id: str = "pbx1:1795389600.1", *, answered: bool = True, **changes: Any
) -> CallOutcome:
    """An inbound call on line 4930100200, answered by 101 (or missed in the queue), 15 s of
    ringing and (answered) 100 s of talk; ``changes`` replace fields by name."""
    started, answered_at, ended = _START, _START + 15.0, _START + (115.0 if answered else 15.0)
    outcome = CallOutcome(
        id=call_id,
        linkedids=(call_id.split(":", 1)[1],),
        direction=Direction.INBOUND,
        answered=answered,
        missed_at=None if answered else MissedAt.QUEUE,
        external=_CALLER,
        line="4930100200",
        initiator=None,
        first_answered_by="101" if answered else None,
        last_handled_by="101" if answered else None,
        handlers=(
            HandlerSegment(
                agent="101",
                answered_at=Instant.from_epoch(answered_at),
                ended_at=Instant.from_epoch(ended),
                talk_seconds=ended - answered_at,
            ),
        )
        if answered
        else (),
        rang=("101",),
        transfers=(),
        queue=None if answered else "support",
        started_at=Instant.from_epoch(started),
        answered_at=Instant.from_epoch(answered_at) if answered else None,
        ended_at=Instant.from_epoch(ended),
        ring_seconds=15.0,
        talk_seconds=ended - answered_at if answered else 0.0,
        hangup_by=HangupBy.EXTERNAL,
        recordings=(),
        routing=None,
        reconstructed=False,
    )
    return msgspec.structs.replace(outcome, **changes) if changes else outcome


def sample_event(
    call_id: str = "pbx1:1795389600.1",
    seq: int = 1,
    *,
    kind: LiveEventType = LiveEventType.RINGING,
    **changes: Any,
) -> LiveEvent:
    """A live event of the sample inbound call (``ringing`` for agent 101 unless changed)."""
    event = LiveEvent(
        type=kind,
        call_id=call_id,
        seq=seq,
        time=Instant.from_epoch(_START + seq),
        direction=Direction.INBOUND,
        external=_CALLER,
        line="4930100200",
        agent="101",
        queue=None,
    )
    return msgspec.structs.replace(event, **changes) if changes else event
