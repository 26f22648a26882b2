"""The gateway's settings: `[gateway]` with one table per source, beside the shared `[mqtt]`, `[log]`.

Read by the one loader (:mod:`pbxlink.foundation.config`) from the same file as the daemon's and
the adapter's. Each source has a *source name* (``email:service@shop.example``,
``telegram:shop_bot``, ``web:site``): the CRM's request rules (``[[crm.requests.rules]] sources``)
name it, which is how an account or a request source chooses its processing rules (1C:CRM).

::

    [gateway]
    name = "gw1"
    database = "/var/lib/pbxlink/gateway.sqlite3"
    [gateway.email.service]            # an e-mail account (IMAP over TLS)
    host = "imap.shop.example"
    username = "service@shop.example"
    password_file = "/etc/pbxlink/imap-service.password"
    [gateway.telegram.shop_bot]        # a Telegram bot (long polling)
    token_file = "/etc/pbxlink/telegram-shop-bot.token"
    [gateway.web.site]                 # a web form: POST /v1/requests/site
    token_file = "/etc/pbxlink/site-form.token"
    origins = ["https://shop.example"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pbxlink.foundation.config import (
    AtLeast,
    LogSettings,
    MqttSettings,
    NonEmpty,
    Secret,
    load_config,
    mqtt_problems,
    parse_config,
    port_problems,
)
from pbxlink.foundation.errors import ConfigError, ConfigProblem

__all__ = [
    "EmailAccount",
    "GatewaySettings",
    "Settings",
    "TelegramAccount",
    "WebSource",
    "load_settings",
    "parse_settings",
    "settings_from_toml",
]


@dataclass(frozen=True, slots=True)
class EmailAccount:
    """``[gateway.email.<name>]``: one mailbox read over IMAP (TLS unless ``tls = false``)."""

    host: Annotated[str, NonEmpty()] = "imap.example"
    port: int = 993
    tls: bool = True  # implicit TLS (IMAPS); false only for a loopback server
    ca_file: Path | None = None  # the server's CA (PEM); empty: the system store
    username: Annotated[str, NonEmpty()] = "mailbox"
    password_file: Path | None = None
    password_credential: str = ""  # a systemd credential name holding the password
    password: Secret | None = None  # filled from the two keys above
    address: str = ""  # the mailbox's address; empty: the username. The source is "email:<address>"
    folder: Annotated[str, NonEmpty()] = "INBOX"
    idle: bool = True  # IMAP IDLE when the server offers it; else (or false) poll
    poll_seconds: Annotated[float, AtLeast(1)] = 60.0  # polling interval, and the IDLE renewal
    idle_seconds: Annotated[float, AtLeast(10)] = 1500.0  # re-issue IDLE this often (RFC 2177: < 29 min)
    command_timeout_seconds: Annotated[float, AtLeast(1)] = 30.0  # an IMAP command unanswered this long fails

    @property
    def mailbox_address(self) -> str:
        return (self.address or self.username).strip().lower()


@dataclass(frozen=True, slots=True)
class TelegramAccount:
    """``[gateway.telegram.<name>]``: one Telegram bot read by long polling (``getUpdates``)."""

    token_file: Path | None = None
    token_credential: str = ""
    token: Secret | None = None  # the bot token from @BotFather, filled from the two keys above
    api_url: str = "https://api.telegram.org"  # tests point it at the loopback fake
    poll_timeout_seconds: Annotated[int, AtLeast(0)] = 25  # getUpdates long-poll timeout
    mode: Literal["polling", "webhook"] = "polling"
    # webhook mode: the public https URL that reaches POST /v1/telegram/<name> on this gateway
    # (through the site's reverse proxy), and the secret Telegram sends with each update
    webhook_url: str = ""
    webhook_secret_file: Path | None = None
    webhook_secret_credential: str = ""
    webhook_secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class WebSource:
    """``[gateway.web.<name>]``: a web form posting to ``POST /v1/requests/<name>``.

    Authenticated by a bearer token (``Authorization: Bearer …`` or an ``X-Pbxlink-Token`` header,
    or a ``token`` form field for a plain HTML form) or by an HMAC-SHA256 signature of the body
    (``X-Pbxlink-Signature: sha256=<hex>``) with ``hmac_secret``; one of the two is required.
    """

    token_file: Path | None = None
    token_credential: str = ""
    token: Secret | None = None
    hmac_secret_file: Path | None = None
    hmac_secret_credential: str = ""
    hmac_secret: Secret | None = None
    origins: tuple[str, ...] = ()  # CORS: the sites allowed to post from a browser
    rate_per_minute: Annotated[float, AtLeast(1)] = 30.0  # requests accepted per minute …
    rate_burst: Annotated[int, AtLeast(1)] = 10  # … with this many at once


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    name: Annotated[str, NonEmpty()] = "gateway"  # names the gateway: MQTT client id, envelope node
    client_id: str = ""  # MQTT client id; empty: pbxlink-gateway-<name>
    database: str = "/var/lib/pbxlink/gateway.sqlite3"  # requests waiting for PUBACK, cursors, dead letters
    listen: str = "127.0.0.1"  # the web endpoint, /metrics, /healthz and /readyz
    port: int = 8780
    metrics_port: int = 9110  # /metrics /healthz /readyz (on `listen`)
    max_message_bytes: Annotated[int, AtLeast(1024)] = 10 * 1024 * 1024  # an e-mail's or a form's size cap
    max_body_chars: Annotated[int, AtLeast(100)] = 20000  # the request text is cut to this length
    dead_letter_topic: str = "pbxlink/v1/gateway/deadletter"
    flood_per_minute: Annotated[float, AtLeast(1)] = 60.0  # one sender (e-mail/chat) per minute …
    flood_burst: Annotated[int, AtLeast(1)] = 20  # … past this burst: dead letters, not requests
    email: Mapping[str, EmailAccount] = field(default_factory=dict)
    telegram: Mapping[str, TelegramAccount] = field(default_factory=dict)
    web: Mapping[str, WebSource] = field(default_factory=dict)

    @property
    def identifier(self) -> str:
        return self.client_id or f"pbxlink-gateway-{self.name}"


@dataclass(frozen=True, slots=True)
class Settings:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    log: LogSettings = field(default_factory=LogSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


def source_names(gateway: GatewaySettings) -> dict[str, str]:
    """Every configured source's name (what the CRM rules' ``sources`` list) → its config path."""
    names = {f"email:{a.mailbox_address}": f"gateway.email.{k}" for k, a in gateway.email.items()}
    names.update({f"telegram:{k}": f"gateway.telegram.{k}" for k in gateway.telegram})
    names.update({f"web:{k}": f"gateway.web.{k}" for k in gateway.web})
    return names


def missing_secrets(gateway: GatewaySettings) -> list[ConfigProblem]:
    """Sources whose secret was not found (a credential name given, no such credential): the
    loader leaves those None; `pbxlink gateway` refuses to start with them (exit 78)."""
    problems = [
        ConfigProblem(f"gateway.email.{n}.password", "not found (password_file / password_credential)")
        for n, a in gateway.email.items()
        if a.password is None
    ]
    problems += [
        ConfigProblem(f"gateway.telegram.{n}.token", "not found (token_file / token_credential)")
        for n, b in gateway.telegram.items()
        if b.token is None
    ]
    problems += [
        ConfigProblem(f"gateway.telegram.{n}.webhook_secret", "not found (webhook_secret_file / _credential)")
        for n, b in gateway.telegram.items()
        if b.mode == "webhook" and b.webhook_secret is None
    ]
    problems += [
        ConfigProblem(f"gateway.web.{n}.token", "neither the token nor the hmac_secret was found")
        for n, w in gateway.web.items()
        if w.token is None and w.hmac_secret is None
    ]
    return problems


def _name_ok(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


def _problems(settings: Settings) -> list[ConfigProblem]:
    gateway = settings.gateway
    problems = port_problems(
        ("mqtt.port", settings.mqtt.port),
        ("gateway.port", gateway.port),
        ("gateway.metrics_port", gateway.metrics_port),
    )
    problems.extend(mqtt_problems(settings.mqtt))
    if any(c in gateway.name for c in "/+#$ :"):
        problems.append(ConfigProblem("gateway.name", "must be without / + # $ : or spaces"))
    for kind, table in (("email", gateway.email), ("telegram", gateway.telegram), ("web", gateway.web)):
        problems.extend(
            ConfigProblem(f"gateway.{kind}.{name}", "a source name is letters, digits, - _ . only")
            for name in table
            if not _name_ok(name)
        )
    for name, account in gateway.email.items():
        where = f"gateway.email.{name}"
        problems.extend(port_problems((f"{where}.port", account.port)))
        if account.password_file is None and not account.password_credential:
            problems.append(ConfigProblem(f"{where}.password_file", "set it (or password_credential)"))
        if "@" not in account.mailbox_address:
            problems.append(
                ConfigProblem(f"{where}.address", "an e-mail address (or a username that is one)")
            )
    for name, bot in gateway.telegram.items():
        where = f"gateway.telegram.{name}"
        if bot.token_file is None and not bot.token_credential:
            problems.append(ConfigProblem(f"{where}.token_file", "set it (or token_credential)"))
        if not bot.api_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            problems.append(ConfigProblem(f"{where}.api_url", "https:// (plain http only on loopback)"))
        if bot.mode == "webhook":
            if not bot.webhook_url.startswith(("https://", "http://127.0.0.1")):
                problems.append(
                    ConfigProblem(f"{where}.webhook_url", "the public https:// URL of the webhook")
                )
            if bot.webhook_secret_file is None and not bot.webhook_secret_credential:
                problems.append(
                    ConfigProblem(f"{where}.webhook_secret_file", "set it (or webhook_secret_credential)")
                )
    for name, form in gateway.web.items():
        where = f"gateway.web.{name}"
        secrets = (form.token_file, form.token_credential, form.hmac_secret_file, form.hmac_secret_credential)
        if not any(secrets):
            problems.append(ConfigProblem(f"{where}.token_file", "set a token or an hmac_secret"))
        problems.extend(
            ConfigProblem(f"{where}.origins", f"{o!r} is not an origin like https://shop.example")
            for o in form.origins
            if not o.startswith(("https://", "http://")) or o.rstrip("/").count("/") != 2
        )
    return problems


def load_settings(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, layer and validate the gateway's configuration; raise ``ConfigError`` listing every problem."""
    return load_config(Settings, path, overrides=overrides, environ=environ, checks=(_problems,))


def parse_settings(
    document: Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    return parse_config(Settings, document, overrides=overrides, environ=environ, checks=(_problems,))


def settings_from_toml(text: str, *, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")]) from exc
    return parse_settings(document, environ={} if environ is None else environ)
