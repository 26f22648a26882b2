"""The wire model: every message that crosses MQTT between pbxlink processes, defined once.

msgspec Structs, frozen. The daemon builds them (the call tracker makes `CallOutcome` and
`LiveEvent` directly), the codec (:mod:`pbxlink.wire.codec`) writes and reads them, and the
published JSON Schema (docs/outcome.schema.json) is generated from them
(:mod:`pbxlink.wire.schema`). Field names and enum values are the contract of schema 1
(docs/outcome.md, docs/delivery.md, docs/crm.md): change them only additively.

Decoding is strict about types and lenient about unknown fields (the schema grows additively).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field
from msgspec.structs import force_setattr

from pbxlink.wire.instant import Instant

__all__ = [
    "SCHEMA_VERSION",
    "AgentId",
    "Attachment",
    "CallId",
    "CallOutcome",
    "ClientOwners",
    "DeadLetter",
    "Direction",
    "DirectoryEntry",
    "DirectoryTime",
    "Envelope",
    "ExternalParty",
    "HandlerSegment",
    "HangupBy",
    "LiveEvent",
    "LiveEventType",
    "MessageKind",
    "MissedAt",
    "Request",
    "RequestChannel",
    "Responsible",
    "RoutingDecision",
    "Sender",
    "Transfer",
    "TransferKind",
]

SCHEMA_VERSION = 1

AgentId = Annotated[
    str,
    Meta(min_length=1, description='agent id = the PJSIP endpoint name of the agent\'s phone, e.g. "101"'),
]
CallId = Annotated[
    str, Meta(pattern=r"^[^:]+:.+$", description="<node>:<linkedid> (the oldest linkedid of the call)")
]
Seconds = Annotated[float, Meta(ge=0)]
E164 = Annotated[str, Meta(pattern=r"^\+[1-9]\d{5,14}$")]
Text = Annotated[str, Meta(min_length=1)]
Schema1 = Literal[1]


class _Record(Struct, frozen=True, kw_only=True):
    """Base of the wire records: frozen, keyword-only, written with every field."""


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class MissedAt(StrEnum):
    """Where an unanswered call was lost."""

    IVR = "ivr"  # the caller never reached a person, a queue or voicemail
    QUEUE = "queue"  # waited in a queue / ring group, nobody answered
    AGENT = "agent"  # an agent's phone rang (direct dial), nobody answered
    VOICEMAIL = "voicemail"  # ended in voicemail
    EXTERNAL = "external"  # outbound: the external party did not answer


class HangupBy(StrEnum):
    EXTERNAL = "external"
    AGENT = "agent"
    SYSTEM = "system"  # the PBX ended it (dialplan Hangup(), timeouts)


class TransferKind(StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


class LiveEventType(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    ENDED = "ended"


class MessageKind(StrEnum):
    """What an MQTT message carries; the value is the envelope ``type``."""

    OUTCOME = "call.outcome"
    EVENT = "call.event"
    REQUEST = "crm.request"


class RequestChannel(StrEnum):
    """Where an A7 request came from (1C:CRM: e-mail, messengers, web requests)."""

    EMAIL = "email"
    MESSENGER = "messenger"
    WEB = "web"


class ExternalParty(_Record, frozen=True, kw_only=True):
    """The other party of an inbound or outbound call."""

    raw: Annotated[str, Meta(description="as Asterisk reported it; empty when withheld")]
    e164: E164 | None


class HandlerSegment(_Record, frozen=True, kw_only=True):
    """One stretch of time an agent talked with the other party."""

    agent: AgentId
    answered_at: Instant
    ended_at: Instant
    talk_seconds: Seconds
    # written only when the agent's follow-me or call forward took the call on an outside number
    forwarded_to: (
        Annotated[
            str,
            Meta(
                min_length=1,
                description="the outside number that took the call for the agent (follow-me, call forward)",
            ),
        ]
        | UnsetType
    ) = UNSET


class Transfer(_Record, frozen=True, kw_only=True):
    kind: TransferKind
    from_agent: AgentId | None = field(name="from")
    # the target agent (or the extension a blind transfer sent the call to)
    to: str | None
    at: Instant


class RoutingDecision(_Record, frozen=True, kw_only=True):
    """The routing decision: made by the FastAGI router, seen by the dialplan, kept in the outcome.

    ``reason`` is a `pbxlink.routing.model.RouteReason` value, ``rule:<name>`` for a rule, or
    ``agi_<status>`` when the dialplan asked and got no answer.
    """

    target: str | None
    agent: str | None
    reason: str
    owner: str | None
    rule: str | None
    caller_e164: str | None
    line: str | None
    decided_in_ms: Annotated[float, Meta(ge=0)] | None = None  # measured by the FastAGI server

    def channel_variables(self) -> dict[str, str]:
        """What the FastAGI answer sets for the dialplan (the call tracker reads them back from
        AMI); ``PBXLINK_ROUTE`` is empty when the dialplan should take its normal route."""
        return {
            "PBXLINK_ROUTE": self.target or "",
            "PBXLINK_ROUTE_REASON": self.reason,
            "PBXLINK_ROUTE_OWNER": self.owner or "",
        }


class CallOutcome(_Record, frozen=True, kw_only=True):
    """One per finished call (topic ``pbxlink/v1/{node}/call/outcome``; docs/outcome.md)."""

    schema: Schema1 = 1
    id: CallId
    linkedids: Annotated[tuple[str, ...], Meta(min_length=1, extra_json_schema={"uniqueItems": True})]
    direction: Direction
    answered: Annotated[bool, Meta(description="a human agent talked with the other party")]
    missed_at: MissedAt | None
    external: ExternalParty | None
    line: Annotated[str | None, Meta(description="the DID called (inbound)")]
    initiator: AgentId | None
    first_answered_by: AgentId | None
    last_handled_by: AgentId | None
    handlers: tuple[HandlerSegment, ...]
    rang: Annotated[tuple[AgentId, ...], Meta(extra_json_schema={"uniqueItems": True})]
    transfers: tuple[Transfer, ...]
    queue: str | None
    started_at: Instant
    answered_at: Instant | None
    ended_at: Instant
    ring_seconds: Seconds
    talk_seconds: Seconds
    hangup_by: HangupBy | None
    recordings: tuple[str, ...]
    routing: RoutingDecision | None
    reconstructed: bool

    def __post_init__(self) -> None:
        if self.direction is not Direction.INTERNAL and self.external is None:
            raise ValueError("`external`: required for inbound and outbound calls")


class LiveEvent(_Record, frozen=True, kw_only=True):
    """While a call runs (topic ``pbxlink/v1/{node}/call/event``); ``from_agent``/``to_agent``
    are written on ``transferred`` events only (unset on the others)."""

    schema: Schema1 = 1
    type: LiveEventType
    call_id: CallId
    seq: Annotated[int, Meta(ge=1)]
    time: Instant
    direction: Direction
    external: ExternalParty | None
    line: str | None
    agent: AgentId | None
    queue: str | None
    from_agent: AgentId | UnsetType | None = UNSET
    to_agent: str | UnsetType | None = UNSET

    @property
    def key(self) -> str:
        """The idempotency key of the event: ``<call_id>:<seq>``."""
        return f"{self.call_id}:{self.seq}"


class Sender(_Record, frozen=True, kw_only=True):
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    # a messenger chat to answer in, e.g. "telegram:123456789" (the chat is the contact)
    messenger: str | None = None


class Attachment(_Record, frozen=True, kw_only=True):
    """A file that came with a request (listed, not carried: the mailbox or messenger keeps it)."""

    name: str
    content_type: str
    size: Annotated[int, Meta(ge=0)]


class Request(_Record, frozen=True, kw_only=True):
    """An e-mail, messenger message or web request for the CRM's A7 rules
    (topic ``pbxlink/v1/crm/request``, published by a mail/messenger/web gateway)."""

    schema: Schema1 = 1
    id: Text
    channel: RequestChannel
    source: Text  # the mailbox / account / form it arrived at, e.g. "email:service@shop.example"
    received_at: Instant
    sender: Sender = field(name="from", default_factory=Sender)
    subject: str = ""
    body: str = ""
    deal_id: str | None = None  # an existing interest the request was linked to, if any
    # the source's own id of the message (an e-mail's Message-ID), for the CRM's history
    message_id: str | None = None
    # ids of earlier requests of the same conversation (an e-mail thread's In-Reply-To/References,
    # a messenger chat), newest first: the adapter links the request to the open interest one of
    # them created ("no new interest when the message links to an active one")
    replies_to: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    def __post_init__(self) -> None:
        email = self.sender.email
        if email is not None and "@" not in email:
            raise ValueError(f"`from.email`: {email!r} is not an e-mail address")

    @property
    def sender_name(self) -> str | None:
        return self.sender.name or None

    @property
    def sender_phone(self) -> str | None:
        return self.sender.phone or None

    @property
    def sender_email(self) -> str | None:
        email = self.sender.email
        return email.strip().lower() if email else None


class DirectoryTime(Instant):
    """A time in a directory entry: as `Instant`, but a CRM's zone-less time is read as UTC and a
    bare date as its midnight (what the directory contract has always accepted)."""

    __slots__ = ()


class Responsible(_Record, frozen=True):
    """One responsible person of a client, as the CRM side publishes it."""

    employee: Text
    extension: str | None
    is_employee: bool = True
    blocked: bool = False
    deleted: bool = False

    def __post_init__(self) -> None:
        if self.extension == "":
            force_setattr(self, "extension", None)

    @property
    def eligible(self) -> bool:
        """R2: blocked or deleted employees, and non-employees, are never routed to."""
        return self.is_employee and not self.blocked and not self.deleted


class ClientOwners(_Record, frozen=True):
    client_id: Text
    name: str
    created_at: DirectoryTime
    responsibles: tuple[Responsible, ...] = ()


class DirectoryEntry(_Record, frozen=True):
    """One retained directory message (``pbxlink/v1/directory/{digits}``, the CRM side → the
    daemon's router): who owns the callers of one E.164 number (docs/routing.md)."""

    number: Annotated[str, Meta(pattern=r"^\+[1-9]\d{6,14}$")]  # "+380981234567"
    updated_at: DirectoryTime
    clients: tuple[ClientOwners, ...] = ()
    employee: str | None = None  # set when the number is an employee's own
    schema: Schema1 = 1

    def __post_init__(self) -> None:
        if self.employee == "":
            force_setattr(self, "employee", None)


class DeadLetter(_Record, frozen=True, kw_only=True):
    """A message an adapter refused, and why (topic ``pbxlink/v1/crm/deadletter``, docs/crm.md)."""

    schema: Schema1 = 1
    adapter: Text
    id: str
    topic: str
    reason: str
    received_at: Instant
    payload: str | None  # the refused payload, when it is UTF-8 text
    payload_hex: str | None  # else its bytes in hex


Body = CallOutcome | LiveEvent | Request


class Envelope(_Record, frozen=True, kw_only=True):
    """Every MQTT message: ``{"schema", "id", "type", "node", "time", "data"}`` (docs/delivery.md).

    ``id`` is the idempotency key consumers dedupe on: the outcome's id, ``<call_id>:<seq>`` for
    a live event, the request's id. ``time`` is when the message was made.
    """

    schema: Schema1 = 1
    id: Text
    type: MessageKind
    node: Text
    time: Instant
    data: Any  # CallOutcome | LiveEvent | Request, by `type` (the codec checks it)

    @property
    def body(self) -> Body:
        data = self.data
        assert isinstance(data, CallOutcome | LiveEvent | Request)
        return data

    @classmethod
    def wrap(cls, body: Body, *, node: str, time: Instant) -> Envelope:
        """The envelope of a record, its key and kind taken from the record."""
        if isinstance(body, LiveEvent):
            return cls(id=body.key, type=MessageKind.EVENT, node=node, time=time, data=body)
        kind = MessageKind.OUTCOME if isinstance(body, CallOutcome) else MessageKind.REQUEST
        return cls(id=body.id, type=kind, node=node, time=time, data=body)


BODY_TYPES: dict[MessageKind, type[CallOutcome] | type[LiveEvent] | type[Request]] = {
    MessageKind.OUTCOME: CallOutcome,
    MessageKind.EVENT: LiveEvent,
    MessageKind.REQUEST: Request,
}
