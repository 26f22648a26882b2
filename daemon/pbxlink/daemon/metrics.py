"""The metrics of ``pbxlink run`` (prometheus_client); names documented in docs/delivery.md.

Served with /healthz and /readyz by :class:`pbxlink.toolkit.http.HealthServer`. The AGI
server's and the directory feed's counters are plain attributes of those objects (no metric
library in their hot paths); :class:`AgiCollector` reads them at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pbxlink.daemon import __version__
from pbxlink.daemon.agi.directory_feed import FeedCounters
from pbxlink.daemon.agi.server import AgiCounters
from pbxlink.toolkit.metrics import LATENCY_BUCKETS

__all__ = ["AgiCollector", "DaemonMetrics"]

# AgiCounters fields that count refused or failed sessions, exported as one family by reason.
_AGI_REJECTED = (
    "early_close",
    "bad_request",
    "oversize",
    "slow_request",
    "unknown_script",
    "over_limit",
    "answer_failed",
)


class AgiCollector(Collector):
    """Exports the AGI server's and the directory feed's counters (nothing while AGI is off)."""

    def __init__(self, source: Callable[[], tuple[AgiCounters, FeedCounters] | None]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # names are known only at collect time; the registry must not pre-check them

    def collect(self) -> Iterator[Metric]:
        agi = CounterMetricFamily("pbxlink_agi_requests", "FastAGI sessions accepted")
        answered = CounterMetricFamily(
            "pbxlink_agi_decisions",
            "routing answers sent to Asterisk, by result (routed: an owner found; no_route)",
            labels=["result"],
        )
        deadline = CounterMetricFamily(
            "pbxlink_agi_deadline_hits",
            "decisions not ready within [agi] deadline_ms (answered 'no route', the dialplan falls through)",
        )
        errors = CounterMetricFamily("pbxlink_agi_errors", "decisions that raised (answered 'no route')")
        rejected = CounterMetricFamily(
            "pbxlink_agi_rejected", "AGI sessions refused or failed, by reason", labels=["reason"]
        )
        active = GaugeMetricFamily("pbxlink_agi_sessions_active", "AGI sessions in progress")
        directory = CounterMetricFamily(
            "pbxlink_directory_messages",
            "ownership directory messages from MQTT, by result",
            labels=["result"],
        )
        source = self._source()
        if source is not None:
            counters, feed = source
            agi.add_metric([], counters.connections)
            answered.add_metric(["routed"], counters.routed)
            answered.add_metric(["no_route"], max(0, counters.answered - counters.routed))
            deadline.add_metric([], counters.deadline)
            errors.add_metric([], counters.errors)
            for reason in _AGI_REJECTED:
                rejected.add_metric([reason], getattr(counters, reason))
            active.add_metric([], counters.active)
            for name in ("applied", "deleted", "rejected"):
                directory.add_metric([name], getattr(feed, name))
        yield from (agi, answered, deadline, errors, rejected, active, directory)


assert set(_AGI_REJECTED) < {f.name for f in fields(AgiCounters)}


class DaemonMetrics:
    """Every metric of ``pbxlink run``, on its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge("pbxlink_build_info", "pbxlink version", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.ami_events = Counter(
            "pbxlink_ami_events_total", "AMI events received, by event name", ["event"], registry=r
        )
        self.ami_frames_rejected = Counter(
            "pbxlink_ami_frames_rejected_total",
            "AMI frames that could not be used (malformed, oversized, undecodable)",
            ["reason"],
            registry=r,
        )
        self.ami_connected = Gauge("pbxlink_ami_connected", "1 while logged in to AMI", registry=r)
        self.mqtt_connected = Gauge(
            "pbxlink_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.reconnects = Counter(
            "pbxlink_reconnects_total", "connection attempts after a failure", ["link"], registry=r
        )
        self.active_calls = Gauge("pbxlink_active_calls", "calls the tracker is following", registry=r)
        self.outcomes = Counter(
            "pbxlink_outcomes_total",
            "call outcomes committed to the outbox (missed_at: where an unanswered call was lost)",
            ["direction", "answered", "missed_at"],
            registry=r,
        )
        self.outbox_written = Counter(
            "pbxlink_outbox_written_total", "messages committed to the outbox", ["kind"], registry=r
        )
        self.outbox_write_errors = Counter(
            "pbxlink_outbox_write_errors_total",
            "outbox writes that failed (disk full, read-only, I/O error)",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "pbxlink_outbox_pending",
            "messages committed but not yet acknowledged by the broker",
            ["kind"],
            registry=r,
        )
        self.outbox_oldest_pending_age = Gauge(
            "pbxlink_outbox_oldest_pending_age_seconds",
            "age of the oldest unacknowledged message (0 when none)",
            registry=r,
        )
        self.published = Counter(
            "pbxlink_published_total", "messages acknowledged by the broker (PUBACK)", ["kind"], registry=r
        )
        self.publish_failures = Counter(
            "pbxlink_publish_failures_total",
            "publishes without a successful PUBACK (timeout, disconnect, broker refusal)",
            ["reason"],
            registry=r,
        )
        self.expired = Counter(
            "pbxlink_events_expired_total",
            "live events dropped because their expiry passed before the broker was reachable",
            registry=r,
        )
        self.publish_latency = Histogram(
            "pbxlink_publish_latency_seconds",
            "time from a message's commit to the outbox to its PUBACK",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            "pbxlink_config_reloads_total", "SIGHUP reloads", ["result"], registry=r
        )

    def export_agi(self, source: Callable[[], tuple[AgiCounters, FeedCounters] | None]) -> None:
        """Export the AGI server's counters, read from ``source`` at each scrape."""
        self.registry.register(AgiCollector(source))
