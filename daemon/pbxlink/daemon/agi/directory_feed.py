"""MQTT → directory store: the consumer of ``pbxlink/v1/directory/#`` (retained, QoS 1).

`DirectoryFeed.consume(client)` works on an aiomqtt client the caller owns (the daemon may share
one connection); `DirectoryFeed.run(...)` owns its own connection with a capped, jittered
reconnect loop. Messages are applied in batches (whatever arrived together, up to
`batch_size`), so the retained flood after a (re)subscribe costs one transaction per batch.
A message that breaks the contract is logged with the reason, counted and dropped; the entry
it would have replaced stays as it was.

The subscription is QoS 0 by default, on purpose: the directory is retained state, re-sent in
full on every (re)subscribe, so a message lost with a dropped connection comes back at the next
subscribe; and mosquitto (2.0, default ``max_queued_messages 1000``) silently drops retained
messages beyond about 1,020 when they are delivered at QoS 1 (measured: 5,000 retained → 1,020
at QoS 1, 5,000 at QoS 0). Use ``qos=1`` only with a broker configured for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiomqtt
import structlog

from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.foundation.config import MqttSettings
from pbxlink.routing.directory import (
    DIRECTORY_TOPIC_PREFIX,
    DirectoryPayloadError,
    DirectoryUpdate,
    parse_directory_message,
)
from pbxlink.toolkit.mqtt import mqtt_client, mqtt_reconnect

__all__ = ["DirectoryFeed", "FeedCounters"]

log = structlog.get_logger()


@dataclass(slots=True)
class FeedCounters:
    received: int = 0
    applied: int = 0
    deleted: int = 0
    rejected: int = 0
    batches: int = 0


def _payload_bytes(payload: object) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


class DirectoryFeed:
    """Applies directory messages from MQTT to a `DirectoryStore`."""

    def __init__(
        self,
        store: DirectoryStore,
        *,
        topic_prefix: str = DIRECTORY_TOPIC_PREFIX,
        batch_size: int = 1000,
        qos: int = 0,
    ) -> None:
        self.store = store
        self.topic_prefix = topic_prefix if topic_prefix.endswith("/") else topic_prefix + "/"
        self.batch_size = batch_size
        self.qos = qos
        self.counters = FeedCounters()
        self.subscribed = asyncio.Event()

    @property
    def topic_filter(self) -> str:
        return self.topic_prefix + "#"

    def _parse(self, message: aiomqtt.Message) -> DirectoryUpdate | None:
        topic = message.topic.value
        self.counters.received += 1
        try:
            return parse_directory_message(topic, _payload_bytes(message.payload), self.topic_prefix)
        except DirectoryPayloadError as exc:
            self.counters.rejected += 1
            log.warning("directory_message_rejected", topic=topic, field=exc.field, problem=exc.problem)
            return None

    async def _apply(self, messages: list[aiomqtt.Message]) -> None:
        updates = [u for u in (self._parse(m) for m in messages) if u is not None]
        if not updates:
            return
        await self.store.apply(updates)
        self.counters.batches += 1
        for update in updates:
            if update.entry is None:
                self.counters.deleted += 1
            else:
                self.counters.applied += 1

    async def consume(self, client: aiomqtt.Client) -> None:
        """Subscribe and apply messages until the connection drops (raises aiomqtt.MqttError)."""
        await client.subscribe(self.topic_filter, qos=self.qos)
        self.subscribed.set()
        log.info("directory_feed_subscribed", topic=self.topic_filter)
        messages = client.messages
        async for first in messages:
            batch = [first]
            while len(batch) < self.batch_size and len(messages) > 0:
                batch.append(await anext(messages))
            relevant = [m for m in batch if m.topic.matches(self.topic_filter)]
            await self._apply(relevant)

    async def run(self, settings: MqttSettings, *, identifier: str) -> None:
        """Own connection (built by the one factory: TLS, auth), reconnecting until cancelled."""
        reconnect = mqtt_reconnect(settings)
        while True:
            try:
                async with mqtt_client(settings, identifier=identifier) as client:
                    reconnect.succeeded()
                    await self.consume(client)
            except reconnect.transient as exc:
                self.subscribed.clear()
                delay = reconnect.failed()
                log.warning("directory_feed_disconnected", error=str(exc), retry_in=round(delay, 2))
                await reconnect.wait(delay)
