"""`pbxlink adapter`: run the CRM adapter (MQTT outcomes → inbox → rules → embedded CRM).

Reads `[mqtt]`, `[log]`, `[adapter]` and `[crm]` from the config file (plus conf.d/ and --set);
exits 78 (EX_CONFIG) on a bad config.
SIGTERM/SIGINT drain: the current message finishes, nothing half-applied is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import replace
from pathlib import Path

import structlog

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import Settings, load_settings
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.metrics import AdapterMetrics
from pbxlink.adapters.store import StoreError, open_store
from pbxlink.foundation.config import add_config_arguments
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.toolkit.http import HealthServer
from pbxlink.toolkit.logs import configure_logging

DEFAULT_CONFIG = Path("/etc/pbxlink/pbxlink.toml")

log = structlog.get_logger()


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`-c/--config` and `--set` like every command, plus `--database`."""
    add_config_arguments(parser, default=DEFAULT_CONFIG)
    parser.add_argument(
        "--database", type=Path, default=None, help="the adapter's SQLite file (overrides adapter.database)"
    )


def load(args: argparse.Namespace, command: str) -> Settings | None:
    """Settings from --config and --set (a missing default file → defaults), or None after printing
    every problem."""
    path: Path = args.config
    missing_default = path == DEFAULT_CONFIG and not path.exists()
    try:
        settings = load_settings(None if missing_default else path, overrides=args.overrides)
    except ConfigError as exc:
        print(f"pbxlink {command}: {len(exc.problems)} config problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    if args.database is not None:
        settings = replace(settings, adapter=replace(settings.adapter, database=str(args.database)))
    return settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def serve(settings: Settings, *, shutdown: asyncio.Event) -> None:
    store = await open_store(settings.adapter.database)
    try:
        async with store.transaction():
            await SqliteCrm(store).sync_numbering(settings.crm.inquiries.next_number)
        metrics = AdapterMetrics(settings.adapter.name)
        adapter = CrmAdapter(settings, store, metrics=metrics)
        a = settings.adapter
        if a.http_port == 0:
            await adapter.run(shutdown)
            return
        async with HealthServer(metrics.registry, adapter.readiness, host=a.http_host, port=a.http_port):
            await adapter.run(shutdown)
    finally:
        await store.close()


def main(args: argparse.Namespace) -> int:
    settings = load(args, "adapter")
    if settings is None:
        return EX_CONFIG
    configure_logging(settings.log, secrets=[settings.mqtt.password])

    async def run() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(settings, shutdown=shutdown)

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"pbxlink adapter: {exc}", file=sys.stderr)
        return 1
    return 0
