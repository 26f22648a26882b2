"""What the daemon puts in its outbox: the wire envelope of an outcome or live event, sealed.

The envelope itself (``{"schema", "id", "type", "node", "time", "data"}``) is the wire model's
:class:`pbxlink.wire.model.Envelope`; its ``id`` is the idempotency key adapters dedupe on
(``<node>:<linkedid>`` for an outcome, ``<node>:<linkedid>:<seq>`` for a live event). It is
encoded once, when the message enters the outbox, so a re-publish after a crash or a broker
outage sends the very same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pbxlink.wire.codec import encode
from pbxlink.wire.instant import Instant, iso_utc
from pbxlink.wire.model import SCHEMA_VERSION, CallOutcome, LiveEvent, MessageKind
from pbxlink.wire.model import Envelope as WireEnvelope
from pbxlink.wire.topics import DEFAULT_TOPIC_PREFIX, NodeTopics

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "ENVELOPE_SCHEMA",
    "Envelope",
    "MessageKind",
    "NodeTopics",
    "build_envelope",
    "iso_utc",
]

ENVELOPE_SCHEMA = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready for the outbox: its key, topic, bytes and the MQTT user properties."""

    message_id: str
    kind: MessageKind
    topic: str
    payload: bytes
    direction: str | None
    answered: bool | None


def build_envelope(
    record: CallOutcome | LiveEvent,
    *,
    node: str,
    now: datetime,
    prefix: str = DEFAULT_TOPIC_PREFIX,
) -> Envelope:
    """Wrap an outcome or a live event in the wire envelope and encode it."""
    envelope = WireEnvelope.wrap(record, node=node, time=Instant.of(now))
    return Envelope(
        message_id=envelope.id,
        kind=envelope.type,
        topic=NodeTopics(node, prefix).for_kind(envelope.type),
        payload=encode(envelope),
        direction=record.direction.value,
        answered=record.answered if isinstance(record, CallOutcome) else None,
    )
