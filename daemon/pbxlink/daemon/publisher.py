"""The publisher: drains the outbox to the MQTT broker, marking rows sent only after PUBACK.

aiomqtt 2.5 does not reconnect by itself, so this module owns the loop: connect, announce
presence, publish pending rows in commit order, and on any broker or network failure wait a
capped, jittered backoff and start again with a fresh client. A fresh client per connection
means nothing of a failed connection lingers in paho's memory: the outbox is the only queue.

Two things aiomqtt 2.5 leaves out and this module adds:

* the PUBACK reason code: aiomqtt marks a publish done on any PUBACK, even one that refuses the
  message (MQTT 5 reason >= 0x80, e.g. "Not authorized" from an ACL); such a row stays pending;
* a disconnect while waiting for a PUBACK fails the wait at once, instead of after the timeout.

It also sets ``TCP_NODELAY`` (research: QoS 1 round trips otherwise sit on Nagle + delayed ACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pbxlink.daemon import __version__
from pbxlink.daemon.envelope import ENVELOPE_SCHEMA, MessageKind, NodeTopics, iso_utc
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import Outbox, PendingMessage
from pbxlink.foundation.config import MqttSettings
from pbxlink.toolkit.mqtt import MQTT_TRANSIENT, AckingClient, PublishRefused, mqtt_client, mqtt_reconnect

log = structlog.get_logger(__name__)

CONTENT_TYPE: Final = "application/json"
PUBLISH_TIMEOUT: Final = 10.0  # seconds to wait for a PUBACK before the connection is dropped
BATCH_SIZE: Final = 200  # rows read from the outbox per round; published pipelined, in order
IDLE_RECHECK: Final = 5.0  # seconds between outbox checks when nobody wakes the publisher


def _publish_properties(message: PendingMessage | None, *, expiry: int | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = 1
    props.ContentType = CONTENT_TYPE
    if message is not None:
        user = [("id", message.message_id)]
        if message.direction is not None:
            user.append(("direction", message.direction))
        if message.answered is not None:
            user.append(("answered", "true" if message.answered else "false"))
        props.UserProperty = user
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    return props


class OutcomePublisher:
    """Publishes the outbox. Run :meth:`run` as a task; call :meth:`wake` after each commit."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        node: str,
        metrics: DaemonMetrics,
        clock: Callable[[], float] = time.time,
        unit_random: Callable[[], float] = random.random,
        publish_timeout: float = PUBLISH_TIMEOUT,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._node = node
        self._topics = NodeTopics(node, settings.topic_prefix)
        self._metrics = metrics
        self._clock = clock
        self._publish_timeout = publish_timeout
        self._batch_size = batch_size
        self._reconnect = mqtt_reconnect(settings, unit_random=unit_random)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._connected = False
        self._connected_once = asyncio.Event()
        self.session = uuid.uuid4().hex
        self._since = iso_utc(datetime.now(UTC))
        self._connections = 0
        self._refusals = 0  # connections in a row that ended with a refused publish
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def wake(self) -> None:
        """New rows were committed: publish them now rather than at the next idle check."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask :meth:`run` to publish what is pending (bounded by the caller), say offline, end."""
        self._stopping.set()
        self._wakeup.set()

    async def wait_connected(self) -> None:
        await self._connected_once.wait()

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; return after :meth:`stop` and a clean exit."""
        while True:
            client = self._new_client()
            attempt: int | None = None
            try:
                async with client:
                    self._on_connected()
                    # A broker that keeps refusing a message must not be hammered: refusals
                    # in a row keep growing the backoff although each connect succeeds.
                    self._reconnect.failures = self._refusals
                    await self._announce(client, "online")
                    await self._drain(client)
                    # Stopping: everything committed is acknowledged (or the caller's bound hit).
                    await self._announce(client, "offline")
                    self._on_disconnected(None)
                    return
            except MQTT_TRANSIENT as exc:
                client.disconnect_reason()
                if isinstance(exc, PublishRefused):
                    self._refusals += 1
                    attempt = self._refusals
                self._on_disconnected(exc)
            if self._stopping.is_set():
                log.warning("mqtt_stopped_disconnected", pending="kept in the outbox")
                return
            delay = self._reconnect.failed(attempt=attempt)
            self._metrics.reconnects.labels(link="mqtt").inc()
            log.info("mqtt_reconnect_wait", seconds=round(delay, 2), attempt=self._reconnect.failures)
            if await self._reconnect.wait(delay, self._stopping):
                continue
            log.warning("mqtt_stopped_disconnected", pending="kept in the outbox")
            return

    # -- connection -------------------------------------------------------------------------

    def _new_client(self) -> AckingClient:
        s = self._settings
        self._connections += 1
        will = aiomqtt.Will(
            topic=self._topics.status,
            payload=self._presence("offline"),
            qos=1,
            retain=True,
            properties=_will_properties(),
        )
        client = mqtt_client(
            s,
            identifier=s.client_id or f"pbxlink-{self._node}",
            client_class=AckingClient,
            will=will,
            timeout=self._publish_timeout,
            max_inflight_messages=20,
        )
        assert isinstance(client, AckingClient)
        # A batch is published pipelined on purpose; aiomqtt would warn past 10 pending calls.
        client.pending_calls_threshold = self._batch_size + 10
        return client

    def _presence(self, state: str) -> bytes:
        body = {
            "schema": ENVELOPE_SCHEMA,
            "state": state,
            "node": self._node,
            "session": self.session,
            "connection": self._connections,
            "since": self._since,
            "version": __version__,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    async def _announce(self, client: AckingClient, state: str) -> None:
        await client.publish_acked(
            self._topics.status,
            self._presence(state),
            retain=True,
            properties=_publish_properties(None),
            puback_timeout=self._publish_timeout,
        )
        log.info("mqtt_presence", state=state, session=self.session, connection=self._connections)

    def _on_connected(self) -> None:
        self._connected = True
        self._connected_once.set()
        self.last_error = None
        self._metrics.mqtt_connected.set(1)
        log.info(
            "mqtt_connected",
            host=self._settings.host,
            port=self._settings.port,
            session=self.session,
            connection=self._connections,
        )

    def _on_disconnected(self, exc: BaseException | None) -> None:
        was = self._connected
        self._connected = False
        self._metrics.mqtt_connected.set(0)
        if exc is None:
            log.info("mqtt_disconnected", reason="stopping")
            return
        self.last_error = str(exc)
        log.warning(
            "mqtt_connection_failed" if not was else "mqtt_connection_lost",
            error=str(exc),
            error_type=type(exc).__name__,
        )

    # -- draining ---------------------------------------------------------------------------

    async def _drain(self, client: AckingClient) -> None:
        """Publish pending rows until :meth:`stop` finds the outbox empty."""
        while True:
            self._wakeup.clear()
            batch = await self._outbox.pending(limit=self._batch_size)
            if batch:
                await self._publish_batch(client, batch)
                continue
            if self._stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), IDLE_RECHECK)

    async def _publish_batch(self, client: AckingClient, batch: Sequence[PendingMessage]) -> None:
        now = self._clock()
        expired = [m.seq for m in batch if m.expires_at is not None and m.expires_at <= now]
        if expired:
            await self._outbox.mark_expired(expired, now=now)
            self._metrics.expired.inc(len(expired))
        live = [m for m in batch if m.expires_at is None or m.expires_at > now]
        # Started in commit order, so paho writes them to the socket in that order; the
        # broker forwards one publisher's messages on a topic in the order it received them.
        # (gather wraps them in tasks in argument order.)
        results = await asyncio.gather(
            *(self._publish_one(client, m, now) for m in live), return_exceptions=True
        )
        acked_at = self._clock()
        acked = [m for m, r in zip(live, results, strict=True) if r is None]
        failed = [(m, r) for m, r in zip(live, results, strict=True) if r is not None]
        if acked:
            if not failed:
                self._refusals = 0
            await self._outbox.mark_sent([m.seq for m in acked], now=acked_at)
            for m in acked:
                self._metrics.published.labels(kind=m.kind.value).inc()
                self._metrics.publish_latency.labels(kind=m.kind.value).observe(
                    max(0.0, acked_at - m.created_at)
                )
        if failed:
            await self._outbox.count_attempt([m.seq for m, _ in failed])
            for _m, error in failed:
                reason = "refused" if isinstance(error, PublishRefused) else "no_puback"
                self._metrics.publish_failures.labels(reason=reason).inc()
            first_message, first = failed[0]
            if isinstance(first, PublishRefused):
                log.error(
                    "mqtt_publish_refused",
                    error=str(first),
                    message_id=first_message.message_id,
                    hint="check the broker ACL for this node's topics",
                )
            if isinstance(first, aiomqtt.MqttError):
                raise first  # the connection is suspect: reconnect, republish what is pending
            raise first

    async def _publish_one(self, client: AckingClient, message: PendingMessage, now: float) -> None:
        expiry = None
        if message.kind is MessageKind.EVENT and message.expires_at is not None:
            expiry = max(1, math.ceil(message.expires_at - now))
        await client.publish_acked(
            message.topic,
            message.payload,
            retain=False,
            properties=_publish_properties(message, expiry=expiry),
            puback_timeout=self._publish_timeout,
        )


def _will_properties() -> Properties:
    props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = 1
    props.ContentType = CONTENT_TYPE
    return props
