"""The gateway's publisher on a real mosquitto: a PUBACK deletes the row; a refusal keeps it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from pbxlab.mosquitto import BrokerHandle

from pbxlink.foundation.config import MqttSettings
from pbxlink.gateway.config import GatewaySettings, Settings
from pbxlink.gateway.intake import Intake
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.publisher import RequestPublisher
from pbxlink.gateway.store import GatewayStore, open_store
from pbxlink.toolkit.metrics import sample
from pbxlink.wire.codec import decode_envelope
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import Request, RequestChannel, Sender

pytestmark = pytest.mark.lab


def request(n: int) -> Request:
    return Request(
        id=f"gw1:web:site:{n}",
        channel=RequestChannel.WEB,
        source="web:site",
        received_at=Instant.from_epoch(1_790_000_000 + n),
        sender=Sender(phone="+380981234567"),
        body=f"form {n}",
    )


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def publishing(
    tmp_path: Path, port: int, requests: list[Request]
) -> AsyncIterator[tuple[GatewayStore, GatewayMetrics, list[bytes]]]:
    store = await open_store(tmp_path / "gw.sqlite3")
    settings = Settings(
        mqtt=MqttSettings(port=port, backoff_initial=0.2, backoff_max=0.5),
        gateway=GatewaySettings(name="gw1"),
    )
    metrics = GatewayMetrics()
    intake = Intake(store, settings, metrics)
    received: list[bytes] = []
    await intake.accept(requests)
    stop = asyncio.Event()

    async def collect(sub: aiomqtt.Client) -> None:
        async for message in sub.messages:
            assert isinstance(message.payload, bytes)
            received.append(message.payload)

    try:
        async with (
            aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as sub,
            asyncio.TaskGroup() as tasks,
        ):
            await sub.subscribe("pbxlink/v1/crm/request", qos=1)
            collector = tasks.create_task(collect(sub), name="test:collect")
            tasks.create_task(RequestPublisher(settings, intake).run(stop), name="test:publisher")
            try:
                yield store, metrics, received
            finally:
                stop.set()
                collector.cancel()
    finally:
        await store.close()


async def test_each_row_is_deleted_after_its_puback_and_arrives_in_order(
    tmp_path: Path, mosquitto_broker: BrokerHandle
) -> None:
    async with publishing(tmp_path, mosquitto_broker.port, [request(n) for n in range(5)]) as (
        store,
        metrics,
        got,
    ):

        async def drained() -> bool:
            return await store.backlog() == 0 and len(got) == 5

        await until(drained)
    assert [decode_envelope(p).id for p in got] == [f"gw1:web:site:{n}" for n in range(5)]
    assert sample(metrics.registry, "pbxlink_gateway_published_total") == 5


@pytest.fixture
def refusing_broker(tmp_path: Path) -> BrokerHandle:
    """A mosquitto whose ACL lets anonymous clients read but not publish (PUBACK 0x87)."""
    acl = tmp_path / "acl"
    acl.write_text("topic read pbxlink/#\n")
    os.chmod(acl, 0o644)
    return BrokerHandle(
        f"test-refusing-{os.getpid()}-{tmp_path.name}",
        tmp_path / "mosquitto",
        extra_config=f"acl_file {acl}\n",
    )


async def test_a_publish_the_broker_refuses_stays_in_the_outbox(
    tmp_path: Path, refusing_broker: BrokerHandle
) -> None:
    try:
        async with publishing(tmp_path, refusing_broker.port, [request(1), request(2)]) as (
            store,
            metrics,
            got,
        ):

            async def retried() -> bool:
                return sample(metrics.registry, "pbxlink_gateway_mqtt_connected") == 0 and bool(
                    sample(metrics.registry, "pbxlink_gateway_backlog") == 2
                )

            await asyncio.sleep(1.5)  # several connect → publish → refused rounds
            await until(retried)
            assert await store.backlog() == 2
        assert got == []
        assert sample(metrics.registry, "pbxlink_gateway_published_total") == 0
    finally:
        refusing_broker.stop()
