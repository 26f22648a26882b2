"""Prometheus text output and the /metrics, /healthz, /readyz server (real loopback sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest

from pbxlink.daemon.metrics import (
    Counter,
    DaemonMetrics,
    Gauge,
    HealthServer,
    Histogram,
    Readiness,
    Registry,
)


def test_counter_and_gauge_render_in_the_text_format_with_escaped_labels() -> None:
    registry = Registry()
    events = registry.add(Counter("x_events_total", "events", ["event"]))
    up = registry.add(Gauge("x_up", "up"))
    events.inc(event="Newchannel")
    events.inc(2, event='Odd"name\\')
    up.set(1)
    assert registry.render() == (
        "# HELP x_events_total events\n"
        "# TYPE x_events_total counter\n"
        'x_events_total{event="Newchannel"} 1\n'
        'x_events_total{event="Odd\\"name\\\\"} 2\n'
        "# HELP x_up up\n"
        "# TYPE x_up gauge\n"
        "x_up 1\n"
    )


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    latency = registry.add(Histogram("x_seconds", "latency", buckets=(0.1, 1.0)))
    for value in (0.05, 0.5, 0.5, 3.0):
        latency.observe(value)
    lines = registry.render().splitlines()
    assert lines[2:] == [
        'x_seconds_bucket{le="0.1"} 1',
        'x_seconds_bucket{le="1"} 3',
        'x_seconds_bucket{le="+Inf"} 4',
        "x_seconds_sum 4.05",
        "x_seconds_count 4",
    ]


def test_wrong_labels_and_negative_counter_increments_are_refused() -> None:
    counter = Counter("x_total", "x", ["kind"])
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(other="a")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, kind="a")


def test_the_same_metric_name_cannot_be_registered_twice() -> None:
    registry = Registry()
    registry.add(Gauge("x", "x"))
    with pytest.raises(ValueError, match="twice"):
        registry.add(Counter("x", "x"))


def test_daemon_metrics_render_every_family_once() -> None:
    text = DaemonMetrics().registry.render()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    assert "pbxlink_publish_latency_seconds" in types
    assert "pbxlink_outbox_pending" in types


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
    metrics.published.inc(kind="call.outcome")
    checks = {"ami": True, "mqtt": False}
    async with HealthServer(metrics.registry, lambda: Readiness(dict(checks)), port=0) as server:
        status, body = await _get(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        assert b'pbxlink_published_total{kind="call.outcome"} 1' in body

        status, body = await _get(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"ok\n")

        status, body = await _get(server.port, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert status == 503
        assert json.loads(body) == {"ready": False, "checks": {"ami": True, "mqtt": False}}

        checks["mqtt"] = True
        status, body = await _get(server.port, b"GET /readyz?verbose=1 HTTP/1.0\r\n\r\n")
        assert status == 200
        assert json.loads(body)["ready"] is True


async def test_server_refuses_unknown_paths_methods_and_garbage() -> None:
    async with HealthServer(Registry(), lambda: Readiness({}), port=0) as server:
        assert (await _get(server.port, b"GET /admin HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await _get(server.port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await _get(server.port, b"\x16\x03\x01 garbage\r\n\r\n"))[0] == 400
        oversized = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await _get(server.port, oversized))[0] == 400
        # And it still serves after all that.
        assert (await _get(server.port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
