"""The MQTT envelope and topics of what the daemon publishes (docs/delivery.md).

Every message is a JSON object ``{"schema", "id", "type", "node", "time", "data"}``. The ``id`` is
the idempotency key adapters dedupe on: ``<node>:<linkedid>`` for an outcome and
``<node>:<linkedid>:<seq>`` for a live event. The envelope is built once, when the message enters
the outbox, so a re-publish after a crash or a broker outage sends the very same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ENVELOPE_SCHEMA = 1
DEFAULT_TOPIC_PREFIX = "pbxlink/v1"


class MessageKind(StrEnum):
    """What a published message carries; the value is the envelope ``type``."""

    OUTCOME = "call.outcome"
    EVENT = "call.event"


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """The topics of one PBX node, under the configured prefix (``mqtt.topic_prefix``)."""

    node: str
    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def outcome(self) -> str:
        return f"{self.prefix}/{self.node}/call/outcome"

    @property
    def event(self) -> str:
        return f"{self.prefix}/{self.node}/call/event"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.node}/status"

    def for_kind(self, kind: MessageKind) -> str:
        return self.outcome if kind is MessageKind.OUTCOME else self.event


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready for the outbox: its key, topic, bytes and the MQTT user properties."""

    message_id: str
    kind: MessageKind
    topic: str
    payload: bytes
    direction: str | None
    answered: bool | None


def iso_utc(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, millisecond precision."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_envelope(
    kind: MessageKind,
    data: Mapping[str, Any],
    *,
    node: str,
    now: datetime,
    prefix: str = DEFAULT_TOPIC_PREFIX,
) -> Envelope:
    """Wrap an outcome or a live event (their dict form) in the envelope.

    The key comes from the data: an outcome's ``id``, or a live event's ``call_id`` and ``seq``.
    """
    if kind is MessageKind.OUTCOME:
        message_id = str(data["id"])
        answered = data.get("answered")
        answered_flag = bool(answered) if answered is not None else None
    else:
        message_id = f"{data['call_id']}:{data['seq']}"
        answered_flag = None
    direction = data.get("direction")
    body = {
        "schema": ENVELOPE_SCHEMA,
        "id": message_id,
        "type": kind.value,
        "node": node,
        "time": iso_utc(now),
        "data": dict(data),
    }
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Envelope(
        message_id=message_id,
        kind=kind,
        topic=NodeTopics(node, prefix).for_kind(kind),
        payload=payload,
        direction=str(direction) if direction is not None else None,
        answered=answered_flag,
    )
