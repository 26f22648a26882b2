"""The daemon's settings: its own sections, read by the one loader in :mod:`pbxlink.foundation.config`.

``[mqtt]`` and ``[log]`` are the shared sections (:class:`~pbxlink.foundation.config.MqttSettings`,
:class:`~pbxlink.foundation.config.LogSettings`); ``[agi]`` and ``[routing]`` are declared by the pure
routing package beside their checks (:mod:`pbxlink.routing.settings`); the others below are the
daemon's. ``[adapter]`` and ``[crm]`` belong to the CRM adapter and are left to it
(``pbxlink check-config`` checks them).
Layering, strictness and secrets are the loader's: defaults < file < ``conf.d/*.toml`` < ``--set``.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pbxlink.foundation.config import (
    LogSettings,
    MqttSettings,
    Secret,
    load_config,
    mqtt_problems,
    port_problems,
)
from pbxlink.foundation.errors import ConfigProblem
from pbxlink.routing.policy import routing_problems
from pbxlink.routing.settings import AgiSettings, RouteRule, RoutingSettings

__all__ = [
    "AgiSettings",
    "AmiSettings",
    "HttpSettings",
    "NodeSettings",
    "RouteRule",
    "RoutingSettings",
    "Settings",
    "StateSettings",
    "TrackerSettings",
    "load_settings",
]

# ---------------------------------------------------------------------------------------------
# Sections. Field comments are the reference documentation (docs/config.md mirrors them).


@dataclass(frozen=True, slots=True)
class NodeSettings:
    name: str = "pbx1"  # this PBX node's name: the {node} in MQTT topics and outcome ids
    default_region: str = "UA"  # ISO 3166 region for national numbers without a country code
    timezone: str = "UTC"  # IANA zone used where local times are shown to people


@dataclass(frozen=True, slots=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "pbxlink"
    secret_file: Path | None = None  # file holding the AMI secret
    secret_credential: str = "ami-secret"  # noqa: S105 - a credential name under $CREDENTIALS_DIRECTORY
    secret: Secret | None = None  # filled from the two keys above, never from the TOML itself
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_frame_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class StateSettings:
    directory: Path = Path("/var/lib/pbxlink")  # outbox and directory databases live here
    retention_hours: float = 168.0  # published outbox rows are pruned after this


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    agent_endpoints: str = r"^\d{2,6}$"  # regex: PJSIP endpoint names that are agents' phones
    trunk_endpoints: tuple[str, ...] = ("trunk",)  # PJSIP endpoints that lead outside
    settle_seconds: float = 2.0  # wait after a call's last channel is gone (late transfer events)


# The CSV columns of the cel_custom mapping pbxlink documents (docs/cel.md); names as in
# Asterisk's cel_custom.conf "fields" (qualifiers such as "(float)" left out).
DEFAULT_CEL_FIELDS = (
    "eventtype",
    "eventtime",
    "name",
    "num",
    "ani",
    "rdnis",
    "dnid",
    "exten",
    "context",
    "channame",
    "appname",
    "appdata",
    "amaflags",
    "accountcode",
    "uniqueid",
    "linkedid",
    "peer",
    "userfield",
    "eventextra",
)


@dataclass(frozen=True, slots=True)
class CelSettings:
    # finalize a call when CEL LINKEDID_END (over AMI) says it is over, instead of after
    # tracker.settle_seconds; needs cel.conf [manager] enabled=yes and LINKEDID_END in events
    final_on_linkedid_end: bool = True
    # where Asterisk writes CEL records, read back after an AMI outage or a daemon restart to
    # rebuild the calls of the gap: "sqlite" (cel_sqlite3_custom), "csv" (cel_custom), "none"
    backend: Literal["none", "sqlite", "csv"] = "none"
    path: Path | None = None  # the SQLite database or the CSV file Asterisk writes
    table: str = "cel"  # sqlite: the table of cel_sqlite3_custom.conf
    fields: tuple[str, ...] = DEFAULT_CEL_FIELDS  # csv: the column order of cel_custom.conf "fields"
    timezone: str = "UTC"  # eventtime written as a date and time (not epoch seconds) is in this zone
    max_gap_seconds: float = 86_400.0  # never read records older than this before the recovery


@dataclass(frozen=True, slots=True)
class HttpSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108  # /metrics, /healthz, /readyz


@dataclass(frozen=True, slots=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    state: StateSettings = field(default_factory=StateSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    cel: CelSettings = field(default_factory=CelSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    log: LogSettings = field(default_factory=LogSettings)


# ---------------------------------------------------------------------------------------------
# Loading


def load_settings(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    require_secrets: bool = False,
) -> Settings:
    """Load, layer and validate the daemon's configuration; raise ``ConfigError`` listing every problem.

    ``path`` None means embedded defaults only (plus ``overrides``). ``require_secrets`` makes a
    missing AMI secret a problem (``pbxlink run`` needs it; ``check-config`` warns about it).
    """
    checks = [*([_ami_secret_present] if require_secrets else []), _check_values]
    return load_config(Settings, path, overrides=overrides, environ=environ, checks=checks)


def _ami_secret_present(settings: Settings) -> list[ConfigProblem]:
    if settings.ami.secret is not None:
        return []
    return [
        ConfigProblem(
            "ami.secret_file",
            "no AMI secret: set ami.secret_file or provide the systemd credential "
            f"'{settings.ami.secret_credential}'",
        )
    ]


def _check_values(settings: Settings) -> list[ConfigProblem]:
    """Checks that types alone cannot express."""
    problems = port_problems(
        ("ami.port", settings.ami.port),
        ("mqtt.port", settings.mqtt.port),
        ("agi.port", settings.agi.port),
        ("http.port", settings.http.port),
    )
    problems.extend(mqtt_problems(settings.mqtt))
    try:
        re.compile(settings.tracker.agent_endpoints)
    except re.error as exc:
        problems.append(ConfigProblem("tracker.agent_endpoints", f"not a valid regex: {exc}"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", settings.node.name):
        problems.append(
            ConfigProblem(
                "node.name", "use letters, digits, '_', '.', '-' only (it becomes part of MQTT topics)"
            )
        )
    if not re.fullmatch(r"[A-Z]{2}", settings.node.default_region):
        problems.append(ConfigProblem("node.default_region", "an ISO 3166 two-letter code, e.g. UA"))
    try:
        zoneinfo.ZoneInfo(settings.node.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(ConfigProblem("node.timezone", f"unknown time zone {settings.node.timezone!r}"))
    problems.extend(_cel_problems(settings.cel))
    problems.extend(routing_problems(settings.agi, settings.routing))
    return problems


def _cel_problems(cel: CelSettings) -> list[ConfigProblem]:
    problems = []
    if cel.backend != "none" and cel.path is None:
        problems.append(ConfigProblem("cel.path", f"backend {cel.backend!r} needs the file Asterisk writes"))
    if cel.backend == "csv":
        missing = {"eventtype", "eventtime", "uniqueid", "linkedid", "channame"} - {
            f.lower() for f in cel.fields
        }
        if missing:
            problems.append(ConfigProblem("cel.fields", f"needs the columns {sorted(missing)}"))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cel.table):
        problems.append(ConfigProblem("cel.table", "a plain SQLite table name (letters, digits, '_')"))
    try:
        zoneinfo.ZoneInfo(cel.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(ConfigProblem("cel.timezone", f"unknown time zone {cel.timezone!r}"))
    if cel.max_gap_seconds <= 0:
        problems.append(ConfigProblem("cel.max_gap_seconds", "must be > 0"))
    return problems
