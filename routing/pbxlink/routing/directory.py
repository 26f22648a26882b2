"""The ownership directory: contract messages and the in-memory index routing reads.

Contract (CRM side → daemon): retained MQTT messages on ``pbxlink/v1/directory/{digits}``
(E.164 without "+"), QoS 1, payload::

    {"schema": 1, "number": "+380981234567", "updated_at": ISO,
     "clients": [{"client_id", "name", "created_at": ISO,
                  "responsibles": [{"employee", "extension", "is_employee", "blocked",
                                    "deleted"}]}],
     "employee": str | null}

An empty retained payload deletes the entry. `parse_directory_message` checks every field and
raises `DirectoryPayloadError` naming the bad one; `encode_directory_entry` is the inverse, for
publishers. `DirectoryIndex` keeps number → `RoutingEntry` in memory with equal entries shared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible, RoutingEntry

__all__ = [
    "DIRECTORY_TOPIC_FILTER",
    "DIRECTORY_TOPIC_PREFIX",
    "DirectoryIndex",
    "DirectoryPayloadError",
    "DirectoryUpdate",
    "directory_topic",
    "encode_directory_entry",
    "parse_directory_entry",
    "parse_directory_message",
]

DIRECTORY_TOPIC_PREFIX = "pbxlink/v1/directory/"
DIRECTORY_TOPIC_FILTER = DIRECTORY_TOPIC_PREFIX + "#"
SCHEMA = 1
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_DIGITS = re.compile(r"^[1-9]\d{6,14}$")
_MAX_PAYLOAD = 256 * 1024


class DirectoryPayloadError(ValueError):
    """A directory message that breaks the contract; `field` says where."""

    def __init__(self, topic: str, field: str, problem: str) -> None:
        super().__init__(f"{topic}: {field}: {problem}")
        self.topic = topic
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class DirectoryUpdate:
    """One directory message: set (`entry`) or delete (`entry is None`) number `digits`."""

    digits: str
    entry: DirectoryEntry | None
    payload: bytes = b""  # the original payload, kept for persistence


def directory_topic(e164: str, prefix: str = DIRECTORY_TOPIC_PREFIX) -> str:
    return prefix + e164.removeprefix("+")


def _iso(value: Any, topic: str, where: str) -> datetime:
    if not isinstance(value, str):
        raise DirectoryPayloadError(topic, where, "expected an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DirectoryPayloadError(topic, where, f"not ISO 8601: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _str(value: Any, topic: str, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value):
        raise DirectoryPayloadError(
            topic, where, "expected a non-empty string" + (" or null" if optional else "")
        )
    return value


def _bool(value: Any, topic: str, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise DirectoryPayloadError(topic, where, "expected true or false")
    return value


def _responsible(raw: Any, topic: str, where: str) -> Responsible:
    if not isinstance(raw, Mapping):
        raise DirectoryPayloadError(topic, where, "expected an object")
    employee = _str(raw.get("employee"), topic, f"{where}.employee")
    assert employee is not None
    extension = _str(raw.get("extension"), topic, f"{where}.extension", optional=True)
    return Responsible(
        employee=employee,
        extension=extension or None,
        is_employee=_bool(raw.get("is_employee"), topic, f"{where}.is_employee", True),
        blocked=_bool(raw.get("blocked"), topic, f"{where}.blocked", False),
        deleted=_bool(raw.get("deleted"), topic, f"{where}.deleted", False),
    )


def _client(raw: Any, topic: str, where: str) -> ClientOwners:
    if not isinstance(raw, Mapping):
        raise DirectoryPayloadError(topic, where, "expected an object")
    responsibles = raw.get("responsibles", [])
    if not isinstance(responsibles, list):
        raise DirectoryPayloadError(topic, f"{where}.responsibles", "expected a list")
    client_id = _str(raw.get("client_id"), topic, f"{where}.client_id")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise DirectoryPayloadError(topic, f"{where}.name", "expected a string")
    assert client_id is not None
    return ClientOwners(
        client_id=client_id,
        name=name,
        created_at=_iso(raw.get("created_at"), topic, f"{where}.created_at"),
        responsibles=tuple(
            _responsible(r, topic, f"{where}.responsibles[{i}]") for i, r in enumerate(responsibles)
        ),
    )


def parse_directory_entry(document: Any, topic: str = "directory") -> DirectoryEntry:
    """A decoded JSON document → DirectoryEntry, or DirectoryPayloadError."""
    if not isinstance(document, Mapping):
        raise DirectoryPayloadError(topic, "$", "expected a JSON object")
    if document.get("schema") != SCHEMA:
        raise DirectoryPayloadError(topic, "schema", f"expected {SCHEMA}, got {document.get('schema')!r}")
    number = document.get("number")
    if not isinstance(number, str) or not _E164.match(number):
        raise DirectoryPayloadError(topic, "number", f"expected E.164 like +380981234567, got {number!r}")
    clients = document.get("clients", [])
    if not isinstance(clients, list):
        raise DirectoryPayloadError(topic, "clients", "expected a list")
    employee = _str(document.get("employee"), topic, "employee", optional=True)
    return DirectoryEntry(
        number=number,
        updated_at=_iso(document.get("updated_at"), topic, "updated_at"),
        clients=tuple(_client(c, topic, f"clients[{i}]") for i, c in enumerate(clients)),
        employee=employee or None,
    )


def parse_directory_message(
    topic: str, payload: bytes, prefix: str = DIRECTORY_TOPIC_PREFIX
) -> DirectoryUpdate:
    """One MQTT message → DirectoryUpdate; an empty payload is a deletion."""
    if not topic.startswith(prefix):
        raise DirectoryPayloadError(topic, "topic", f"not under {prefix}")
    digits = topic[len(prefix) :]
    if not _DIGITS.match(digits):
        raise DirectoryPayloadError(topic, "topic", "the last level must be E.164 digits without '+'")
    if not payload:
        return DirectoryUpdate(digits=digits, entry=None)
    if len(payload) > _MAX_PAYLOAD:
        raise DirectoryPayloadError(topic, "$", f"payload larger than {_MAX_PAYLOAD} bytes")
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
        raise DirectoryPayloadError(topic, "$", f"not JSON: {exc}") from None
    entry = parse_directory_entry(document, topic)
    if entry.number[1:] != digits:
        raise DirectoryPayloadError(topic, "number", f"{entry.number} does not match the topic")
    return DirectoryUpdate(digits=digits, entry=entry, payload=payload)


def encode_directory_entry(entry: DirectoryEntry) -> bytes:
    """DirectoryEntry → the contract payload (for the CRM side's publisher and for tests)."""
    document = {
        "schema": SCHEMA,
        "number": entry.number,
        "updated_at": _format_time(entry.updated_at),
        "clients": [
            {
                "client_id": c.client_id,
                "name": c.name,
                "created_at": _format_time(c.created_at),
                "responsibles": [
                    {
                        "employee": r.employee,
                        "extension": r.extension,
                        "is_employee": r.is_employee,
                        "blocked": r.blocked,
                        "deleted": r.deleted,
                    }
                    for r in c.responsibles
                ],
            }
            for c in entry.clients
        ],
        "employee": entry.employee,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class DirectoryIndex:
    """Caller E.164 → RoutingEntry, in memory. Implements `DirectoryView`.

    Keys are the E.164 digits as int (small), values are interned: a million numbers owned by
    a few dozen managers share a few dozen `RoutingEntry` objects.
    """

    __slots__ = ("_entries", "_interned")

    def __init__(self) -> None:
        self._entries: dict[int, RoutingEntry] = {}
        self._interned: dict[RoutingEntry, RoutingEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def intern(self, entry: RoutingEntry) -> RoutingEntry:
        return self._interned.setdefault(entry, entry)

    def put(self, digits: str, entry: RoutingEntry) -> None:
        self._entries[int(digits)] = self.intern(entry)

    def put_int(self, number: int, entry: RoutingEntry) -> None:
        """Bulk-load path: `number` = E.164 digits as int."""
        self._entries[number] = self.intern(entry)

    def remove(self, digits: str) -> None:
        self._entries.pop(int(digits), None)

    def apply(self, update: DirectoryUpdate) -> None:
        if update.entry is None:
            self.remove(update.digits)
        else:
            self.put(update.digits, RoutingEntry.from_entry(update.entry))

    def lookup(self, e164: str) -> RoutingEntry | None:
        digits = e164[1:] if e164.startswith("+") else e164
        if not (digits.isascii() and digits.isdigit()):
            return None
        return self._entries.get(int(digits))

    def distinct_entries(self) -> int:
        return len(self._interned)
