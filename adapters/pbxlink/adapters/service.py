"""`pbxlink adapter`: run the CRM adapter (MQTT outcomes → inbox → rules → embedded CRM).

Reads `[adapter]` and `[crm]` from the config file; exits 78 (EX_CONFIG) on a bad config.
SIGTERM/SIGINT drain: the current message finishes, nothing half-applied is kept.
SIGHUP re-reads the file: new `[crm]` rules apply from the next batch; a file with problems is
refused with one logged error listing them all, and the running rules stay. `[adapter]`
changes (broker, database…) need a restart; the log says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import fields, replace
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


async def serve(
    settings: Settings,
    *,
    shutdown: asyncio.Event,
    password: Secret | None = None,
    reload: asyncio.Event | None = None,
    reread: Callable[[], Settings] | None = None,
) -> None:
    store = await open_store(settings.adapter.database)
    try:
        async with store.transaction():
            await SqliteCrm(store).sync_numbering(settings.crm.inquiries.next_number)
        adapter = CrmAdapter(settings, store, password=None if password is None else password.reveal())
        async with asyncio.TaskGroup() as group:
            reloads = None
            if reload is not None and reread is not None:
                reloads = group.create_task(_reloads(adapter, reload, reread), name="crm-reload")
            await adapter.run(shutdown)
            if reloads is not None:
                reloads.cancel()
    finally:
        await store.close()


async def _reloads(adapter: CrmAdapter, reload: asyncio.Event, reread: Callable[[], Settings]) -> None:
    while True:
        await reload.wait()
        reload.clear()
        await apply_reload(adapter, reread)


async def apply_reload(adapter: CrmAdapter, reread: Callable[[], Settings]) -> bool:
    """Read the config again; use its rules, or keep the running ones if it has problems."""
    try:
        new = reread()
    except SettingsError as exc:
        log.error("crm.adapter.reload_refused", problems=exc.problems, keeping="the running rules")
        return False
    old = adapter.settings
    if new.adapter != old.adapter:
        changed = [
            f.name
            for f in fields(new.adapter)
            if getattr(new.adapter, f.name) != getattr(old.adapter, f.name)
        ]
        log.warning("crm.adapter.reload_needs_restart", keys=[f"adapter.{k}" for k in changed])
    changed_rules = [f.name for f in fields(new.crm) if getattr(new.crm, f.name) != getattr(old.crm, f.name)]
    if new.crm.inquiries.next_number != old.crm.inquiries.next_number:
        async with adapter.store.transaction():
            await SqliteCrm(adapter.store).sync_numbering(new.crm.inquiries.next_number)
    adapter.use_rules(new.crm)
    log.info("crm.adapter.reloaded", changed=[f"crm.{name}" for name in changed_rules])
    return True


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

    def reread() -> Settings:
        fresh = load_settings(args.config)
        if args.database is not None:
            fresh = replace(fresh, adapter=replace(fresh.adapter, database=str(args.database)))
        return fresh

    async def run() -> None:
        shutdown = asyncio.Event()
        reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await serve(settings, shutdown=shutdown, password=password, reload=reload, reread=reread)

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"pbxlink adapter: {exc}", file=sys.stderr)
        return 1
    return 0
