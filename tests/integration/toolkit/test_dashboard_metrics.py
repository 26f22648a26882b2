"""Every metric the Grafana dashboard and the Prometheus alert rules query is exported, live.

A real daemon (``pbxlink run`` against the lab's Asterisk and a mosquitto, routing on) and a real
CRM adapter (``pbxlink.adapters.service.serve`` with its ``[adapter] http_port``) are started; the
names found in config/grafana/pbxlink.json and config/prometheus/pbxlink-alerts.yml must all be
declared in their /metrics output. A renamed metric or a dashboard typo fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pbxlab.mosquitto import BrokerHandle
from pbxlab.ports import free_port
from pbxlab.session import LabSession

from pbxlink.adapters.config import AdapterSettings, Settings
from pbxlink.adapters.service import serve
from pbxlink.foundation.config import MqttSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "delivery"))  # the daemon process helper
from lab_support import new_daemon

pytestmark = pytest.mark.lab

REPO = Path(__file__).parents[3]
DASHBOARD = REPO / "config" / "grafana" / "pbxlink.json"
ALERTS = REPO / "config" / "prometheus" / "pbxlink-alerts.yml"
_NAME = re.compile(r"\bpbxlink_[a-z0-9_]+\b")


def _dashboard_queries() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in document["panels"] for t in panel["targets"]]
    queries += [v["query"] for v in document["templating"]["list"] if v["type"] == "query"]
    return queries


def _alert_queries() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(rule["alert"] and rule["expr"] for rule in rules)
    return [rule["expr"] for rule in rules]


def _exported(text: str) -> set[str]:
    """Sample names a family declares: ``x`` (gauge, counter ``x_total``), ``x_bucket/_sum/_count``."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def test_the_dashboard_and_the_rules_query_the_things_the_issue_asks_for() -> None:
    names = {n for q in _dashboard_queries() + _alert_queries() for n in _NAME.findall(q)}
    for wanted in (
        "pbxlink_active_calls",
        "pbxlink_outcomes_total",
        "pbxlink_publish_latency_seconds_bucket",
        "pbxlink_outbox_pending",
        "pbxlink_agi_decisions_total",
        "pbxlink_agi_deadline_hits_total",
        "pbxlink_ami_connected",
        "pbxlink_mqtt_connected",
        "pbxlink_adapter_dead_letters_total",
    ):
        assert wanted in names


async def test_every_metric_of_the_dashboard_and_the_alert_rules_is_in_the_live_metrics(
    asterisk_lab: LabSession, mosquitto_broker: BrokerHandle, tmp_path: Path
) -> None:
    (tmp_path / "daemon").mkdir()
    daemon = new_daemon(tmp_path / "daemon", asterisk_lab.instance, mosquitto_broker.port)
    daemon.config = replace(daemon.config, agi_port=free_port())  # routing on: the AGI metrics
    daemon.write_config()
    adapter_port = free_port()
    adapter = Settings(
        mqtt=MqttSettings(port=mosquitto_broker.port),
        adapter=AdapterSettings(database=str(tmp_path / "crm.sqlite3"), http_port=adapter_port),
    )
    shutdown = asyncio.Event()
    daemon.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(serve(adapter, shutdown=shutdown), name="adapter")
            await asyncio.to_thread(daemon.wait_ready)
            async with asyncio.timeout(30):
                while True:
                    try:
                        adapter_text = await asyncio.to_thread(_get, adapter_port, "/metrics")
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
            daemon_text = await asyncio.to_thread(_get, daemon.config.http_port, "/metrics")
            shutdown.set()
    finally:
        daemon.stop()
    exported = _exported(daemon_text) | _exported(adapter_text)
    queried = {n for q in _dashboard_queries() + _alert_queries() for n in _NAME.findall(q)}
    assert queried - exported == set()
    assert "pbxlink_agi_deadline_hits_total" in _exported(daemon_text)
    assert "pbxlink_adapter_inbox_messages" in _exported(adapter_text)
