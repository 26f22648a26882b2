"""Every MQTT connection is built by the one factory: against a broker that accepts ONLY TLS with a
client certificate, the publisher, the daemon's directory feed (as the runtime starts it) and the
CRM adapter all connect with the one ``[mqtt]`` section; a plain or certificate-less client cannot.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
from pbxlab.mosquitto import BrokerHandle
from pbxlab.pki import LabPki

from pbxlink.adapters.config import Settings as AdapterConfig
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.store import open_store
from pbxlink.daemon.agi.router import Router
from pbxlink.daemon.config import AgiSettings, Settings, StateSettings
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import Outbox
from pbxlink.daemon.publisher import OutcomePublisher
from pbxlink.daemon.runtime import Daemon
from pbxlink.foundation.config import MqttSettings
from pbxlink.toolkit.mqtt import mqtt_client

WITHIN = 30.0  # seconds: a bound on a hang, not a timing assertion


def _mqtt(broker: BrokerHandle, pki: LabPki) -> MqttSettings:
    return MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        tls=True,
        ca_file=pki.ca_file,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        backoff_initial=0.1,
        backoff_max=0.5,
    )


async def test_a_plain_or_certificateless_client_is_refused_by_the_tls_only_broker(
    tls_broker: tuple[BrokerHandle, LabPki],
) -> None:
    broker, pki = tls_broker
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_client(replace(_mqtt(broker, pki), tls=False), identifier="plain"):
            pass
    without_cert = replace(_mqtt(broker, pki), cert_file=None, key_file=None)
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt_client(without_cert, identifier="no-cert"):
            pass


async def test_publisher_directory_feed_and_adapter_all_connect_over_tls_with_a_client_certificate(
    tls_broker: tuple[BrokerHandle, LabPki], tmp_path: Path
) -> None:
    broker, pki = tls_broker
    mqtt = _mqtt(broker, pki)
    settings = Settings(mqtt=mqtt, agi=AgiSettings(enabled=False), state=StateSettings(directory=tmp_path))
    outbox = await Outbox.open(tmp_path / "outbox.sqlite")
    store = await open_store(tmp_path / "crm.sqlite3")
    publisher = OutcomePublisher(mqtt, outbox, node="tls1", metrics=DaemonMetrics())
    adapter = CrmAdapter(AdapterConfig(mqtt=mqtt), store)
    shutdown = asyncio.Event()
    try:
        async with Router(settings) as router, asyncio.TaskGroup() as tasks:
            publishing = tasks.create_task(publisher.run(), name="publisher")
            # The directory feed exactly as `pbxlink run` starts it (the defect: without TLS).
            feeding = tasks.create_task(Daemon(settings).run_directory_feed(router), name="feed")
            tasks.create_task(adapter.run(shutdown), name="adapter")
            async with asyncio.timeout(WITHIN):
                await publisher.wait_connected()
                await router.feed.subscribed.wait()
                await adapter.ready.wait()
            assert publisher.connected
            publisher.stop()
            shutdown.set()
            await publishing
            feeding.cancel()
    finally:
        await store.close()
        await outbox.close()
    assert adapter.connections == 1
