"""Prometheus metrics and the /metrics, /healthz, /readyz endpoints on a tiny asyncio HTTP server.

No dependency: the text exposition format (version 0.0.4) is a few lines to write, and the server
answers three GET paths. It listens on loopback unless configured otherwise (``[http]``).

``/healthz`` answers 200 whenever the event loop runs (it is served by that loop).
``/readyz`` answers 200 only when every readiness check passes, else 503; the body lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import structlog

from pbxlink.daemon import __version__

log = structlog.get_logger(__name__)

LabelValues = tuple[str, ...]

# Seconds from an outcome's commit to its PUBACK, and AMI/MQTT round-trips in general.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind: str = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.documentation}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self._samples()

    def _samples(self) -> Iterator[str]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[LabelValues, float] = {}
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def _samples(self) -> Iterator[str]:
        for key, value in sorted(self._values.items()):
            yield f"{self.name}{_labels_text(self.labelnames, key)} {_format_number(value)}"


class Gauge(_Metric):
    """A value that goes up and down."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[LabelValues, float] = {}
        if not self.labelnames:
            self._values[()] = 0.0

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def _samples(self) -> Iterator[str]:
        for key, value in sorted(self._values.items()):
            yield f"{self.name}{_labels_text(self.labelnames, key)} {_format_number(value)}"


@dataclass(slots=True)
class _HistogramSeries:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Metric):
    """Counts of observations per upper bound, plus their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(sorted(buckets))
        self._series: dict[LabelValues, _HistogramSeries] = {}
        if not self.labelnames:
            self._series[()] = _HistogramSeries([0] * len(self.bounds))

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _HistogramSeries([0] * len(self.bounds))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                series.buckets[i] += 1
        series.total += value
        series.count += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return 0 if series is None else series.count

    def _samples(self) -> Iterator[str]:
        for key, series in sorted(self._series.items()):
            for bound, n in zip(self.bounds, series.buckets, strict=True):
                le = f'le="{_format_number(bound)}"'
                yield f"{self.name}_bucket{_labels_text(self.labelnames, key, le)} {n}"
            inf = 'le="+Inf"'
            yield f"{self.name}_bucket{_labels_text(self.labelnames, key, inf)} {series.count}"
            labels = _labels_text(self.labelnames, key)
            yield f"{self.name}_sum{labels} {_format_number(series.total)}"
            yield f"{self.name}_count{labels} {series.count}"


M = TypeVar("M", bound=_Metric)


@dataclass(slots=True)
class Registry:
    """The metrics a process exposes, rendered in registration order."""

    metrics: list[_Metric] = field(default_factory=list)

    def add(self, metric: M) -> M:
        if any(m.name == metric.name for m in self.metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "".join(line + "\n" for m in self.metrics for line in m.render())


class DaemonMetrics:
    """Every metric of ``pbxlink run``; the names are documented in docs/delivery.md."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.build_info = r.add(Gauge("pbxlink_build_info", "pbxlink version", ["version"]))
        self.build_info.set(1, version=__version__)
        self.ami_events = r.add(
            Counter("pbxlink_ami_events_total", "AMI events received, by event name", ["event"])
        )
        self.ami_frames_rejected = r.add(
            Counter(
                "pbxlink_ami_frames_rejected_total",
                "AMI frames that could not be used (malformed, oversized, undecodable)",
                ["reason"],
            )
        )
        self.ami_connected = r.add(Gauge("pbxlink_ami_connected", "1 while logged in to AMI"))
        self.mqtt_connected = r.add(Gauge("pbxlink_mqtt_connected", "1 while connected to the MQTT broker"))
        self.reconnects = r.add(
            Counter("pbxlink_reconnects_total", "connection attempts after a failure", ["link"])
        )
        self.active_calls = r.add(Gauge("pbxlink_active_calls", "calls the tracker is following"))
        self.outcomes = r.add(
            Counter(
                "pbxlink_outcomes_total", "call outcomes committed to the outbox", ["direction", "answered"]
            )
        )
        self.outbox_written = r.add(
            Counter("pbxlink_outbox_written_total", "messages committed to the outbox", ["kind"])
        )
        self.outbox_write_errors = r.add(
            Counter(
                "pbxlink_outbox_write_errors_total",
                "outbox writes that failed (disk full, read-only, I/O error)",
            )
        )
        self.outbox_pending = r.add(
            Gauge(
                "pbxlink_outbox_pending",
                "messages committed but not yet acknowledged by the broker",
                ["kind"],
            )
        )
        self.outbox_oldest_pending_age = r.add(
            Gauge(
                "pbxlink_outbox_oldest_pending_age_seconds",
                "age of the oldest unacknowledged message (0 when none)",
            )
        )
        self.published = r.add(
            Counter("pbxlink_published_total", "messages acknowledged by the broker (PUBACK)", ["kind"])
        )
        self.publish_failures = r.add(
            Counter(
                "pbxlink_publish_failures_total",
                "publishes without a successful PUBACK (timeout, disconnect, broker refusal)",
                ["reason"],
            )
        )
        self.expired = r.add(
            Counter(
                "pbxlink_events_expired_total",
                "live events dropped because their expiry passed before the broker was reachable",
            )
        )
        self.publish_latency = r.add(
            Histogram(
                "pbxlink_publish_latency_seconds",
                "time from a message's commit to the outbox to its PUBACK",
                ["kind"],
            )
        )
        self.config_reloads = r.add(Counter("pbxlink_config_reloads_total", "SIGHUP reloads", ["result"]))


# ---------------------------------------------------------------------------------------------
# The HTTP side


@dataclass(frozen=True, slots=True)
class Readiness:
    """The named checks behind /readyz; ready when all pass."""

    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_MAX_REQUEST_HEAD: Final = 8192
_READ_TIMEOUT: Final = 5.0


class HealthServer:
    """Serves /metrics, /healthz and /readyz. Use as ``async with HealthServer(...) as server``."""

    def __init__(
        self,
        registry: Registry,
        readiness: Callable[[], Readiness],
        *,
        host: str = "127.0.0.1",
        port: int = 9108,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "the server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_MAX_REQUEST_HEAD
        )
        log.info("http_listening", host=self._host, port=self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return 400, text, b"bad request\n"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, text, b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz", "/readyz"):
            return 404, text, b"not found: try /metrics, /healthz or /readyz\n"
        if method != "GET":
            return 405, text, b"only GET\n"
        if target == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._registry.render().encode()
        if target == "/healthz":
            return 200, text, b"ok\n"
        readiness = self._readiness()
        body = json.dumps({"ready": readiness.ready, "checks": dict(readiness.checks)}).encode()
        return (200 if readiness.ready else 503), "application/json", body + b"\n"
