"""Delivery test support: a restartable real mosquitto and a recording MQTT consumer.

Each test that needs a broker starts its own mosquitto on a free loopback port (by PID, stopped
by PID). The broker can be stopped and started again on the same port, which is what the outage
tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One mosquitto process on 127.0.0.1:<port>, restartable on the same port."""

    def __init__(self, workdir: Path, *, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            # Started as root (the lab runs as root), mosquitto would drop to user "mosquitto"
            # and could not read pytest's private tmp dirs.
            + ("user root\n" if os.geteuid() == 0 else "")
            # Persistent, like a production broker: a consumer's session (and the QoS 1
            # messages queued for it) survives a broker restart.
            + "persistence true\n"
            + f"persistence_location {workdir}/\n"
            + extra_config
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        pytest.fail("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


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

    task = asyncio.create_task(run())
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
