"""The gateway's outbox → MQTT: QoS 1, in order, each row deleted only after its PUBACK.

Requests go to ``<topic_prefix>/crm/request`` (the adapter's inbox dedupes by the envelope id),
dead letters to ``gateway.dead_letter_topic``. A broker outage only grows the backlog
(``pbxlink_gateway_backlog``); the sources keep storing meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pbxlink.gateway.config import Settings
from pbxlink.gateway.intake import Intake
from pbxlink.gateway.shutdown import unless_stopped
from pbxlink.toolkit.mqtt import AckingClient, PublishRefused, mqtt_client, mqtt_reconnect

__all__ = ["RequestPublisher"]

log = structlog.get_logger("pbxlink.gateway.publisher")

_PUBACK_TIMEOUT = 30.0
_KEEP_PUBLISHED_IDS = timedelta(days=7)  # a web client retrying with its Idempotency-Key
_KEEP_THREADS = timedelta(days=365)  # a reply a year later still finds its thread


def _properties(message_id: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    props.UserProperty = [("id", message_id)]
    return props


class RequestPublisher:
    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.connected = False

    async def run(self, stop: asyncio.Event) -> None:
        store, metrics = self.intake.store, self.intake.metrics
        policy = mqtt_reconnect(self.settings.mqtt)
        await store.prune(self.intake.clock(), keep_ids=_KEEP_PUBLISHED_IDS, keep_threads=_KEEP_THREADS)
        metrics.backlog.set(await store.backlog())
        while not stop.is_set():
            try:
                client = mqtt_client(
                    self.settings.mqtt,
                    identifier=self.settings.gateway.identifier,
                    client_class=AckingClient,
                    timeout=_PUBACK_TIMEOUT,
                )
                assert isinstance(client, AckingClient)
                async with client:
                    policy.succeeded()
                    self.connected = True
                    metrics.mqtt_connected.set(1)
                    log.info(
                        "gateway_mqtt_connected", host=self.settings.mqtt.host, port=self.settings.mqtt.port
                    )
                    while not stop.is_set():
                        self.intake.stored.clear()
                        rows = await store.pending(200)
                        if not rows:
                            await unless_stopped(
                                self.intake.stored.wait(), stop, name="gateway:publisher:wait"
                            )
                            continue
                        for row in rows:
                            await client.publish_acked(
                                row.topic,
                                row.payload,
                                retain=False,
                                properties=_properties(row.id),
                                puback_timeout=_PUBACK_TIMEOUT,
                            )  # raises unless the broker accepted it (PUBACK reason < 0x80)
                            await store.published(row, self.intake.clock())  # after the PUBACK
                            metrics.published.inc()
                            log.info("gateway_published", id=row.id, topic=row.topic)
                        metrics.backlog.set(await store.backlog())
            except policy.transient as exc:
                if isinstance(exc, PublishRefused):
                    log.error("gateway_publish_refused", topic=exc.topic, reason=str(exc.reason))
                self.connected = False
                metrics.mqtt_connected.set(0)
                delay = policy.failed()
                log.warning("gateway_mqtt_retry", error=str(exc), retry_in=round(delay, 2))
                if not await policy.wait(delay, stop):
                    break
        self.connected = False
        metrics.mqtt_connected.set(0)
