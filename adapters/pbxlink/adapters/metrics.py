"""The metrics of ``pbxlink adapter`` (prometheus_client), served at ``[adapter] http_port``.

Names in docs/crm.md; the Grafana dashboard and the alert rules in config/ read them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pbxlink.toolkit.metrics import LATENCY_BUCKETS

__all__ = ["INBOX_STATES", "AdapterMetrics"]

# The inbox states exported (inbox.state in the adapter database).
INBOX_STATES = ("pending", "done", "dead")


class AdapterMetrics:
    """Every metric of the CRM adapter, on its own registry."""

    def __init__(self, adapter: str = "crm") -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge("pbxlink_adapter_info", "the adapter's name", ["adapter"], registry=r)
        self.build_info.labels(adapter=adapter).set(1)
        self.mqtt_connected = Gauge(
            "pbxlink_adapter_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.reconnects = Counter(
            "pbxlink_adapter_reconnects_total", "connection attempts after a failure", ["link"], registry=r
        )
        self.received = Counter(
            "pbxlink_adapter_messages_received_total",
            "MQTT messages stored in the inbox, by receipt (new, duplicate, dead)",
            ["receipt"],
            registry=r,
        )
        self.inbox = Gauge(
            "pbxlink_adapter_inbox_messages",
            "inbox rows by state (pending = the backlog)",
            ["state"],
            registry=r,
        )
        self.actions = Counter(
            "pbxlink_adapter_actions_applied_total",
            "CRM actions applied (committed with their inbox message), by action",
            ["action"],
            registry=r,
        )
        self.messages_applied = Counter(
            "pbxlink_adapter_messages_applied_total", "inbox messages applied to the CRM", registry=r
        )
        self.dead_letters = Counter(
            "pbxlink_adapter_dead_letters_total",
            "messages given up on (invalid, or failing max_attempts times), published as dead letters",
            registry=r,
        )
        self.crm_latency = Histogram(
            "pbxlink_adapter_crm_apply_seconds",
            "time to apply one round of pending inbox messages to the CRM backend",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for state in INBOX_STATES:
            self.inbox.labels(state=state).set(0)
