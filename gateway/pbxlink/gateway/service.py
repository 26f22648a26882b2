"""`pbxlink gateway`: e-mail (IMAP), Telegram bots and web forms → requests for the CRM rules.

Reads `[mqtt]`, `[log]` and `[gateway]` from the config file (plus conf.d/ and --set); exits 78
(EX_CONFIG) on a bad config. One task per source, the web endpoint, the publisher and the
/metrics /healthz /readyz server, all owned by one TaskGroup. SIGTERM/SIGINT: the sources stop
between messages, the publisher finishes the message in flight, the database is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from aiohttp import web

from pbxlink.foundation.config import add_config_arguments
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.gateway.config import Settings, load_settings, missing_secrets
from pbxlink.gateway.imap import ImapSource
from pbxlink.gateway.intake import Intake
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.publisher import RequestPublisher
from pbxlink.gateway.store import GatewayStore, open_store
from pbxlink.gateway.telegram import TelegramSource
from pbxlink.gateway.web import WebEndpoint
from pbxlink.toolkit.http import HealthServer, Readiness
from pbxlink.toolkit.logs import configure_logging
from pbxlink.toolkit.sqlite_schema import SchemaError

__all__ = ["Gateway", "main", "serve"]

DEFAULT_CONFIG = Path("/etc/pbxlink/pbxlink.toml")

log = structlog.get_logger("pbxlink.gateway")


@dataclass(slots=True)
class Gateway:
    """A running gateway (what tests look at): its store, intake, sources and bound ports."""

    settings: Settings
    store: GatewayStore
    intake: Intake
    publisher: RequestPublisher
    imap: dict[str, ImapSource]
    telegram: dict[str, TelegramSource]
    web_port: int = 0
    metrics_port: int = 0


def _readiness(gateway: Gateway) -> Callable[[], Readiness]:
    def check() -> Readiness:
        checks = {"mqtt": gateway.publisher.connected, "web": gateway.web_port > 0}
        return Readiness(checks)

    return check


async def _source(name: str, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """One source; a source that gives up (a refused bot token) is logged and the others go on."""
    try:
        await run(stop)
    except Exception as exc:  # noqa: BLE001 - one source's failure must not stop the others
        log.error("gateway_source_stopped", source=name, error=f"{type(exc).__name__}: {exc}")


async def serve(
    settings: Settings, *, shutdown: asyncio.Event, started: Callable[[Gateway], None] | None = None
) -> None:
    store = await open_store(settings.gateway.database)
    try:
        metrics = GatewayMetrics()
        intake = Intake(store, settings, metrics)
        gateway = Gateway(
            settings=settings,
            store=store,
            intake=intake,
            publisher=RequestPublisher(settings, intake),
            imap={n: ImapSource(n, a, intake) for n, a in settings.gateway.email.items()},
            telegram={n: TelegramSource(n, a, intake) for n, a in settings.gateway.telegram.items()},
        )
        endpoint = WebEndpoint(settings.gateway.web, intake, gateway.telegram)
        runner = web.AppRunner(endpoint.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.gateway.listen, settings.gateway.port)
            await site.start()
            gateway.web_port = int(runner.addresses[0][1])
            async with (
                HealthServer(
                    metrics.registry,
                    _readiness(gateway),
                    host=settings.gateway.listen,
                    port=settings.gateway.metrics_port,
                ) as health,
                asyncio.TaskGroup() as group,
            ):
                gateway.metrics_port = health.port
                group.create_task(gateway.publisher.run(shutdown), name="gateway:publisher")
                for source in gateway.imap.values():
                    group.create_task(
                        _source(source.source, source.run, shutdown), name=f"gateway:{source.source}"
                    )
                for bot in gateway.telegram.values():
                    group.create_task(_source(bot.source, bot.run, shutdown), name=f"gateway:{bot.source}")
                log.info(
                    "gateway_started",
                    name=settings.gateway.name,
                    web_port=gateway.web_port,
                    metrics_port=gateway.metrics_port,
                    email=sorted(s.source for s in gateway.imap.values()),
                    telegram=sorted(s.source for s in gateway.telegram.values()),
                    web=sorted(f"web:{n}" for n in settings.gateway.web),
                )
                if started is not None:
                    started(gateway)
                await shutdown.wait()
        finally:
            await runner.cleanup()
    finally:
        await store.close()
    log.info("gateway_stopped", name=settings.gateway.name)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default=DEFAULT_CONFIG)
    parser.add_argument("--database", type=Path, default=None, help="overrides gateway.database")


def main(args: argparse.Namespace) -> int:
    path: Path = args.config
    missing_default = path == DEFAULT_CONFIG and not path.exists()
    try:
        settings = load_settings(None if missing_default else path, overrides=args.overrides)
    except ConfigError as exc:
        print(f"pbxlink gateway: {len(exc.problems)} config problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    missing = missing_secrets(settings.gateway)
    if missing:
        print(f"pbxlink gateway: {len(missing)} config problem(s):", file=sys.stderr)
        for problem in missing:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    if args.database is not None:
        settings = replace(settings, gateway=replace(settings.gateway, database=str(args.database)))
    secrets = [settings.mqtt.password]
    secrets += [a.password for a in settings.gateway.email.values()]
    secrets += [b.token for b in settings.gateway.telegram.values()]
    secrets += [w.token for w in settings.gateway.web.values()] + [
        w.hmac_secret for w in settings.gateway.web.values()
    ]
    configure_logging(settings.log, secrets=secrets)

    async def run() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(settings, shutdown=shutdown)

    try:
        asyncio.run(run())
    except (SchemaError, OSError) as exc:
        print(f"pbxlink gateway: {exc}", file=sys.stderr)
        return 1
    return 0
