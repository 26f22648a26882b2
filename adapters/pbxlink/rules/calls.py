"""The planner's typed view of call outcomes, live events and their MQTT envelopes.

Dicts from the wire are validated here, once, at the edge (`parse_*`); the planner only sees
these frozen records. Unknown fields are ignored (the outcome schema grows additively); a
missing or mistyped field raises `CallInputError` naming its path.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class CallInputError(ValueError):
    """A payload that is not a valid outcome/event; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class MissedAt(enum.Enum):
    IVR = "ivr"
    QUEUE = "queue"
    AGENT = "agent"
    VOICEMAIL = "voicemail"
    EXTERNAL = "external"


class EventType(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    ENDED = "ended"


class MessageType(enum.Enum):
    OUTCOME = "call.outcome"
    EVENT = "call.event"
    REQUEST = "crm.request"


class Channel(enum.Enum):
    """Where an A7 request came from (1C:CRM: e-mail, messengers, web requests)."""

    EMAIL = "email"
    MESSENGER = "messenger"
    WEB = "web"


@dataclass(frozen=True, slots=True)
class ExternalParty:
    raw: str
    e164: str | None


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: str
    from_agent: str | None
    to_agent: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    id: str
    direction: Direction
    answered: bool
    missed_at: MissedAt | None
    external: ExternalParty | None
    line: str | None
    initiator: str | None
    first_answered_by: str | None
    last_handled_by: str | None
    rang: tuple[str, ...]
    handlers: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    queue: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    talk_seconds: float
    reconstructed: bool


@dataclass(frozen=True, slots=True)
class LiveEvent:
    call_id: str
    seq: int
    type: EventType
    time: datetime
    direction: Direction
    external: ExternalParty | None
    line: str | None
    agent: str | None
    from_agent: str | None
    to_agent: str | None
    queue: str | None


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An e-mail, messenger message or web request for the A7 rules."""

    id: str
    channel: Channel
    source: str  # the mailbox / account / form it arrived at, e.g. "email:service@shop.example"
    received_at: datetime
    sender_name: str | None
    sender_phone: str | None
    sender_email: str | None
    subject: str
    body: str
    deal_id: str | None  # an existing interest the request was linked to, if any


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: MessageType
    node: str
    body: CallOutcome | LiveEvent | InboundRequest


class _Fields:
    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, Mapping):
            raise CallInputError(f"{path}: must be a JSON object")
        self.raw: Mapping[str, Any] = raw
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def required(self, key: str) -> Any:
        if key not in self.raw:
            raise CallInputError(f"{self._at(key)}: missing")
        return self.raw[key]

    def text(self, key: str) -> str:
        value = self.required(key)
        if not isinstance(value, str) or not value:
            raise CallInputError(f"{self._at(key)}: must be a non-empty string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise CallInputError(f"{self._at(key)}: must be a string or null")
        return value or None

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise CallInputError(f"{self._at(key)}: must be true or false")
        return value

    def number(self, key: str) -> float:
        value = self.raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CallInputError(f"{self._at(key)}: must be a number >= 0")
        return float(value)

    def integer(self, key: str) -> int:
        value = self.required(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CallInputError(f"{self._at(key)}: must be an integer")
        return value

    def choice(self, key: str, enum_type: type[Any]) -> Any:
        value = self.required(key)
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in enum_type)
            raise CallInputError(f"{self._at(key)}: {value!r} is not one of {allowed}") from None

    def optional_choice(self, key: str, enum_type: type[Any]) -> Any:
        return None if self.raw.get(key) is None else self.choice(key, enum_type)

    def time(self, key: str) -> datetime:
        value = self.required(key)
        if not isinstance(value, str):
            raise CallInputError(f"{self._at(key)}: must be an ISO 8601 time")
        return parse_time(value, self._at(key))

    def optional_time(self, key: str) -> datetime | None:
        return None if self.raw.get(key) is None else self.time(key)

    def agents(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CallInputError(f"{self._at(key)}: must be a list of agent ids")
        return tuple(value)

    def external(self, key: str) -> ExternalParty | None:
        value = self.raw.get(key)
        if value is None:
            return None
        fields = _Fields(value, self._at(key))
        raw = fields.raw.get("raw")
        if not isinstance(raw, str):
            raise CallInputError(f"{self._at(key)}.raw: must be a string")
        return ExternalParty(raw=raw, e164=fields.optional_text("e164"))


def parse_time(value: str, path: str = "time") -> datetime:
    """ISO 8601 with a zone ("Z" or offset) → aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CallInputError(f"{path}: {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise CallInputError(f"{path}: {value!r} has no time zone")
    return moment.astimezone(UTC)


def parse_outcome(raw: object) -> CallOutcome:
    f = _Fields(raw, "data")
    if f.integer("schema") != 1:
        raise CallInputError("data.schema: only schema 1 is understood")
    handlers_raw = f.raw.get("handlers") or []
    if not isinstance(handlers_raw, list):
        raise CallInputError("data.handlers: must be a list")
    handlers = tuple(_Fields(h, f"data.handlers[{i}]").text("agent") for i, h in enumerate(handlers_raw))
    transfers_raw = f.raw.get("transfers") or []
    if not isinstance(transfers_raw, list):
        raise CallInputError("data.transfers: must be a list")
    transfers = []
    for i, item in enumerate(transfers_raw):
        t = _Fields(item, f"data.transfers[{i}]")
        transfers.append(
            Transfer(
                kind=t.text("kind"),
                from_agent=t.optional_text("from"),
                to_agent=t.optional_text("to"),
                at=t.optional_time("at"),
            )
        )
    direction = f.choice("direction", Direction)
    external = f.external("external")
    if direction is not Direction.INTERNAL and external is None:
        raise CallInputError("data.external: required for inbound and outbound calls")
    return CallOutcome(
        id=f.text("id"),
        direction=direction,
        answered=f.boolean("answered"),
        missed_at=f.optional_choice("missed_at", MissedAt),
        external=external,
        line=f.optional_text("line"),
        initiator=f.optional_text("initiator"),
        first_answered_by=f.optional_text("first_answered_by"),
        last_handled_by=f.optional_text("last_handled_by"),
        rang=f.agents("rang"),
        handlers=handlers,
        transfers=tuple(transfers),
        queue=f.optional_text("queue"),
        started_at=f.time("started_at"),
        answered_at=f.optional_time("answered_at"),
        ended_at=f.time("ended_at"),
        talk_seconds=f.number("talk_seconds"),
        reconstructed=f.boolean("reconstructed", False),
    )


def parse_event(raw: object) -> LiveEvent:
    f = _Fields(raw, "data")
    if f.integer("schema") != 1:
        raise CallInputError("data.schema: only schema 1 is understood")
    seq = f.integer("seq")
    if seq < 1:
        raise CallInputError("data.seq: must be >= 1")
    return LiveEvent(
        call_id=f.text("call_id"),
        seq=seq,
        type=f.choice("type", EventType),
        time=f.time("time"),
        direction=f.choice("direction", Direction),
        external=f.external("external"),
        line=f.optional_text("line"),
        agent=f.optional_text("agent"),
        from_agent=f.optional_text("from_agent"),
        to_agent=f.optional_text("to_agent"),
        queue=f.optional_text("queue"),
    )


def parse_request(raw: object) -> InboundRequest:
    f = _Fields(raw, "data")
    if f.integer("schema") != 1:
        raise CallInputError("data.schema: only schema 1 is understood")
    sender = _Fields(f.raw.get("from") or {}, "data.from")
    email = sender.optional_text("email")
    if email is not None and "@" not in email:
        raise CallInputError(f"data.from.email: {email!r} is not an e-mail address")
    subject = f.raw.get("subject", "")
    body = f.raw.get("body", "")
    if not isinstance(subject, str) or not isinstance(body, str):
        raise CallInputError("data.subject/data.body: must be strings")
    return InboundRequest(
        id=f.text("id"),
        channel=f.choice("channel", Channel),
        source=f.text("source"),
        received_at=f.time("received_at"),
        sender_name=sender.optional_text("name"),
        sender_phone=sender.optional_text("phone"),
        sender_email=None if email is None else email.strip().lower(),
        subject=subject,
        body=body,
        deal_id=f.optional_text("deal_id"),
    )


def parse_envelope(raw: object) -> Envelope:
    """Validate an MQTT envelope and its `data`; the id must match the body's own key."""
    f = _Fields(raw, "envelope")
    if f.integer("schema") != 1:
        raise CallInputError("envelope.schema: only schema 1 is understood")
    message_type: MessageType = f.choice("type", MessageType)
    envelope_id = f.text("id")
    node = f.text("node")
    body: CallOutcome | LiveEvent | InboundRequest
    if message_type is MessageType.REQUEST:
        body = parse_request(f.required("data"))
        if body.id != envelope_id:
            raise CallInputError(f"envelope.id: {envelope_id!r} differs from data.id {body.id!r}")
    elif message_type is MessageType.OUTCOME:
        body = parse_outcome(f.required("data"))
        if body.id != envelope_id:
            raise CallInputError(f"envelope.id: {envelope_id!r} differs from data.id {body.id!r}")
    else:
        body = parse_event(f.required("data"))
        expected = f"{body.call_id}:{body.seq}"
        if envelope_id != expected:
            raise CallInputError(f"envelope.id: {envelope_id!r} should be {expected!r}")
    return Envelope(id=envelope_id, type=message_type, node=node, body=body)


def envelope_for(
    data: Mapping[str, Any], node: str = "pbx1", prefix: str = "pbxlink/v1"
) -> tuple[str, bytes]:
    """(topic, payload) of an outcome or live-event dict, enveloped as the daemon publishes it."""
    if "type" in data:  # a live event
        envelope = {
            "schema": 1,
            "id": f"{data['call_id']}:{data['seq']}",
            "type": "call.event",
            "node": node,
            "time": data["time"],
            "data": dict(data),
        }
        topic = f"{prefix}/{node}/call/event"
    else:
        envelope = {
            "schema": 1,
            "id": data["id"],
            "type": "call.outcome",
            "node": node,
            "time": data["ended_at"],
            "data": dict(data),
        }
        topic = f"{prefix}/{node}/call/outcome"
    return topic, json.dumps(envelope, ensure_ascii=False).encode()


def request_envelope(data: Mapping[str, Any], prefix: str = "pbxlink/v1") -> tuple[str, bytes]:
    """(topic, payload) of an A7 request dict, as a mail/messenger/web gateway publishes it."""
    envelope = {
        "schema": 1,
        "id": data["id"],
        "type": "crm.request",
        "node": "crm",
        "time": data["received_at"],
        "data": dict(data),
    }
    return f"{prefix}/crm/request", json.dumps(envelope, ensure_ascii=False).encode()
