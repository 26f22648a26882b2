"""The one configuration loader of every pbxlink process: typed, frozen, layered, strict.

A process declares its settings as a frozen dataclass whose fields are its sections (each a frozen
dataclass too) and calls :func:`load_config`::

    @dataclass(frozen=True, slots=True)
    class Settings:
        mqtt: MqttSettings = field(default_factory=MqttSettings)
        log: LogSettings = field(default_factory=LogSettings)
        adapter: AdapterSettings = field(default_factory=AdapterSettings)

    settings = load_config(Settings, path, overrides=args.overrides, others=DAEMON_SECTIONS,
                           checks=(adapter_problems,))

Layering, lowest first: the defaults written in the dataclasses < the main file (``-c``) < every
``conf.d/*.toml`` beside it (in name order) < ``--set section.key=value`` flags.

Unknown keys are rejected with their dotted path and every problem is reported at once, as one
:class:`~pbxlink.foundation.errors.ConfigError` (the CLI exits 78). A field's type drives both
validation and the error text; :func:`parse_section` is the one strict reader.

Secrets are never written in the TOML: a field typed ``Secret | None`` named ``X`` is filled from the
file named by its sibling ``X_file`` or, failing that, from systemd's ``$CREDENTIALS_DIRECTORY``
under the name in ``X_credential`` (:func:`read_secret` is the one reader of a secret file). A
:class:`Secret`'s ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pbxlink.foundation.errors import ConfigError, ConfigProblem

__all__ = [
    "SECTION_OWNERS",
    "AtLeast",
    "Check",
    "Convert",
    "LogSettings",
    "MqttSettings",
    "NonEmpty",
    "Secret",
    "add_config_arguments",
    "load_config",
    "mqtt_problems",
    "parse_config",
    "parse_section",
    "port_problems",
    "read_secret",
    "to_toml",
]

T = TypeVar("T")
S = TypeVar("S")

Check = Callable[[S], Iterable[ConfigProblem]]
"""A check that types alone cannot express: the parsed settings in, problems (with paths) out."""


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


@dataclass(frozen=True, slots=True)
class AtLeast:
    """``Annotated[int, AtLeast(1)]``: the parser refuses smaller numbers."""

    minimum: float


@dataclass(frozen=True, slots=True)
class NonEmpty:
    """``Annotated[str, NonEmpty()]``: the parser refuses an empty string."""


@dataclass(frozen=True, slots=True)
class Convert:
    """``Annotated[X, Convert(func)]``: ``func(raw TOML value)`` builds the field's value in place of
    the type-driven conversion; a ``ValueError`` it raises becomes a problem at the field's path."""

    func: Callable[[Any], Any]


# Every top-level table of the one config file and who owns it. A process parses its own tables,
# leaves the others' to them (``pbxlink check-config`` checks them all), and reports a table that
# nobody owns as an unknown key. A new process registers its tables here.
SECTION_OWNERS: Mapping[str, str] = types.MappingProxyType(
    {
        "mqtt": "every process",
        "log": "every process",
        "node": "daemon",
        "ami": "daemon",
        "state": "daemon",
        "tracker": "daemon",
        "cel": "daemon",
        "agi": "daemon",
        "routing": "daemon",
        "http": "daemon",
        "adapter": "adapter",
        "crm": "adapter",
        "gateway": "gateway",
    }
)


# ---------------------------------------------------------------------------------------------
# The sections every process shares. Field comments are the reference (docs/config.md mirrors them).


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """``[mqtt]``: the one broker connection of every process (daemon, adapter, gateways)."""

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
    client_id: str = ""  # the daemon's; empty: pbxlink-<node> (the adapter's is adapter.client_id)
    keepalive: int = 30
    topic_prefix: str = "pbxlink/v1"
    event_expiry_seconds: int = 300
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: every process logs by these."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, else JSON lines


def port_problems(*ports: tuple[str, int]) -> list[ConfigProblem]:
    """``("mqtt.port", 70000)`` → a problem when the number is not a TCP port."""
    return [
        ConfigProblem(where, f"{port} is not a TCP port (1-65535)")
        for where, port in ports
        if not 0 < port < 65536
    ]


def mqtt_problems(mqtt: MqttSettings, path: str = "mqtt") -> list[ConfigProblem]:
    """Checks of ``[mqtt]`` that types alone cannot express (the port is checked by the caller's
    :func:`port_problems`, so that its order among the other ports stays stable)."""
    problems: list[ConfigProblem] = []
    if mqtt.key_file is not None and mqtt.cert_file is None:
        problems.append(ConfigProblem(f"{path}.key_file", "a private key needs its cert_file"))
    if not mqtt.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(mqtt, key) is not None:
                problems.append(ConfigProblem(f"{path}.{key}", "only used with tls = true; set it too"))
    return problems


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(
    cls: type[T],
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    checks: Iterable[Check[T]] = (),
) -> T:
    """Load, layer and validate settings ``cls``; raise :class:`ConfigError` listing every problem.

    ``path`` None means the dataclass defaults only (plus ``overrides``); else ``path`` and then
    ``conf.d/*.toml`` beside it. ``checks`` run on the parsed settings after the secrets are read;
    their problems are reported with the parser's. Top-level tables that :data:`SECTION_OWNERS`
    gives to other processes are left to them.
    """
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    for source in _config_files(path, problems):
        data = _read_toml(source, problems)
        if data is not None:
            _deep_merge(merged, data)
    return parse_config(cls, merged, overrides=overrides, environ=environ, checks=checks, problems=problems)


def parse_config(
    cls: type[T],
    document: Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    checks: Iterable[Check[T]] = (),
    problems: list[ConfigProblem] | None = None,
) -> T:
    """:func:`load_config` for an already parsed TOML document (tests, embedded examples)."""
    env = os.environ if environ is None else environ
    problems = [] if problems is None else problems
    merged: dict[str, Any] = {}
    _deep_merge(merged, document)
    for item in overrides:
        _apply_override(merged, item, problems)
    own = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = ", ".join(sorted(own | set(SECTION_OWNERS)))
    mine: dict[str, Any] = {}
    for name, value in merged.items():
        if name in own:
            mine[name] = value
        elif name not in SECTION_OWNERS:
            problems.append(ConfigProblem(name, f"unknown key (known here: {known})"))
        elif not isinstance(value, Mapping):
            problems.append(ConfigProblem(name, f"expected a table, got {_describe(value)}"))
    settings = parse_section(cls, mine, "", problems)
    if settings is not None:
        settings = _resolve_secrets(settings, env, problems)
        for check in checks:
            problems.extend(check(settings))
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def add_config_arguments(parser: argparse.ArgumentParser, *, default: Path | None = None) -> None:
    """The config flags of every command that reads the config: ``-c/--config`` and ``--set``."""
    where = f"default {default}" if default is not None else "default: embedded defaults only"
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default,
        help=f"main TOML file; conf.d/*.toml beside it is read too ({where})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting (repeatable), e.g. --set mqtt.port=1884",
    )


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


# ---------------------------------------------------------------------------------------------
# Secrets


def _is_secret_type(tp: Any) -> bool:
    return tp == Secret | None or tp is Secret


def _resolve_secrets(node: T, env: Mapping[str, str], problems: list[ConfigProblem], path: str = "") -> T:
    """Fill every ``Secret | None`` field, in every section and sub-section, from ``<name>_file``
    or, when that is unset, from ``$CREDENTIALS_DIRECTORY/<value of <name>_credential>``."""
    updates: dict[str, Any] = {}
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        where = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            filled_section = _resolve_secrets(value, env, problems, where)
            if filled_section is not value:
                updates[f.name] = filled_section
        elif isinstance(value, Mapping) and any(
            dataclasses.is_dataclass(v) and not isinstance(v, type) for v in value.values()
        ):  # a table of sections (e.g. [gateway.email.<name>]): each entry's secrets too
            table = {k: _resolve_secrets(v, env, problems, f"{where}.{k}") for k, v in value.items()}
            if any(table[k] is not v for k, v in value.items()):
                updates[f.name] = types.MappingProxyType(table)
        elif _is_secret_type(hints[f.name]):
            secret = _find_secret(node, f.name, where, env, problems)
            if secret is not None:
                updates[f.name] = Secret(secret)
    return dataclasses.replace(node, **updates) if updates else node  # type: ignore[type-var]


def _find_secret(
    section: Any, name: str, where: str, env: Mapping[str, str], problems: list[ConfigProblem]
) -> str | None:
    file_path: Path | None = getattr(section, f"{name}_file", None)
    credential: str = getattr(section, f"{name}_credential", "")
    if file_path is not None:
        return _read_secret(file_path, f"{where}_file", problems)
    if credential and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        if candidate.is_file():
            return _read_secret(candidate, f"{where}_credential", problems)
    return None


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


# ---------------------------------------------------------------------------------------------
# The strict, type-driven parser


def parse_section(cls: type[T], data: Any, path: str, problems: list[ConfigProblem]) -> T | None:
    """Build dataclass ``cls`` from a TOML table; each unknown key or bad value adds a problem.

    Returns None when the table itself is not a table. Fields missing from ``data`` keep their
    defaults; a field without a default that is missing is a problem. Supported field types: bool,
    int, float, str, Path, Literal[...], Enum, ``X | None``, ``tuple[X, ...]``, nested dataclasses,
    ``Mapping[str, X]`` (a table of X), ``Annotated[X, AtLeast(n) | NonEmpty() | Convert(f)]``; a
    ``Secret`` field cannot be written (it is filled from ``<name>_file`` / ``<name>_credential``).
    A section may name keys it used to have in a ``MOVED_KEYS: ClassVar[Mapping[str, str]]``
    (old key → new dotted path); such a key is still refused, with a pointer to its new home.
    """
    if not isinstance(data, Mapping):
        problems.append(ConfigProblem(path, f"expected a table, got {_describe(data)}"))
        return None
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    secret_fields = {name for name in fields if _is_secret_type(hints[name])}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else key
        target = fields.get(key)
        if key in secret_fields:
            problems.append(
                ConfigProblem(
                    key_path,
                    f"secrets are not written in the config; put it in a file and set "
                    f"{key_path}_file, or use the systemd credential",
                )
            )
            continue
        if target is None:
            moved: Mapping[str, str] = getattr(cls, "MOVED_KEYS", {})
            if key in moved:
                problems.append(ConfigProblem(key_path, f"unknown key: moved to {moved[key]}"))
                continue
            known = ", ".join(sorted(n for n in fields if n not in secret_fields))
            problems.append(ConfigProblem(key_path, f"unknown key (known here: {known})"))
            continue
        ok, converted = _convert(hints[key], value, key_path, problems)
        if ok:
            kwargs[key] = converted
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for name in required:
        if name not in data:
            problems.append(ConfigProblem(f"{path}.{name}" if path else name, "required key is missing"))
    if any(name not in kwargs for name in required):
        return None  # each missing or bad required key is already a problem
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(ConfigProblem(path, str(exc)))
        return None


def _convert(tp: Any, value: Any, path: str, problems: list[ConfigProblem]) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        converters = [rule for rule in args[1:] if isinstance(rule, Convert)]
        if converters:
            try:
                return True, converters[0].func(value)
            except ValueError as exc:
                problems.append(ConfigProblem(path, str(exc)))
                return False, None
        ok, converted = _convert(args[0], value, path, problems)
        if ok:
            for rule in args[1:]:
                if isinstance(rule, AtLeast) and converted < rule.minimum:
                    problems.append(ConfigProblem(path, f"must be >= {rule.minimum:g}, got {value!r}"))
                    return False, None
                if isinstance(rule, NonEmpty) and not converted:
                    problems.append(ConfigProblem(path, "must not be empty"))
                    return False, None
        return ok, converted
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            inner = non_none[0]
            if value == "" and (inner is str or (isinstance(inner, type) and issubclass(inner, enum.Enum))):
                return True, None  # an empty optional string or choice means "not set"
            return _convert(non_none[0], value, path, problems)
    if origin is Literal:
        if value in args:
            return True, value
        choices = ", ".join(repr(a) for a in args)
        problems.append(ConfigProblem(path, f"must be one of {choices}, got {value!r}"))
        return False, None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return True, tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
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
        if not isinstance(value, Mapping):
            problems.append(ConfigProblem(path, f"expected a table, got {_describe(value)}"))
            return False, None
        if not args or args[1] is Any:
            return True, value
        table: dict[str, Any] = {}
        all_ok = True
        for key, item in value.items():
            ok, converted = _convert(args[1], item, f"{path}.{key}", problems)
            all_ok &= ok
            table[str(key)] = converted
        return all_ok, types.MappingProxyType(table)
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


def to_toml(settings: object, sections: Iterable[str] | None = None) -> str:
    """The effective configuration as TOML, secrets redacted (for ``pbxlink check-config``);
    ``sections`` picks some top-level tables (default: all)."""
    lines: list[str] = []
    names = [f.name for f in dataclasses.fields(settings)] if sections is None else list(sections)  # type: ignore[arg-type]
    for name in names:
        section = getattr(settings, name)
        _emit_table(lines, name, _as_table(section))
    return "\n".join(lines).rstrip() + "\n"


def _as_table(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    return {sf.name: getattr(value, sf.name) for sf in dataclasses.fields(value)}


def _emit_table(lines: list[str], name: str, table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table_like(v)}
    nested = {k: v for k, v in table.items() if _is_table_like(v)}
    lines.append(f"[{name}]")
    for key, value in scalars.items():
        if value is None:
            lines.append(f"# {key} is not set")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines.append("")
    for key, value in nested.items():
        if isinstance(value, tuple | list):
            for item in value:
                lines.append(f"[[{name}.{_toml_key(key)}]]")
                for k, v in _as_table(item).items():
                    if v is not None:
                        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
                lines.append("")
        else:
            _emit_table(lines, f"{name}.{_toml_key(key)}", _as_table(value))


def _is_table_like(value: Any) -> bool:
    if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return True
    if isinstance(value, tuple | list) and value:
        first = value[0]
        return isinstance(first, Mapping) or dataclasses.is_dataclass(first)
    return False


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, Secret):
        return '"<redacted>"'
    if isinstance(value, enum.Enum):
        return _toml_value(value.value)
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
