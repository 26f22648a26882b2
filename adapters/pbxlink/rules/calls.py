"""The planner's typed view of call outcomes, live events, requests and their MQTT envelopes.

These are the wire model's own records (:mod:`pbxlink.wire.model`, defined once for every
process), named here as the planner knows them. Payloads are validated once, at the edge
(`parse_*`, the wire codec): unknown fields are ignored (the schema grows additively); a
missing or mistyped field raises `CallInputError` naming its path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pbxlink.wire.codec import WireError, convert, decode_envelope
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import (
    CallOutcome,
    Direction,
    Envelope,
    ExternalParty,
    LiveEvent,
    MissedAt,
    Transfer,
)
from pbxlink.wire.model import LiveEventType as EventType
from pbxlink.wire.model import MessageKind as MessageType
from pbxlink.wire.model import Request as InboundRequest
from pbxlink.wire.model import RequestChannel as Channel
from pbxlink.wire.topics import DEFAULT_TOPIC_PREFIX, NodeTopics, request_topic

__all__ = [
    "CallInputError",
    "CallOutcome",
    "Channel",
    "Direction",
    "Envelope",
    "EventType",
    "ExternalParty",
    "InboundRequest",
    "LiveEvent",
    "MessageType",
    "MissedAt",
    "Transfer",
    "envelope_for",
    "parse_envelope",
    "parse_event",
    "parse_outcome",
    "parse_request",
    "parse_time",
    "request_envelope",
]

CallInputError = WireError
"""A payload that is not a valid outcome/event/request; `reason` goes to the dead-letter topic."""


def parse_time(value: str, path: str = "time") -> datetime:
    """ISO 8601 with a zone ("Z" or offset) → aware UTC datetime."""
    try:
        return Instant.parse(value)
    except ValueError as exc:
        raise CallInputError(f"{path}: {exc}") from None


def parse_outcome(raw: object) -> CallOutcome:
    return convert(raw, CallOutcome)


def parse_event(raw: object) -> LiveEvent:
    return convert(raw, LiveEvent)


def parse_request(raw: object) -> InboundRequest:
    return convert(raw, InboundRequest)


def parse_envelope(raw: object) -> Envelope:
    """Validate an MQTT envelope (JSON bytes or a parsed object) and its `data`; the id must
    match the body's own key."""
    return decode_envelope(raw)


def envelope_for(
    data: Mapping[str, Any], node: str = "pbx1", prefix: str = DEFAULT_TOPIC_PREFIX
) -> tuple[str, bytes]:
    """(topic, payload) of an outcome or live-event dict, enveloped as the daemon publishes it.

    For tests and ``pbxlink explain``: the dict is wrapped as it is, unchecked, so a sample can
    break the contract on purpose (the reader, `parse_envelope`, is what checks it)."""
    if "type" in data:  # a live event
        envelope = {
            "schema": 1,
            "id": f"{data['call_id']}:{data['seq']}",
            "type": MessageType.EVENT.value,
            "node": node,
            "time": data["time"],
            "data": dict(data),
        }
        topic = NodeTopics(node, prefix).event
    else:
        envelope = {
            "schema": 1,
            "id": data["id"],
            "type": MessageType.OUTCOME.value,
            "node": node,
            "time": data["ended_at"],
            "data": dict(data),
        }
        topic = NodeTopics(node, prefix).outcome
    return topic, json.dumps(envelope, ensure_ascii=False).encode()


def request_envelope(data: Mapping[str, Any], prefix: str = DEFAULT_TOPIC_PREFIX) -> tuple[str, bytes]:
    """(topic, payload) of an A7 request dict, as a mail/messenger/web gateway publishes it."""
    envelope = {
        "schema": 1,
        "id": data["id"],
        "type": MessageType.REQUEST.value,
        "node": "crm",
        "time": data["received_at"],
        "data": dict(data),
    }
    return request_topic(prefix), json.dumps(envelope, ensure_ascii=False).encode()
