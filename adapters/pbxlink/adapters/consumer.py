"""The CRM adapter's MQTT side: a shared-subscription consumer that stores before it acks.

aiomqtt 2.x acknowledges QoS 1 messages on receipt unless paho's manual ack is switched on; it is
(`manual_ack_set(True)` on the wrapped paho client), and each PUBACK is sent only after the
message is committed to the inbox. With a persistent session (clean_start off, a session expiry)
the broker redelivers anything unacknowledged after a crash; the inbox drops the duplicates.

A worker task applies pending inbox messages and publishes what the CRM produced: screen pops
(`…/crm/notify/{employee}`), dead letters, and the retained ownership directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiomqtt
import structlog

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import Settings
from pbxlink.adapters.directory import clear_dirty, directory_payload, dirty_numbers
from pbxlink.adapters.inbox import Inbox, Receipt
from pbxlink.adapters.metrics import INBOX_STATES, AdapterMetrics
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import Store
from pbxlink.routing.directory import directory_topic
from pbxlink.rules.settings import CrmSettings
from pbxlink.toolkit.http import Readiness
from pbxlink.toolkit.mqtt import mqtt_client, mqtt_reconnect

log = structlog.get_logger()

_WORK_INTERVAL = 5.0
_BURST = 500
_PARSED_KEPT = 10_000  # envelopes parsed at receipt and not yet applied (about 2 KiB each)
_PRUNE_EVERY = timedelta(hours=1)


class _Stop(Exception):
    """Shutdown was requested."""


class _StoreFailed(Exception):
    """The inbox could not store a message: reconnect so the broker redelivers it."""


# What the connection loop retries on: the broker's transient errors, and a failed inbox write
# (reconnecting makes the broker redeliver what was not acknowledged).
_RETRIED: tuple[type[Exception], ...] = (aiomqtt.MqttError, _StoreFailed)


def _now() -> datetime:
    return datetime.now(UTC)


class CrmAdapter:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        metrics: AdapterMetrics | None = None,
        clock: Callable[[], datetime] = _now,
        batched: bool = True,
    ) -> None:
        self.settings = settings
        self.adapter = settings.adapter
        self.store = store
        self.inbox = Inbox(store)
        self.crm = SqliteCrm(store)
        self.processor = Processor(
            self.inbox,
            self.crm,
            settings.crm,
            max_attempts=self.adapter.max_attempts,
            clock=clock,
            batched=batched,
        )
        self.metrics = metrics
        self.clock = clock
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.received: dict[Receipt, int] = dict.fromkeys(Receipt, 0)
        self.connections = 0
        self._last_prune: datetime | None = None

    def use_rules(self, crm: CrmSettings) -> None:
        """New CRM rules (a SIGHUP reload): the next batch is planned with them; the batch
        being applied finishes with the old ones, so no message is dropped or applied twice."""
        self.settings = replace(self.settings, crm=crm)
        self.processor.settings = crm
        self.wake.set()

    def readiness(self) -> Readiness:
        """/readyz: ready while subscribed to the broker."""
        return Readiness({"mqtt": self.ready.is_set()})

    @property
    def topics(self) -> tuple[str, ...]:
        a = self.adapter
        prefix = self.settings.mqtt.topic_prefix
        share = f"$share/{a.name}/" if a.shared_subscription else ""
        base = f"{share}{prefix}/{a.nodes}/call"
        return f"{base}/outcome", f"{base}/event", f"{share}{prefix}/crm/request"

    def _client(self) -> aiomqtt.Client:
        client = mqtt_client(
            self.settings.mqtt,
            identifier=self.adapter.identifier,
            clean_start=False,
            session_expiry=self.adapter.session_expiry_seconds,
        )
        # aiomqtt 2.5 has no manual-ack API: its paho client is the documented way round.
        client._client.manual_ack_set(True)  # noqa: SLF001 - ack only after the inbox commit
        return client

    async def run(self, shutdown: asyncio.Event) -> None:
        """Consume until `shutdown` is set; reconnects with capped, jittered backoff."""
        reconnect = mqtt_reconnect(self.settings.mqtt)
        stopping = False
        while not stopping and not shutdown.is_set():
            try:
                async with self._client() as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.connections += 1
                    log.info("crm_adapter_connected", topics=self.topics)
                    reconnect.succeeded()
                    self.ready.set()
                    if self.metrics is not None:
                        self.metrics.mqtt_connected.set(1)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._receive(client), name="crm-receive")
                        group.create_task(self._work(client), name="crm-work")
                        group.create_task(self._until(shutdown), name="crm-shutdown")
            except* _Stop:
                stopping = True
            except* _RETRIED as errors:
                self.ready.clear()
                delay = reconnect.failed()
                if self.metrics is not None:
                    self.metrics.mqtt_connected.set(0)
                    self.metrics.reconnects.labels(link="mqtt").inc()
                log.warning(
                    "crm_adapter_disconnected",
                    error=str(errors.exceptions[0]),
                    retry_in=round(delay, 2),
                )
                if not await reconnect.wait(delay, shutdown):
                    stopping = True
        self.ready.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)

    async def _until(self, shutdown: asyncio.Event) -> None:
        await shutdown.wait()
        raise _Stop

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Store each burst of messages in one commit, then acknowledge them."""
        async for first in client.messages:
            burst = [first]
            while len(client.messages) and len(burst) < _BURST:
                burst.append(await anext(client.messages))
            items = [
                (m.topic.value, m.payload if isinstance(m.payload, bytes) else str(m.payload).encode())
                for m in burst
            ]
            try:
                if len(self.processor.parsed) > _PARSED_KEPT:  # messages that failed: parse again
                    self.processor.parsed.clear()
                receipts = await self.inbox.receive_many(items, self.clock(), self.processor.parsed)
            except Exception as exc:
                log.error("crm_inbox_store_failed", messages=len(burst), error=str(exc))
                raise _StoreFailed(str(exc)) from exc
            for message, (topic, _), receipt in zip(burst, items, receipts, strict=True):
                client._client.ack(message.mid, message.qos)  # noqa: SLF001 - see manual_ack_set
                self.received[receipt] += 1
                if self.metrics is not None:
                    self.metrics.received.labels(receipt=receipt.name.lower()).inc()
                if receipt is Receipt.DEAD:
                    log.warning("crm_message_dead_letter", topic=topic)
            self.wake.set()

    async def _work(self, client: aiomqtt.Client) -> None:
        while True:
            try:
                await self.work_once(client)
            except aiomqtt.MqttError:
                raise
            except Exception as exc:  # noqa: BLE001 - a CRM/disk failure must not stop the consumer
                log.error("crm_adapter_work_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), _WORK_INTERVAL)
            self.wake.clear()

    async def work_once(self, client: aiomqtt.Client) -> None:
        started = time.perf_counter()
        processed = await self.processor.run_pending()
        if self.metrics is not None:
            if processed:
                self.metrics.crm_latency.observe(time.perf_counter() - started)
                self.metrics.messages_applied.inc(len(processed))
            for done in processed:
                for action in done.actions:
                    self.metrics.actions.labels(action=type(action).__name__).inc()
            counts = await self.inbox.counts()
            for state in INBOX_STATES:
                self.metrics.inbox.labels(state=state).set(counts.get(state, 0))
        await self._publish_notifications(client)
        await self._publish_dead_letters(client)
        if self.adapter.publish_directory:
            await self._publish_directory(client)
        now = self.clock()
        if self._last_prune is None or now - self._last_prune > _PRUNE_EVERY:
            self._last_prune = now
            await self.inbox.prune(now - timedelta(days=self.adapter.inbox_retention_days))

    async def _publish_notifications(self, client: aiomqtt.Client) -> None:
        async with self.store.db.execute(
            "SELECT id, employee, about, text, subject_id, call_id, reason, created_at "
            "FROM notifications WHERE published_at IS NULL ORDER BY id LIMIT 200"
        ) as cursor:
            rows = await cursor.fetchall()
        publishes = []
        for row in rows:
            document = {
                "schema": 1,
                "id": f"notify:{row[0]}",
                "employee": row[1],
                "about": row[2],
                "text": row[3],
                "subject_id": row[4],
                "call_id": row[5],
                "reason": row[6],
                "created_at": row[7],
            }
            publishes.append(
                client.publish(
                    f"{self.settings.mqtt.topic_prefix}/crm/notify/{row[1]}",
                    json.dumps(document, ensure_ascii=False).encode(),
                    qos=1,
                )
            )
        await asyncio.gather(*publishes)
        if rows:  # a crash before this commit re-sends them: screen pops carry an id to dedupe
            async with self.store.transaction() as db:
                await db.executemany(
                    "UPDATE notifications SET published_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
                    "WHERE id = ?",
                    [(row[0],) for row in rows],
                )

    async def _publish_dead_letters(self, client: aiomqtt.Client) -> None:
        for letter in await self.inbox.dead_letters():
            await client.publish(self.adapter.dead_letter_topic, letter.to_json(self.adapter.name), qos=1)
            await self.inbox.mark_dead_published(letter.id)
            if self.metrics is not None:
                self.metrics.dead_letters.inc()

    async def _publish_directory(self, client: aiomqtt.Client) -> None:
        prefix = f"{self.settings.mqtt.topic_prefix}/directory/"
        now = self.clock()

        async def entries(store: Store) -> tuple[list[tuple[str, int]], list[bytes]]:
            dirty = await dirty_numbers(store)
            return dirty, [await directory_payload(store, e164, now) for e164, _ in dirty]

        dirty, payloads = await self.store.in_thread(entries)
        await asyncio.gather(
            *(
                client.publish(directory_topic(e164, prefix), payload, qos=1, retain=True)
                for (e164, _), payload in zip(dirty, payloads, strict=True)
            )
        )
        if dirty:
            await clear_dirty(self.store, dirty)
