"""The ownership directory: contract messages and the in-memory index routing reads.

Contract (CRM side → daemon): retained MQTT messages on ``pbxlink/v1/directory/{digits}``
(E.164 without "+"), QoS 1, payload::

    {"schema": 1, "number": "+380981234567", "updated_at": ISO,
     "clients": [{"client_id", "name", "created_at": ISO,
                  "responsibles": [{"employee", "extension", "is_employee", "blocked",
                                    "deleted"}]}],
     "employee": str | null}

An empty retained payload deletes the entry. The entry is the wire model's `DirectoryEntry`
(:mod:`pbxlink.wire.model`) read by the wire codec: `parse_directory_message` checks every field
and raises `DirectoryPayloadError` naming the bad one; `encode_directory_entry` is the inverse,
for publishers. `DirectoryIndex` keeps number → `RoutingEntry` in memory with equal entries shared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pbxlink.routing.model import DirectoryEntry, RoutingEntry
from pbxlink.wire.codec import WireError, convert, decode, encode
from pbxlink.wire.topics import DIRECTORY_TOPIC_PREFIX, directory_topic

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

DIRECTORY_TOPIC_FILTER = DIRECTORY_TOPIC_PREFIX + "#"
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


def parse_directory_entry(document: Any, topic: str = "directory") -> DirectoryEntry:
    """A decoded JSON document → DirectoryEntry, or DirectoryPayloadError."""
    try:
        return convert(document, DirectoryEntry, root="")
    except WireError as exc:
        raise DirectoryPayloadError(topic, exc.field or "$", exc.problem) from None


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
        entry = decode(payload, DirectoryEntry, root="")
    except WireError as exc:
        raise DirectoryPayloadError(topic, exc.field or "$", exc.problem) from None
    if entry.number[1:] != digits:
        raise DirectoryPayloadError(topic, "number", f"{entry.number} does not match the topic")
    return DirectoryUpdate(digits=digits, entry=entry, payload=payload)


def encode_directory_entry(entry: DirectoryEntry) -> bytes:
    """DirectoryEntry → the contract payload (for the CRM side's publisher and for tests)."""
    return encode(entry)


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
