"""The one MQTT client factory: every aiomqtt connection of every process is built here.

TLS (a CA file or the system store, hostname checked), client certificates, username/password,
MQTT 5 (CONNECT properties such as a session expiry, clean start), client id, keepalive and
``TCP_NODELAY`` (QoS 1 round trips otherwise sit on Nagle + delayed ACK, research: 40-88 ms) are
decided once, from the one ``[mqtt]`` section, so no connection can forget one of them (the
directory feed once connected in plain text while the publisher used TLS).
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pbxlink.foundation.config import MqttSettings
from pbxlink.toolkit.reconnect import Backoff, Reconnect

__all__ = ["MQTT_TRANSIENT", "AckingClient", "PublishRefused", "mqtt_client", "mqtt_reconnect", "tls_context"]

# The errors a connection loop retries on: aiomqtt reports refused connects, lost connections,
# timeouts and socket errors as MqttError (and its subclasses).
MQTT_TRANSIENT: Final[tuple[type[BaseException], ...]] = (aiomqtt.MqttError,)

_NODELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class PublishRefused(aiomqtt.MqttError):
    """The broker answered a publish with a failure reason code (MQTT 5 PUBACK >= 0x80)."""

    def __init__(self, topic: str, reason: ReasonCode) -> None:
        super().__init__(f"the broker refused a publish to {topic}: {reason} ({reason.value:#x})")
        self.topic = topic
        self.reason = reason


class AckingClient(aiomqtt.Client):
    """aiomqtt's client plus the PUBACK reason code and disconnect-aware waits: aiomqtt marks a
    publish done on any PUBACK, even one that refuses the message (MQTT 5 reason >= 0x80, e.g.
    "Not authorized" from an ACL), and waits out its timeout after a disconnect.

    Uses aiomqtt 2.5 internals (``_client``, ``_pending_call``, ``_pending_publishes``,
    ``_disconnected``); pyproject pins aiomqtt <2.6 for that reason.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._puback_reasons: dict[int, ReasonCode] = {}

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if mid in self._pending_publishes:
            self._puback_reasons[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def disconnect_reason(self) -> BaseException | None:
        """Why the connection ended (and marks aiomqtt's future as retrieved)."""
        if not self._disconnected.done() or self._disconnected.cancelled():
            return None
        return self._disconnected.exception()

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        properties: Properties,
        puback_timeout: float,
    ) -> None:
        """Publish at QoS 1 and return once the broker accepted it; raise otherwise."""
        info = self._client.publish(topic, payload, 1, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        confirmation = asyncio.Event()
        with self._pending_call(info.mid, confirmation, self._pending_publishes):
            # paho may have received the PUBACK already (the callback found no pending call).
            if not info.is_published():
                async with asyncio.TaskGroup() as waiting:
                    waiter = waiting.create_task(confirmation.wait(), name=f"puback-{info.mid}")
                    disconnected: asyncio.Future[Any] = self._disconnected
                    try:
                        done, _ = await asyncio.wait(
                            {waiter, disconnected},
                            timeout=puback_timeout,
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    finally:
                        waiter.cancel()
                if waiter not in done:
                    if self._disconnected.done():
                        self.disconnect_reason()
                        raise aiomqtt.MqttError("disconnected while waiting for PUBACK")
                    raise aiomqtt.MqttError(f"no PUBACK within {puback_timeout} s")
        reason = self._puback_reasons.pop(info.mid, None)
        if reason is not None and reason.is_failure:
            raise PublishRefused(topic, reason)


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context for ``settings`` (None without ``tls``): server verified, client cert if set."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file), str(settings.key_file) if settings.key_file is not None else None
        )
    return context


def mqtt_client(
    settings: MqttSettings,
    *,
    identifier: str,
    client_class: type[aiomqtt.Client] = aiomqtt.Client,
    session_expiry: int | None = None,
    clean_start: bool = True,
    will: aiomqtt.Will | None = None,
    timeout: float | None = None,
    max_inflight_messages: int | None = None,
) -> aiomqtt.Client:
    """A fresh MQTT 5 client for one connection attempt (use it as ``async with``).

    ``session_expiry`` (seconds) asks the broker to keep the session (subscriptions and
    unacknowledged QoS 1 messages) that long after a disconnect; with ``clean_start=False`` a
    reconnect resumes it.
    """
    properties = None
    if session_expiry is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry
    extra: dict[str, Any] = {}
    if timeout is not None:
        extra["timeout"] = timeout
    if max_inflight_messages is not None:
        extra["max_inflight_messages"] = max_inflight_messages
    password = settings.password.reveal() if settings.password is not None else None
    return client_class(
        settings.host,
        settings.port,
        username=settings.username or None,
        password=password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean_start,
        properties=properties,
        will=will,
        keepalive=settings.keepalive,
        tls_context=tls_context(settings),
        socket_options=_NODELAY,
        **extra,
    )


def mqtt_reconnect(settings: MqttSettings, *, unit_random: Callable[[], float] = random.random) -> Reconnect:
    """The reconnect policy of an MQTT connection loop: ``[mqtt] backoff_*`` on MQTT_TRANSIENT."""
    return Reconnect(
        Backoff(settings.backoff_initial, settings.backoff_max),
        transient=MQTT_TRANSIENT,
        unit_random=unit_random,
    )
