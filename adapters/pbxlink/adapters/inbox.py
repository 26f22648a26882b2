"""The durable inbox: every received message is stored, keyed by its envelope `id`, before it is
acknowledged to the broker. Duplicates (same id) are dropped. A payload that fails validation is
stored as dead with its reason and later published to the dead-letter topic; it never reaches
the rules and never stops the consumer.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from pbxlink.adapters.backends.sqlite_crm import iso
from pbxlink.adapters.store import Store
from pbxlink.rules.calls import CallInputError, Envelope, parse_envelope
from pbxlink.wire.codec import encode
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import DeadLetter as DeadLetterMessage
from pbxlink.wire.topics import KIND_SUFFIX

_MAX_PAYLOAD = 1024 * 1024


class Receipt(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class InboxMessage:
    id: str
    topic: str
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    topic: str
    payload: bytes
    reason: str
    received_at: str

    def to_json(self, adapter: str) -> bytes:
        """The dead-letter message (the wire model's `DeadLetter`) published for this row."""
        try:
            text: str | None = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return encode(
            DeadLetterMessage(
                adapter=adapter,
                id=self.id,
                topic=self.topic,
                reason=self.reason,
                received_at=Instant.parse(self.received_at),
                payload=text,
                payload_hex=None if text is not None else self.payload.hex(),
            )
        )


def validate(topic: str, payload: bytes) -> Envelope:
    """The whole envelope check; raises CallInputError with the reason."""
    if len(payload) > _MAX_PAYLOAD:
        raise CallInputError(f"payload of {len(payload)} bytes is larger than {_MAX_PAYLOAD}")
    envelope = parse_envelope(payload)
    expected = KIND_SUFFIX[envelope.type]
    if not topic.endswith(expected):
        raise CallInputError(f"a {envelope.type.value} message on topic {topic!r}")
    return envelope


class Inbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def receive(self, topic: str, payload: bytes, now: datetime) -> Receipt:
        """Store one message durably (its own committed transaction). Never raises on content."""
        [receipt] = await self.receive_many([(topic, payload)], now)
        return receipt

    async def receive_many(
        self, messages: list[tuple[str, bytes]], now: datetime, parsed: dict[str, Envelope] | None = None
    ) -> list[Receipt]:
        """Store a burst of messages in one committed transaction (one fsync for all), with one
        thread hop for the whole burst (`Store.in_thread`). New messages' envelopes go into
        `parsed` (by id), so that applying them need not parse them again."""
        return await self.store.in_thread(lambda store: Inbox(store).store_many(messages, now, parsed))

    async def store_many(
        self, messages: list[tuple[str, bytes]], now: datetime, parsed: dict[str, Envelope] | None = None
    ) -> list[Receipt]:
        """`receive_many`'s work, inside the caller's transaction."""
        receipts: list[Receipt] = []
        async with self.store.transaction() as db:
            for topic, payload in messages:
                try:
                    envelope = validate(topic, payload)
                except CallInputError as exc:
                    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:32]
                    cursor = await db.execute(
                        "INSERT OR IGNORE INTO inbox (id, topic, payload, received_at, state, "
                        "error, finished_at) VALUES (?, ?, ?, ?, 'dead', ?, ?)",
                        (f"invalid:{digest}", topic, payload, iso(now), exc.reason, iso(now)),
                    )
                    receipts.append(Receipt.DEAD if cursor.rowcount else Receipt.DUPLICATE)
                    continue
                cursor = await db.execute(
                    "INSERT OR IGNORE INTO inbox (id, topic, payload, received_at) VALUES (?, ?, ?, ?)",
                    (envelope.id, topic, payload, iso(now)),
                )
                receipts.append(Receipt.NEW if cursor.rowcount else Receipt.DUPLICATE)
                if cursor.rowcount and parsed is not None:
                    parsed[envelope.id] = envelope
        return receipts

    async def pending(self, limit: int = 100, skip: frozenset[str] = frozenset()) -> list[InboxMessage]:
        """The oldest pending messages, leaving out `skip` (those that failed in this run)."""
        async with self.store.db.execute(
            "SELECT id, topic, payload, attempts FROM inbox WHERE state = 'pending' ORDER BY rowid LIMIT ?",
            (limit + len(skip),),
        ) as cursor:
            rows = await cursor.fetchall()
        found = [InboxMessage(r[0], r[1], bytes(r[2]), int(r[3])) for r in rows if r[0] not in skip]
        return found[:limit]

    async def mark_done(self, message_id: str, now: datetime) -> None:
        """Call inside the transaction that wrote the message's CRM effect."""
        await self.store.db.execute(
            "UPDATE inbox SET state = 'done', finished_at = ?, error = NULL WHERE id = ?",
            (iso(now), message_id),
        )

    async def mark_failed(self, message_id: str, reason: str, now: datetime, max_attempts: int) -> bool:
        """Count a failed attempt inside the caller's transaction; after `max_attempts` the
        message is dead. True if it is dead now."""
        db = self.store.db
        await db.execute(
            "UPDATE inbox SET attempts = attempts + 1, error = ?, "
            "state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE state END, "
            "finished_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE finished_at END "
            "WHERE id = ?",
            (reason, max_attempts, max_attempts, iso(now), message_id),
        )
        rows = await db.execute_fetchall("SELECT state FROM inbox WHERE id = ?", (message_id,))
        return bool(rows) and next(iter(rows))[0] == "dead"

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        async with self.store.db.execute(
            "SELECT id, topic, payload, coalesce(error, ''), received_at FROM inbox "
            "WHERE state = 'dead' AND dead_published = 0 ORDER BY rowid LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]

    async def mark_dead_published(self, message_id: str) -> None:
        async with self.store.transaction() as db:
            await db.execute("UPDATE inbox SET dead_published = 1 WHERE id = ?", (message_id,))

    async def prune(self, before: datetime) -> int:
        """Forget finished messages older than `before` (their ids no longer dedupe)."""
        async with (
            self.store.transaction() as db,
            db.execute(
                "DELETE FROM inbox WHERE state != 'pending' AND finished_at < ? "
                "AND (state = 'done' OR dead_published = 1)",
                (iso(before),),
            ) as cursor,
        ):
            return cursor.rowcount

    async def counts(self) -> dict[str, int]:
        async with self.store.db.execute("SELECT state, count(*) FROM inbox GROUP BY state") as cursor:
            return {r[0]: int(r[1]) for r in await cursor.fetchall()}
