"""The daemon's metrics (prometheus_client) and the /metrics, /healthz, /readyz server (real sockets)."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pbxlink.daemon.agi.directory_feed import FeedCounters
from pbxlink.daemon.agi.server import AgiCounters
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.toolkit.http import HealthServer, Readiness
from pbxlink.toolkit.metrics import sample


def _families(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [family.name for family in text_string_to_metric_families(text)]


def test_daemon_metrics_expose_every_family_once() -> None:
    names = _families(DaemonMetrics().registry)
    assert len(names) == len(set(names))
    assert "pbxlink_publish_latency_seconds" in names
    assert "pbxlink_outbox_pending" in names


def test_two_daemons_in_one_process_do_not_share_counters() -> None:
    first, second = DaemonMetrics(), DaemonMetrics()
    first.published.labels(kind="call.outcome").inc()
    assert sample(first.registry, "pbxlink_published_total", kind="call.outcome") == 1
    assert sample(second.registry, "pbxlink_published_total", kind="call.outcome") == 0


def test_agi_counters_are_exported_at_scrape_time_and_absent_while_agi_is_off() -> None:
    metrics = DaemonMetrics()
    counters, feed = AgiCounters(), FeedCounters()
    running: list[tuple[AgiCounters, FeedCounters]] = []
    metrics.export_agi(lambda: running[0] if running else None)
    assert sample(metrics.registry, "pbxlink_agi_deadline_hits_total") == 0
    running.append((counters, feed))
    counters.connections, counters.answered, counters.routed, counters.deadline = 5, 4, 3, 1
    counters.over_limit = 1
    feed.rejected = 2
    r = metrics.registry
    assert sample(r, "pbxlink_agi_requests_total") == 5
    assert sample(r, "pbxlink_agi_decisions_total", result="routed") == 3
    assert sample(r, "pbxlink_agi_decisions_total", result="no_route") == 1
    assert sample(r, "pbxlink_agi_deadline_hits_total") == 1
    assert sample(r, "pbxlink_agi_rejected_total", reason="over_limit") == 1
    assert sample(r, "pbxlink_directory_messages_total", result="rejected") == 2


async def _get(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_server_answers_metrics_health_and_readiness_over_http() -> None:
    metrics = DaemonMetrics()
    metrics.published.labels(kind="call.outcome").inc()
    checks = {"ami": True, "mqtt": False}
    async with HealthServer(metrics.registry, lambda: Readiness(dict(checks)), port=0) as server:
        status, body = await _get(
            server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status == 200
        assert b'pbxlink_published_total{kind="call.outcome"} 1.0' in body

        status, body = await _get(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert (status, body) == (200, b"ok\n")

        status, body = await _get(
            server.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status == 503
        assert json.loads(body) == {"ready": False, "checks": {"ami": True, "mqtt": False}}

        checks["mqtt"] = True
        status, body = await _get(server.port, b"GET /readyz?verbose=1 HTTP/1.0\r\n\r\n")
        assert status == 200
        assert json.loads(body)["ready"] is True


async def test_server_refuses_unknown_paths_methods_and_garbage() -> None:
    async with HealthServer(CollectorRegistry(), lambda: Readiness({}), port=0) as server:
        close = b"Host: x\r\nConnection: close\r\n\r\n"
        assert (await _get(server.port, b"GET /admin HTTP/1.1\r\n" + close))[0] == 404
        assert (await _get(server.port, b"POST /metrics HTTP/1.1\r\n" + close))[0] == 405
        assert (await _get(server.port, b"\x16\x03\x01 garbage\r\n\r\n"))[0] == 400
        oversized = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await _get(server.port, oversized))[0] == 400
        # And it still serves after all that.
        assert (await _get(server.port, b"GET /healthz HTTP/1.1\r\n" + close))[0] == 200
