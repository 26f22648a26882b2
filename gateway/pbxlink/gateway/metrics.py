"""The gateway's Prometheus metrics, on its own registry (served by the toolkit's HealthServer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["GatewayMetrics"]


@dataclass(slots=True)
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    requests: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    repaired: Counter = field(init=False)
    published: Counter = field(init=False)
    web_responses: Counter = field(init=False)
    backlog: Gauge = field(init=False)
    mqtt_connected: Gauge = field(init=False)
    source_up: Gauge = field(init=False)
    source_errors: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "pbxlink_gateway_requests", "requests stored for the CRM", ["source", "channel"], registry=r
        )
        self.dead_letters = Counter(
            "pbxlink_gateway_dead_letters",
            "messages that could not become requests (too_large, no_sender, malformed_mime, "
            "invalid_utf8, flood, empty)",
            ["source", "kind"],
            registry=r,
        )
        self.repaired = Counter(
            "pbxlink_gateway_repaired",
            "requests made from input that needed repair (bad bytes, unknown charset, cut body)",
            ["source"],
            registry=r,
        )
        self.published = Counter(
            "pbxlink_gateway_published", "outbox rows the broker acknowledged (PUBACK)", registry=r
        )
        self.web_responses = Counter(
            "pbxlink_gateway_web_responses", "web endpoint answers", ["source", "status"], registry=r
        )
        self.backlog = Gauge("pbxlink_gateway_backlog", "outbox rows waiting for a PUBACK", registry=r)
        self.mqtt_connected = Gauge("pbxlink_gateway_mqtt_connected", "1 while connected", registry=r)
        self.source_up = Gauge(
            "pbxlink_gateway_source_up", "1 while a source's connection works", ["source"], registry=r
        )
        self.source_errors = Counter(
            "pbxlink_gateway_source_errors",
            "connection failures of a source (IMAP, Bot API)",
            ["source"],
            registry=r,
        )
