"""`pbxlink adapter`: run the CRM adapter (MQTT outcomes → inbox → rules → embedded CRM).

Reads `[adapter]` and `[crm]` from the config file; exits 78 (EX_CONFIG) on a bad config.
SIGTERM/SIGINT drain: the current message finishes, nothing half-applied is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import structlog

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.store import StoreError, open_store
from pbxlink.daemon.logs import configure_logging
from pbxlink.foundation.config import LogSettings, Secret, read_secret
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.rules.settings import Settings, SettingsError, load_settings

DEFAULT_CONFIG = Path("/etc/pbxlink/pbxlink.toml")

log = structlog.get_logger()


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"TOML file with [adapter] and [crm] sections (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--database", type=Path, default=None, help="the adapter's SQLite file (overrides adapter.database)"
    )


def load(args: argparse.Namespace, command: str) -> Settings | None:
    """Settings from --config (missing default file → defaults), or None after printing errors."""
    path: Path = args.config
    try:
        missing_default = path == DEFAULT_CONFIG and not path.exists()
        settings = Settings() if missing_default else load_settings(path)
    except SettingsError as exc:
        print(f"pbxlink {command}: {len(exc.problems)} config problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    if args.database is not None:
        settings = replace(settings, adapter=replace(settings.adapter, database=str(args.database)))
    return settings


def _password(settings: Settings) -> Secret | None:
    """The broker password: adapter.password_file, else the systemd credential mqtt-password."""
    if settings.adapter.password_file is not None:
        return read_secret(Path(settings.adapter.password_file), "adapter.password_file")
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(credentials) / "mqtt-password" if credentials else None
    if candidate is not None and candidate.is_file():
        return read_secret(candidate, "$CREDENTIALS_DIRECTORY/mqtt-password")
    return None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def serve(settings: Settings, *, shutdown: asyncio.Event, password: Secret | None = None) -> None:
    store = await open_store(settings.adapter.database)
    try:
        async with store.transaction():
            await SqliteCrm(store).sync_numbering(settings.crm.inquiries.next_number)
        adapter = CrmAdapter(settings, store, password=None if password is None else password.reveal())
        await adapter.run(shutdown)
    finally:
        await store.close()


def main(args: argparse.Namespace) -> int:
    settings = load(args, "adapter")
    if settings is None:
        return EX_CONFIG
    try:
        password = _password(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"pbxlink adapter: {problem}", file=sys.stderr)
        return EX_CONFIG
    configure_logging(LogSettings(), secrets=[password])

    async def run() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(settings, shutdown=shutdown, password=password)

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"pbxlink adapter: {exc}", file=sys.stderr)
        return 1
    return 0
