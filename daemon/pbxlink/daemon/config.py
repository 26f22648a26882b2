"""Typed, frozen configuration loaded from TOML.

Layering, lowest first: the defaults written below < the main file (``-c``) < every
``conf.d/*.toml`` beside it (in name order) < ``--set section.key=value`` flags.

Unknown keys are rejected with their dotted path, and every problem is reported at once.
Secrets (the AMI secret, the MQTT password) are never written in the TOML: they come from a file
(``secret_file``/``password_file``) or from systemd's ``$CREDENTIALS_DIRECTORY``, and are held in
:class:`Secret`, whose ``repr`` and ``str`` never show the value.

Each section is a frozen dataclass; a field's type drives both validation and the error text.
Other parts of pbxlink declare their own section dataclasses and parse them with
:func:`parse_section`, so the same strict rules apply everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pbxlink.foundation.errors import ConfigError, ConfigProblem

T = TypeVar("T")


class Secret:
    """A secret string. ``str()``/``repr()`` are redacted; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password_file: Path | None = None
    password_credential: str = "mqtt-password"  # noqa: S105 - a credential name
    password: Secret | None = None  # filled from the two keys above
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None  # TLS client certificate (PEM), for brokers that require one
    key_file: Path | None = None  # its private key (PEM)
    client_id: str = ""  # empty: pbxlink-<node>
    keepalive: int = 30
    topic_prefix: str = "pbxlink/v1"
    event_expiry_seconds: int = 300
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


@dataclass(frozen=True, slots=True)
class StateSettings:
    directory: Path = Path("/var/lib/pbxlink")  # outbox and directory databases live here
    retention_hours: float = 168.0  # published outbox rows are pruned after this


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    agent_endpoints: str = r"^\d{2,6}$"  # regex: PJSIP endpoint names that are agents' phones
    trunk_endpoints: tuple[str, ...] = ("trunk",)  # PJSIP endpoints that lead outside
    settle_seconds: float = 2.0  # wait after a call's last channel is gone (late transfer events)


@dataclass(frozen=True, slots=True)
class AgiSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 4573
    deadline_ms: float = 300.0  # past it the answer is "no route" and the dialplan falls through
    path: str = "route"  # the script part of agi://host:port/<path>
    max_sessions: int = 256  # concurrent AGI sessions; extra connections are closed at once
    io_timeout_ms: float = 2000.0  # bound on sending the answer (Asterisk's 200 replies)


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    lines: tuple[str, ...] = ()  # DIDs the rule applies to; empty = every line
    action: Literal["owner", "off", "target"] = "owner"
    target: str = ""  # dial string for action = "target", e.g. "PJSIP/103"
    region: str = ""  # region for caller numbers on these lines; "" = routing.region
    hours: str = ""  # "HH:MM-HH:MM" local time the rule is active (may wrap midnight); "" = always


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    enabled: bool = True
    pick: Literal["newest", "first"] = "newest"  # several clients with one number
    rules: tuple[RouteRule, ...] = ()  # first matching rule wins
    region: str = ""  # region for caller numbers; "" = node.default_region
    dial_template: str = "PJSIP/{extension}"  # how a responsible's extension becomes a dial string
    internal_max_digits: int = 5  # caller numbers this short are extensions, never routed
    directory_batch: int = 1000  # directory messages applied per SQLite transaction


@dataclass(frozen=True, slots=True)
class HttpSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108  # /metrics, /healthz, /readyz


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, else JSON lines


@dataclass(frozen=True, slots=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    state: StateSettings = field(default_factory=StateSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    log: LogSettings = field(default_factory=LogSettings)
    # Sections owned by other parts (the CRM adapter) stay raw here and are parsed by their owner
    # with parse_section(); they are still checked for TOML syntax and shape.
    adapter: Mapping[str, Any] = field(default_factory=dict)
    crm: Mapping[str, Any] = field(default_factory=dict)  # the CRM rules (pbxlink.rules.settings)


# Fields that hold secrets, filled by _resolve_secrets: (section, field, file key, credential key).
_SECRETS = (
    ("ami", "secret", "secret_file", "secret_credential"),
    ("mqtt", "password", "password_file", "password_credential"),
)


# ---------------------------------------------------------------------------------------------
# Loading


def load_settings(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    require_secrets: bool = False,
) -> Settings:
    """Load, layer and validate the configuration; raise :class:`ConfigError` listing every problem.

    ``path`` None means embedded defaults only (plus ``overrides``). ``require_secrets`` makes a
    missing AMI secret a problem (``pbxlink run`` needs it; ``check-config`` reports it too).
    """
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    for source in _config_files(path, problems):
        data = _read_toml(source, problems)
        if data is not None:
            _deep_merge(merged, data)
    for item in overrides:
        _apply_override(merged, item, problems)
    for section, secret_key, *_ in _SECRETS:
        raw_section = merged.get(section)
        if isinstance(raw_section, dict) and secret_key in raw_section:
            problems.append(
                ConfigProblem(
                    f"{section}.{secret_key}",
                    f"secrets are not written in the config; put it in a file and set "
                    f"{section}.{secret_key}_file, or use the systemd credential",
                )
            )
            del raw_section[secret_key]
    settings = parse_section(Settings, merged, "", problems)
    if settings is not None:
        settings = _resolve_secrets(settings, env, problems, require_secrets=require_secrets)
        _check_values(settings, problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def _config_files(path: Path | None, problems: list[ConfigProblem]) -> list[Path]:
    if path is None:
        return []
    if not path.is_file():
        problems.append(ConfigProblem("", f"config file {path} does not exist or is not a file"))
        return []
    conf_d = path.parent / "conf.d"
    extra = sorted(conf_d.glob("*.toml")) if conf_d.is_dir() else []
    return [path, *extra]


def _read_toml(source: Path, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    try:
        with source.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        problems.append(ConfigProblem("", f"{source}: not valid TOML: {exc}"))
    except OSError as exc:
        problems.append(ConfigProblem("", f"{source}: cannot read: {exc.strerror}"))
    return None


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


_OVERRIDE = re.compile(r"^(?P<path>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+)=(?P<value>.*)$", re.S)


def _apply_override(merged: dict[str, Any], item: str, problems: list[ConfigProblem]) -> None:
    """Apply ``section.key=value``; the value is read as a TOML value, else taken as a string."""
    match = _OVERRIDE.match(item)
    if match is None:
        problems.append(ConfigProblem(item, "a --set flag looks like section.key=value"))
        return
    *parents, leaf = match["path"].split(".")
    try:
        value: Any = tomllib.loads(f"v = {match['value']}")["v"]
    except tomllib.TOMLDecodeError:
        value = match["value"]
    node = merged
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            problems.append(ConfigProblem(match["path"], f"{name} is not a table"))
            return
        node = child
    node[leaf] = value


def _resolve_secrets(
    settings: Settings,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    *,
    require_secrets: bool,
) -> Settings:
    updates: dict[str, Any] = {}
    for section_name, secret_field, file_key, credential_key in _SECRETS:
        section = getattr(settings, section_name)
        file_path: Path | None = getattr(section, file_key)
        credential: str = getattr(section, credential_key)
        value: str | None = None
        where = f"{section_name}.{file_key}"
        if file_path is not None:
            value = _read_secret(file_path, where, problems)
        elif credential and env.get("CREDENTIALS_DIRECTORY"):
            candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
            if candidate.is_file():
                value = _read_secret(candidate, f"{section_name}.{credential_key}", problems)
        if value is None and require_secrets and section_name == "ami":
            problems.append(
                ConfigProblem(
                    where,
                    f"no AMI secret: set ami.secret_file or provide the systemd credential '{credential}'",
                )
            )
        if value is not None:
            updates[section_name] = dataclasses.replace(section, **{secret_field: Secret(value)})
    return dataclasses.replace(settings, **updates) if updates else settings


def read_secret(path: Path, where: str) -> Secret:
    """Read one secret file by the same rules as the config's own secrets (a trailing newline is
    dropped; an empty, unreadable or non-UTF-8 file is a :class:`ConfigError` naming ``where``)."""
    problems: list[ConfigProblem] = []
    value = _read_secret(path, where, problems)
    if value is None:
        raise ConfigError(problems)
    return Secret(value)


def _read_secret(path: Path, where: str, problems: list[ConfigProblem]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(ConfigProblem(where, f"cannot read secret file {path}: {exc.strerror}"))
        return None
    except UnicodeDecodeError:
        problems.append(ConfigProblem(where, f"secret file {path} is not UTF-8 text"))
        return None
    value = text.rstrip("\r\n")
    if not value:
        problems.append(ConfigProblem(where, f"secret file {path} is empty"))
        return None
    return value


def _check_values(settings: Settings, problems: list[ConfigProblem]) -> None:
    """Checks that types alone cannot express."""
    ports = (
        ("ami.port", settings.ami.port),
        ("mqtt.port", settings.mqtt.port),
        ("agi.port", settings.agi.port),
        ("http.port", settings.http.port),
    )
    for where, port in ports:
        if not 0 < port < 65536:
            problems.append(ConfigProblem(where, f"{port} is not a TCP port (1-65535)"))
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
        import zoneinfo  # noqa: PLC0415 - only needed here

        zoneinfo.ZoneInfo(settings.node.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(ConfigProblem("node.timezone", f"unknown time zone {settings.node.timezone!r}"))
    if settings.agi.deadline_ms <= 0:
        problems.append(ConfigProblem("agi.deadline_ms", "must be > 0"))
    for i, rule in enumerate(settings.routing.rules):
        if rule.action == "target" and not rule.target:
            problems.append(
                ConfigProblem(f"routing.rules[{i}].target", "action 'target' needs a dial string")
            )
    from pbxlink.routing.policy import routing_problems  # noqa: PLC0415 - avoids a cycle

    problems.extend(routing_problems(settings))


# ---------------------------------------------------------------------------------------------
# The strict, type-driven parser


def parse_section(cls: type[T], data: Any, path: str, problems: list[ConfigProblem]) -> T | None:
    """Build dataclass ``cls`` from a TOML table; each unknown key or bad value adds a problem.

    Returns None when the table itself is not a table. Fields missing from ``data`` keep their
    defaults; a field without a default that is missing is a problem.
    """
    if not isinstance(data, Mapping):
        problems.append(ConfigProblem(path, f"expected a table, got {_describe(data)}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    secret_fields = {secret for _, secret, *_ in _SECRETS}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else key
        target = fields.get(key)
        if target is None or (key in secret_fields and hints[key] == Secret | None):
            known = ", ".join(sorted(n for n in fields if n not in secret_fields))
            problems.append(ConfigProblem(key_path, f"unknown key (known here: {known})"))
            continue
        ok, converted = _convert(hints[key], value, key_path, problems)
        if ok:
            kwargs[key] = converted
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            problems.append(ConfigProblem(f"{path}.{name}" if path else name, "required key is missing"))
            return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(ConfigProblem(path, str(exc)))
        return None


def _convert(tp: Any, value: Any, path: str, problems: list[ConfigProblem]) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path, problems)
    if origin is Literal:
        if value in args:
            return True, value
        choices = ", ".join(repr(a) for a in args)
        problems.append(ConfigProblem(path, f"must be one of {choices}, got {value!r}"))
        return False, None
    if origin is tuple:
        if not isinstance(value, list):
            problems.append(ConfigProblem(path, f"expected an array, got {_describe(value)}"))
            return False, None
        item_type = args[0]
        out = []
        all_ok = True
        for i, item in enumerate(value):
            ok, converted = _convert(item_type, item, f"{path}[{i}]", problems)
            all_ok &= ok
            out.append(converted)
        return all_ok, tuple(out)
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if isinstance(value, Mapping):
            return True, value
        problems.append(ConfigProblem(path, f"expected a table, got {_describe(value)}"))
        return False, None
    if dataclasses.is_dataclass(tp):
        # Keep what parsed even when some keys were bad, so the value checks that follow still
        # see the good keys and every problem is reported in one go.
        parsed = parse_section(typing.cast(type[Any], tp), value, path, problems)
        return parsed is not None, parsed
    if tp is bool:
        if isinstance(value, bool):
            return True, value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
    elif tp is str:
        if isinstance(value, str):
            return True, value
    elif tp is Path:
        if isinstance(value, str) and value:
            return True, Path(value)
    else:  # pragma: no cover - a section declared a type this parser does not know
        raise TypeError(f"config field type {tp!r} at {path} is not supported")
    problems.append(ConfigProblem(path, f"expected {_TYPE_NAMES.get(tp, str(tp))}, got {_describe(value)}"))
    return False, None


_TYPE_NAMES: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a non-empty path string",
}


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"


# ---------------------------------------------------------------------------------------------
# Showing the effective configuration


def to_toml(settings: Settings) -> str:
    """The effective configuration as TOML, secrets redacted (for ``pbxlink check-config``)."""
    lines: list[str] = []
    for f in dataclasses.fields(settings):
        section = getattr(settings, f.name)
        if isinstance(section, Mapping):
            table = dict(section)
        else:
            table = {sf.name: getattr(section, sf.name) for sf in dataclasses.fields(section)}
        _emit_table(lines, f.name, table)
    return "\n".join(lines).rstrip() + "\n"


def _emit_table(lines: list[str], name: str, table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table_like(v)}
    nested = {k: v for k, v in table.items() if _is_table_like(v)}
    lines.append(f"[{name}]")
    for key, value in scalars.items():
        if value is None:
            lines.append(f"# {key} is not set")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    for key, value in nested.items():
        if isinstance(value, tuple | list):
            for item in value:
                lines.append(f"[[{name}.{key}]]")
                fields = item if isinstance(item, Mapping) else dataclasses.asdict(item)
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in fields.items())
                lines.append("")
        else:
            sub = value if isinstance(value, Mapping) else dataclasses.asdict(value)
            _emit_table(lines, f"{name}.{key}", sub)


def _is_table_like(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    if isinstance(value, tuple | list) and value:
        first = value[0]
        return isinstance(first, Mapping) or dataclasses.is_dataclass(first)
    return False


def _toml_value(value: Any) -> str:
    if isinstance(value, Secret):
        return '"<redacted>"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
