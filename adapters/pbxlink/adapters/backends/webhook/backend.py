"""The signed generic webhook: each outcome and live event POSTed to every subscriber that wants it.

Two halves, both on the adapter's SQLite file:

- **Enqueue** (`WebhookBackend`, the processor's backend and batch hooks): when a message is
  applied, one row per subscriber whose filters match is written to `webhook_deliveries` in
  the message's own transaction, holding the envelope exactly as it arrived. A message is
  acknowledged to the broker only after that commit, so a crash loses nothing and a
  redelivered message enqueues nothing twice (the row's key is message id + subscriber).
- **Deliver** (`Deliverer`, a task beside the consumer): due rows are POSTed with
  `Content-Type: application/json`, `Idempotency-Key: <message id>` and the signature header
  (signing.py). 2xx → delivered. 5xx, 408, 429, timeouts and refused connections → tried again
  after an exponential backoff with jitter (`backoff_initial_seconds` doubling up to
  `backoff_max_seconds`), kept across restarts in the row. Any other 4xx, or more than
  `max_attempts` tries, or a delivery still failing `max_age_seconds` after the message came →
  dead (kept in the table with the reason, logged as `crm.webhook.dead`). Subscribers are
  independent: a receiver that is down delays only its own deliveries.

A delivery is at least once (a POST whose answer was lost is sent again with the same
Idempotency-Key); a receiver that keeps the keys it has processed makes each effect once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import structlog

from pbxlink.adapters.backends.remote import RemoteRejected
from pbxlink.adapters.backends.webhook import signing
from pbxlink.adapters.backends.webhook.settings import Subscriber, WebhookSettings
from pbxlink.adapters.store import Store
from pbxlink.foundation.config import Secret, read_secret
from pbxlink.rules.actions import (
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    LogRequest,
    Notify,
    RecordCall,
)
from pbxlink.rules.calls import CallOutcome, Envelope, LiveEvent
from pbxlink.rules.facts import ClientFact, EmployeeFact, Stage

log = structlog.get_logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    message_id TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,                   -- unix time of the next try
    created_at REAL NOT NULL,
    finished_at REAL,
    last_error TEXT,
    PRIMARY KEY (message_id, subscriber)
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries (state, subscriber, next_at);
"""

RETRIED_STATUSES = frozenset({408, 425, 429})


class Unsupported(RemoteRejected):
    def __init__(self, what: str) -> None:
        super().__init__(
            0, f'backend = "webhook" writes no {what}: switch the CRM rules off, the receiver decides'
        )


def wants(sub: Subscriber, envelope: Envelope) -> bool:
    """A subscriber's filters: message kinds, live event types, directions, lines (empty = all)."""
    body = envelope.body
    if not isinstance(body, CallOutcome | LiveEvent):
        return False
    kind = envelope.type.value
    if sub.messages and kind not in sub.messages:
        return False
    if isinstance(body, LiveEvent) and sub.events and body.type.value not in sub.events:
        return False
    if sub.directions and body.direction.value not in sub.directions:
        return False
    return not sub.lines or (body.line or "") in sub.lines


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """A subscriber's secrets, current first (read once at start; rotate by restarting)."""

    secrets: tuple[Secret, ...]

    def raw(self) -> list[bytes]:
        return [s.reveal().encode() for s in self.secrets]


def read_keys(settings: WebhookSettings) -> dict[str, SigningKeys]:
    """Every subscriber's secret files (raises ConfigError naming the key of an unreadable one)."""
    keys = {}
    for name, sub in settings.subscribers.items():
        where = f"crm.webhook.subscribers.{name}"
        assert sub.secret_file is not None
        secrets = [read_secret(sub.secret_file, f"{where}.secret_file")]
        if sub.previous_secret_file is not None:
            secrets.append(read_secret(sub.previous_secret_file, f"{where}.previous_secret_file"))
        keys[name] = SigningKeys(tuple(secrets))
    return keys


async def create_schema(store: Store) -> None:
    async with store.transaction() as db:
        for statement in filter(None, (s.strip() for s in SCHEMA.split(";"))):
            await db.execute(statement)


class WebhookBackend:
    """The processor's backend: no CRM look-ups or writes; each message enqueued per subscriber."""

    def __init__(
        self, store: Store, settings: WebhookSettings, *, wake: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.settings = settings
        self.wake = wake
        self.enqueued = 0

    def forget_cached(self) -> None:
        """Nothing is cached."""

    # ---------------------------------------------------------------- batch hooks

    async def begin_batch(self, message_ids: Sequence[str]) -> None:
        """Enqueueing is local: nothing can be half-sent."""

    async def prepare_batch(self, envelopes: Sequence[Envelope]) -> None:
        """No look-ups."""

    def begin_message(self, message_id: str, envelope: Envelope) -> None:
        """Nothing per message before its (empty) plan."""

    async def message_applied(self, message_id: str, envelope: Envelope) -> None:
        wanted = [name for name, sub in self.settings.subscribers.items() if wants(sub, envelope)]
        if not wanted:
            return
        db = self.store.db
        rows = await db.execute_fetchall("SELECT payload FROM inbox WHERE id = ?", (message_id,))
        payload = bytes(next(iter(rows))[0])
        now = time.time()
        await db.executemany(
            "INSERT OR IGNORE INTO webhook_deliveries "
            "(message_id, subscriber, kind, payload, next_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(message_id, name, envelope.type.value, payload, now, now) for name in wanted],
        )
        self.enqueued += len(wanted)

    async def end_batch(self) -> None:
        self.wake()

    def forget_batch(self) -> None:
        """Rows roll back with the transaction."""

    # ---------------------------------------------------------------- CrmBackend (no CRM)

    async def employees(self) -> tuple[EmployeeFact, ...]:
        return ()

    async def clients_by_phone(self, e164: str) -> tuple[ClientFact, ...]:
        return ()

    async def inquiry_numbering(self) -> tuple[int, str | None]:
        return 1, None

    async def stages_applied(self, call_id: str) -> frozenset[Stage]:
        return frozenset()

    async def mark_stage(self, call_id: str, stage: Stage) -> None:
        """Stages matter to CRM rules only."""

    async def create_client(self, action: CreateClient) -> str:
        raise Unsupported("clients")

    async def create_deal(self, action: CreateDeal, client_id: str) -> str:
        raise Unsupported("deals")

    async def create_order(self, action: CreateOrder, client_id: str, call_id: str) -> str:
        raise Unsupported("orders")

    async def create_inquiry(self, action: CreateInquiry, client_id: str | None, call_id: str) -> str:
        raise Unsupported("inquiries")

    async def create_task(
        self,
        action: CreateTask,
        *,
        client_id: str | None,
        order_id: str | None,
        inquiry_id: str | None,
        call_id: str,
    ) -> str:
        raise Unsupported("tasks")

    async def set_responsible(self, client_id: str, employee: str) -> None:
        raise Unsupported("responsibles")

    async def record_call(self, action: RecordCall, client_id: str) -> None:
        """The outcome itself is what the receiver gets."""

    async def notify(self, action: Notify, subject_id: str | None, call_id: str) -> str:
        """The live event itself is what the receiver gets."""
        return "webhook"

    async def clients_by_email(self, email: str) -> tuple[ClientFact, ...]:
        return ()

    # A7 conversations (replies in a thread or chat): requests are not mapped to this backend.
    async def clients_of_requests(self, request_ids: tuple[str, ...]) -> tuple[ClientFact, ...]:
        return ()

    async def open_deal_of_requests(self, request_ids: tuple[str, ...]) -> str | None:
        return None

    async def link_request(self, request_id: str, deal_id: str) -> None:
        """Nothing to link: see open_deal_of_requests."""

    async def deal_is_open(self, deal_id: str) -> bool:
        return False

    async def queue_positions(self) -> tuple[tuple[str, int], ...]:
        return ()

    async def create_ticket(self, action: CreateTicket, client_id: str) -> str:
        raise Unsupported("tickets")

    async def log_request(
        self, action: LogRequest, *, client_id: str | None, deal_id: str | None, ticket_id: str | None
    ) -> None:
        raise Unsupported("request logs")

    async def advance_queue(self, queue_rule: str, next_index: int) -> None:
        raise Unsupported("request queues")


@dataclass(frozen=True, slots=True)
class _Due:
    message_id: str
    subscriber: str
    kind: str
    payload: bytes
    attempts: int
    created_at: float


class Deliverer:
    """POSTs due deliveries (see module doc); `run` until shutdown, woken by `wake()`."""

    def __init__(
        self,
        store: Store,
        settings: WebhookSettings,
        keys: dict[str, SigningKeys],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._observe = observe  # (subscriber, delivered | retry | dead), e.g. a metrics counter
        self.store = store
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self._event = asyncio.Event()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(float(settings.timeout_seconds), connect=5.0),
            transport=transport,
            headers={"User-Agent": "pbxlink-webhook/1"},
        )
        self.delivered = 0
        self.failed_attempts = 0
        self.dead = 0

    def observe(self, subscriber: str, result: str) -> None:
        if self._observe is not None:
            self._observe(subscriber, result)

    def wake(self) -> None:
        self._event.set()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, shutdown: asyncio.Event, idle_seconds: float = 1.0) -> None:
        try:
            while not shutdown.is_set():
                sent = await self.deliver_due()
                if sent:
                    continue
                self._event.clear()
                waiter = asyncio.ensure_future(self._event.wait())
                stopper = asyncio.ensure_future(shutdown.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=idle_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                for task in (waiter, stopper):
                    task.cancel()
        finally:
            await self.aclose()

    async def next_due_in(self) -> float | None:
        async with self.store.transaction() as db:
            rows = await db.execute_fetchall(
                "SELECT min(next_at) FROM webhook_deliveries WHERE state = 'pending'"
            )
        first = next(iter(rows))[0] if rows else None
        return None if first is None else max(0.0, float(first) - self.clock())

    async def deliver_due(self, limit: int = 200) -> int:
        """One round: every subscriber's due deliveries, `concurrency` at a time each. Returns tries made."""
        now = self.clock()
        async with self.store.transaction() as db:  # the lock: never read a batch not yet committed
            rows = await db.execute_fetchall(
                "SELECT message_id, subscriber, kind, payload, attempts, created_at FROM webhook_deliveries "
                "WHERE state = 'pending' AND next_at <= ? ORDER BY created_at, rowid LIMIT ?",
                (now, limit),
            )
        due = [_Due(r[0], r[1], r[2], bytes(r[3]), int(r[4]), float(r[5])) for r in rows]
        if not due:
            return 0
        by_subscriber: dict[str, list[_Due]] = {}
        for item in due:
            by_subscriber.setdefault(item.subscriber, []).append(item)
        async with asyncio.TaskGroup() as group:
            for name, items in by_subscriber.items():
                group.create_task(self._deliver_all(name, items), name=f"webhook-{name}")
        return len(due)

    async def _deliver_all(self, name: str, items: list[_Due]) -> None:
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(item: _Due) -> None:
            async with gate:
                await self._deliver(name, item)

        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item), name=f"webhook-{name}-{item.message_id}")

    async def _deliver(self, name: str, item: _Due) -> None:
        sub = self.settings.subscribers.get(name)
        keys = self.keys.get(name)
        if sub is None or keys is None:
            await self._finish(item, "dead", f"subscriber {name!r} is no longer configured")
            return
        timestamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": item.message_id,
            "X-Pbxlink-Event": item.kind,
            signing.HEADER: signing.header(keys.raw(), timestamp, item.payload),
        }
        error: str
        retry: bool
        try:
            response = await self._http.post(sub.url, content=item.payload, headers=headers)
        except httpx.HTTPError as exc:
            error, retry = f"{type(exc).__name__}", True
        else:
            status = response.status_code
            if 200 <= status < 300:
                self.delivered += 1
                self.observe(name, "delivered")
                await self._finish(item, "delivered", None)
                return
            error = f"HTTP {status}: {response.text[:200]}"
            retry = status >= 500 or status in RETRIED_STATUSES
        self.failed_attempts += 1
        attempts = item.attempts + 1
        age = self.clock() - item.created_at
        if not retry or attempts >= self.settings.max_attempts or age >= self.settings.max_age_seconds:
            why = (
                "refused"
                if not retry
                else f"{attempts} tries"
                if attempts >= self.settings.max_attempts
                else "too old"
            )
            await self._finish(item, "dead", f"{error} ({why})", attempts)
            return
        s = self.settings
        backoff = min(s.backoff_max_seconds, s.backoff_initial_seconds * 2 ** (attempts - 1))
        backoff *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not cryptography
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE webhook_deliveries SET attempts = ?, next_at = ?, last_error = ? "
                "WHERE message_id = ? AND subscriber = ?",
                (attempts, self.clock() + backoff, error, item.message_id, item.subscriber),
            )
        self.observe(name, "retry")
        log.warning(
            "crm.webhook.retry",
            subscriber=name,
            id=item.message_id,
            error=error,
            attempts=attempts,
            in_s=round(backoff, 2),
        )

    async def _finish(self, item: _Due, state: str, error: str | None, attempts: int | None = None) -> None:
        async with self.store.transaction() as db:
            await db.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, finished_at = ?, last_error = ? "
                "WHERE message_id = ? AND subscriber = ?",
                (
                    state,
                    item.attempts + 1 if attempts is None else attempts,
                    self.clock(),
                    error,
                    item.message_id,
                    item.subscriber,
                ),
            )
        if state == "dead":
            self.dead += 1
            self.observe(item.subscriber, "dead")
            log.error("crm.webhook.dead", subscriber=item.subscriber, id=item.message_id, error=error)

    async def counts(self) -> dict[str, int]:
        async with self.store.transaction() as db:
            rows = await db.execute_fetchall("SELECT state, count(*) FROM webhook_deliveries GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}
