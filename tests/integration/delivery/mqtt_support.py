"""Delivery test support: brokers with their own config (the lab's one launcher) and a recording
MQTT consumer. A broker can be stopped and started again on the same port (outage tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pbxlab.mosquitto import BrokerHandle, BrokerTls


def lab_broker(tmp_path: Path, *, extra_config: str = "", tls: BrokerTls | None = None) -> BrokerHandle:
    """A broker of the one lab launcher with its own config (ACL, passwords, TLS), started."""
    state = tmp_path / "mosquitto"
    return BrokerHandle(f"test-{os.getpid()}-{tmp_path.name}", state, extra_config=extra_config, tls=tls)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, Any]

    @property
    def body(self) -> Any:
        return json.loads(self.payload)


@dataclass
class RecordingConsumer:
    """Subscribes to a node's topics and keeps every message; dedupes by envelope id on demand."""

    messages: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def ids(self, kind: str) -> list[str]:
        return [m.body["id"] for m in self.messages if m.topic.endswith(kind)]

    def unique_ids(self, kind: str) -> set[str]:
        return set(self.ids(kind))

    async def wait_for(self, predicate: Any, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                self.arrived.clear()
                await self.arrived.wait()


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``predicate`` (sync or async) until true; fail with TimeoutError after ``within``."""
    async with asyncio.timeout(within):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


def _props(message: aiomqtt.Message) -> dict[str, Any]:
    props = message.properties
    if props is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("ContentType", "PayloadFormatIndicator", "MessageExpiryInterval"):
        if hasattr(props, name):
            out[name] = getattr(props, name)
    if hasattr(props, "UserProperty"):
        out["UserProperty"] = dict(props.UserProperty)
    return out


@contextlib.asynccontextmanager
async def recording_consumer(port: int, topic: str = "pbxlink/v1/#") -> AsyncIterator[RecordingConsumer]:
    """A consumer like an adapter: persistent session, QoS 1, reconnects while the broker is away."""
    consumer = RecordingConsumer()
    subscribed = asyncio.Event()
    identifier = f"recorder-{id(consumer)}"

    async def run() -> None:
        while True:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    port,
                    identifier=identifier,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        consumer.messages.append(
                            Received(
                                str(message.topic), bytes(payload), bool(message.retain), _props(message)
                            )
                        )
                        consumer.arrived.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(run(), name="recording-consumer")
        try:
            async with asyncio.timeout(10):
                await subscribed.wait()
            yield consumer
        finally:
            task.cancel()
