"""The envelope around outcomes and live events (common contract)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from pbxlink.daemon.envelope import MessageKind, NodeTopics, build_envelope, iso_utc
from pbxlink.wire.codec import to_builtins
from pbxlink.wire.model import Direction, LiveEventType
from pbxlink.wire.samples import sample_event, sample_outcome


def test_outcome_envelope_uses_the_outcome_id_as_key_and_keeps_the_data() -> None:
    outcome = sample_outcome("pbx1:1763852000.11", answered=False)
    env = build_envelope(outcome, node="pbx1", now=datetime(2026, 11, 22, 23, 0, 5, 250000, tzinfo=UTC))
    body = json.loads(env.payload)
    assert body == {
        "schema": 1,
        "id": "pbx1:1763852000.11",
        "type": "call.outcome",
        "node": "pbx1",
        "time": "2026-11-22T23:00:05.250Z",
        "data": to_builtins(outcome),
    }
    assert body["data"]["id"] == "pbx1:1763852000.11"
    assert body["data"]["external"] == {"raw": "0981234567", "e164": "+380981234567"}
    assert env.topic == "pbxlink/v1/pbx1/call/outcome"
    assert (env.message_id, env.direction, env.answered) == ("pbx1:1763852000.11", "inbound", False)


def test_event_envelope_key_is_call_id_and_seq() -> None:
    event = sample_event("pbx2:17.4", 3, kind=LiveEventType.ANSWERED, direction=Direction.OUTBOUND)
    env = build_envelope(event, node="pbx2", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert env.message_id == "pbx2:17.4:3"
    assert env.topic == "pbxlink/v1/pbx2/call/event"
    assert env.answered is None
    body = json.loads(env.payload)
    assert body["type"] == "call.event"
    assert body["data"]["type"] == "answered"
    assert "from_agent" not in body["data"]  # written on transferred events only


def test_non_ascii_text_is_sent_as_utf8_not_escaped() -> None:
    env = build_envelope(sample_outcome(line="Київ"), node="pbx1", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert "Київ".encode() in env.payload


def test_times_are_utc_with_z_whatever_the_input_zone() -> None:
    kyiv = timezone(timedelta(hours=2))
    assert iso_utc(datetime(2026, 1, 1, 2, 0, tzinfo=kyiv)) == "2026-01-01T00:00:00.000Z"


def test_node_topics() -> None:
    topics = NodeTopics("pbx1")
    assert topics.status == "pbxlink/v1/pbx1/status"
    assert topics.for_kind(MessageKind.EVENT) == "pbxlink/v1/pbx1/call/event"
