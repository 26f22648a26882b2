"""Shared metric conventions for every process (prometheus_client).

Each process builds its metrics on its own ``CollectorRegistry`` (not the global one), so two
daemons in one test process never share counters. ``sample`` reads one value back (tests,
housekeeping) without parsing the exposition text.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, disable_created_metrics

__all__ = ["LATENCY_BUCKETS", "sample"]

# The ``*_created`` series double every counter and histogram and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds: outcome commit to PUBACK, CRM calls, AMI/MQTT round trips.
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


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The current value of one sample (0 when the series does not exist yet).

    ``name`` is the sample's name as exposed: ``pbxlink_published_total``,
    ``pbxlink_publish_latency_seconds_count``, ``pbxlink_mqtt_connected``.
    """
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
