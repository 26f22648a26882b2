"""`pbxlink adapter`: run the CRM adapter (MQTT outcomes → inbox → rules → embedded CRM).

Reads `[mqtt]`, `[log]`, `[adapter]` and `[crm]` from the config file (plus conf.d/ and --set);
exits 78 (EX_CONFIG) on a bad config.
SIGTERM/SIGINT drain: the current message finishes, nothing half-applied is kept.
SIGHUP re-reads the configuration: new `[crm]` rules apply from the next batch; a configuration
with problems is refused with one logged error listing them all, and the running rules stay.
`[adapter]`, `[mqtt]` and `[log]` changes need a restart; the log names them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from dataclasses import fields, replace
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


def read(args: argparse.Namespace) -> Settings:
    """Settings from --config and --set (a missing default file → defaults) and --database;
    raises `ConfigError` listing every problem."""
    path: Path = args.config
    missing_default = path == DEFAULT_CONFIG and not path.exists()
    settings = load_settings(None if missing_default else path, overrides=args.overrides)
    if args.database is not None:
        settings = replace(settings, adapter=replace(settings.adapter, database=str(args.database)))
    return settings


def load(args: argparse.Namespace, command: str) -> Settings | None:
    """`read`, or None after printing every problem."""
    try:
        return read(args)
    except ConfigError as exc:
        print(f"pbxlink {command}: {len(exc.problems)} config problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


async def serve(
    settings: Settings,
    *,
    shutdown: asyncio.Event,
    reload: asyncio.Event | None = None,
    reread: Callable[[], Settings] | None = None,
) -> None:
    store = await open_store(settings.adapter.database)
    try:
        async with store.transaction():
            await SqliteCrm(store).sync_numbering(settings.crm.inquiries.next_number)
        metrics = AdapterMetrics(settings.adapter.name)
        adapter = CrmAdapter(settings, store, metrics=metrics)
        a = settings.adapter
        async with contextlib.AsyncExitStack() as stack:
            if a.http_port != 0:
                await stack.enter_async_context(
                    HealthServer(metrics.registry, adapter.readiness, host=a.http_host, port=a.http_port)
                )
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
        try:
            await apply_reload(adapter, reread)
        except Exception as exc:  # noqa: BLE001 - a failed reload must not stop the adapter
            log.error("crm_adapter_reload_failed", error=f"{type(exc).__name__}: {exc}")


def _changed(old: object, new: object) -> list[str]:
    return [f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]  # type: ignore[arg-type]


async def apply_reload(adapter: CrmAdapter, reread: Callable[[], Settings]) -> bool:
    """Read the configuration again; use its rules, or keep the running ones if it has problems."""
    try:
        new = reread()
    except ConfigError as exc:
        log.error(
            "crm_adapter_reload_refused",
            problems=[str(p) for p in exc.problems],
            keeping="the running rules",
        )
        return False
    old = adapter.settings
    restart = [
        f"{section}.{key}"
        for section in ("adapter", "mqtt", "log")
        for key in _changed(getattr(old, section), getattr(new, section))
    ]
    if restart:
        log.warning("crm_adapter_reload_needs_restart", keys=restart, keeping="their running values")
    if new.crm.inquiries.next_number != old.crm.inquiries.next_number:
        async with adapter.store.transaction():
            await SqliteCrm(adapter.store).sync_numbering(new.crm.inquiries.next_number)
    adapter.use_rules(new.crm)
    log.info("crm_adapter_reloaded", changed=[f"crm.{name}" for name in _changed(old.crm, new.crm)])
    return True


def main(args: argparse.Namespace) -> int:
    settings = load(args, "adapter")
    if settings is None:
        return EX_CONFIG
    configure_logging(settings.log, secrets=[settings.mqtt.password])

    async def run() -> None:
        shutdown = asyncio.Event()
        reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await serve(settings, shutdown=shutdown, reload=reload, reread=lambda: read(args))

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"pbxlink adapter: {exc}", file=sys.stderr)
        return 1
    return 0
