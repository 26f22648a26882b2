"""The CRM adapter's settings: `[adapter]` and `[crm]` beside the shared `[mqtt]` and `[log]`.

Read by the one loader (:mod:`pbxlink.foundation.config`) from the same file as the daemon's:
defaults < file < ``conf.d/*.toml`` < ``--set``; unknown keys and bad values are reported at once
with their paths (exit 78); the broker password comes from ``mqtt.password_file`` or the systemd
credential ``mqtt-password``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pbxlink.foundation.config import (
    AtLeast,
    LogSettings,
    MqttSettings,
    load_config,
    mqtt_problems,
    parse_config,
    port_problems,
)
from pbxlink.foundation.errors import ConfigError, ConfigProblem
from pbxlink.rules.settings import CrmSettings, crm_problems

__all__ = ["AdapterSettings", "Settings", "load_settings", "parse_settings", "settings_from_toml"]


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    name: str = "crm"  # names the adapter: its MQTT client id, dead letters and shared subscription
    client_id: str | None = None  # MQTT client id; empty: pbxlink-adapter-<name> (the broker is [mqtt])
    nodes: str = "+"  # which PBX nodes' outcomes to consume: a node name or "+" for all
    # $share/<name>/… lets several adapters split the load, but mosquitto does not restore a
    # shared subscription after a broker restart (messages published before the adapter
    # re-subscribes are lost). One adapter per CRM database: keep it off (docs/crm.md).
    shared_subscription: bool = False
    database: str = "/var/lib/pbxlink/crm.sqlite3"  # the adapter's SQLite file (inbox + embedded CRM)
    dead_letter_topic: str = "pbxlink/v1/crm/deadletter"
    session_expiry_seconds: Annotated[int, AtLeast(0)] = 86400  # the broker keeps our queue this long
    max_attempts: Annotated[int, AtLeast(1)] = 5  # a message failing this often is a dead letter
    publish_directory: bool = True  # publish client → responsible records for the daemon's routing
    inbox_retention_days: Annotated[int, AtLeast(1)] = 30
    # /metrics, /healthz, /readyz like the daemon's [http], on a port of its own (both processes
    # may read one file); http_port = 0: no endpoint.
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, AtLeast(0)] = 9109

    # Before 0.1.0 the adapter named its broker here; [mqtt] is now the one broker section.
    MOVED_KEYS: ClassVar[Mapping[str, str]] = {
        "broker_host": "mqtt.host",
        "broker_port": "mqtt.port",
        "username": "mqtt.username",
        "password_file": "mqtt.password_file",
        "topic_prefix": "mqtt.topic_prefix",
    }

    @property
    def identifier(self) -> str:
        return self.client_id or f"pbxlink-adapter-{self.name}"


@dataclass(frozen=True, slots=True)
class Settings:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    crm: CrmSettings = field(default_factory=CrmSettings)


def _problems(settings: Settings) -> list[ConfigProblem]:
    problems = port_problems(("mqtt.port", settings.mqtt.port))
    if settings.adapter.http_port != 0:
        problems.extend(port_problems(("adapter.http_port", settings.adapter.http_port)))
    problems.extend(mqtt_problems(settings.mqtt))
    name = settings.adapter.name
    if not name or any(c in name for c in "/+#$ "):
        problems.append(ConfigProblem("adapter.name", "must be non-empty without / + # $ or spaces"))
    problems.extend(crm_problems(settings.crm))
    return problems


def load_settings(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, layer and validate the adapter's configuration; raise ``ConfigError`` listing every problem."""
    return load_config(Settings, path, overrides=overrides, environ=environ, checks=(_problems,))


def parse_settings(
    document: Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The adapter's settings from a parsed TOML document (other processes' tables are left alone)."""
    return parse_config(Settings, document, overrides=overrides, environ=environ, checks=(_problems,))


def settings_from_toml(text: str, *, environ: Mapping[str, str] | None = None) -> Settings:
    """The adapter's settings from TOML text; a syntax error is a ``ConfigError`` too."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")]) from exc
    return parse_settings(document, environ={} if environ is None else environ)
