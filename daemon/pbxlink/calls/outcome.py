"""The versioned JSON form of call outcomes and live events (schema: docs/outcome.schema.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pbxlink.calls.model import (
    SCHEMA_VERSION,
    CallOutcome,
    ExternalParty,
    HandlerSegment,
    LiveEvent,
    LiveEventType,
    RoutingDecision,
    TrackerOutput,
)


def iso_utc(epoch: float) -> str:
    """Epoch seconds → ``2026-11-22T23:06:31.123Z`` (milliseconds, UTC)."""
    moment = datetime.fromtimestamp(round(epoch, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def seconds(value: float) -> float:
    """Durations are published with millisecond precision."""
    return round(max(0.0, value), 3)


def _external(party: ExternalParty | None) -> dict[str, Any] | None:
    if party is None:
        return None
    return {"raw": party.raw, "e164": party.e164}


def _routing(decision: RoutingDecision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "target": decision.target,
        "agent": decision.agent,
        "reason": decision.reason,
        "owner": decision.owner,
        "rule": decision.rule,
        "caller_e164": decision.caller_e164,
        "line": decision.line,
        "decided_in_ms": decision.decided_in_ms,
    }


def outcome_to_json(outcome: CallOutcome) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "id": outcome.id,
        "linkedids": list(outcome.linkedids),
        "direction": outcome.direction.value,
        "answered": outcome.answered,
        "missed_at": None if outcome.missed_at is None else outcome.missed_at.value,
        "external": _external(outcome.external),
        "line": outcome.line,
        "initiator": outcome.initiator,
        "first_answered_by": outcome.first_answered_by,
        "last_handled_by": outcome.last_handled_by,
        "handlers": [_handler(h) for h in outcome.handlers],
        "rang": list(outcome.rang),
        "transfers": [
            {
                "kind": t.kind.value,
                "from": t.from_agent,
                "to": t.to,
                "at": iso_utc(t.at),
            }
            for t in outcome.transfers
        ],
        "queue": outcome.queue,
        "started_at": iso_utc(outcome.started_at),
        "answered_at": None if outcome.answered_at is None else iso_utc(outcome.answered_at),
        "ended_at": iso_utc(outcome.ended_at),
        "ring_seconds": seconds(outcome.ring_seconds),
        "talk_seconds": seconds(outcome.talk_seconds),
        "hangup_by": None if outcome.hangup_by is None else outcome.hangup_by.value,
        "recordings": list(outcome.recordings),
        "routing": _routing(outcome.routing),
        "reconstructed": outcome.reconstructed,
    }


def live_event_to_json(event: LiveEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "type": event.type.value,
        "call_id": event.call_id,
        "seq": event.seq,
        "time": iso_utc(event.time),
        "direction": event.direction.value,
        "external": _external(event.external),
        "line": event.line,
        "agent": event.agent,
        "queue": event.queue,
    }
    if event.type is LiveEventType.TRANSFERRED:
        body["from_agent"] = event.from_agent
        body["to_agent"] = event.to_agent
    return body


def to_json(output: TrackerOutput) -> dict[str, Any]:
    """Either record as its contract JSON object."""
    if isinstance(output, CallOutcome):
        return outcome_to_json(output)
    return live_event_to_json(output)


def _handler(segment: HandlerSegment) -> dict[str, Any]:
    item: dict[str, Any] = {
        "agent": segment.agent,
        "answered_at": iso_utc(segment.answered_at),
        "ended_at": iso_utc(segment.ended_at),
        "talk_seconds": seconds(segment.talk_seconds),
    }
    if segment.forwarded_to is not None:
        item["forwarded_to"] = segment.forwarded_to  # only when the agent's forward took it
    return item
