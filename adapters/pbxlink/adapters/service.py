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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import structlog

from pbxlink.adapters.backends.bitrix24.setup import bitrix24_directory, open_bitrix24
from pbxlink.adapters.backends.owners import owner_payload
from pbxlink.adapters.backends.retailcrm.setup import api_key, directory_feed, open_retailcrm
from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.backends.webhook.backend import Deliverer, WebhookBackend, create_schema, read_keys
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
        metrics = AdapterMetrics(settings.adapter.name)
        if settings.crm.backend == "retailcrm":
            # RetailCRM (docs/crm-retailcrm.md): the backend, its directory feed and the consumer.
            async with open_retailcrm(store, settings.crm, settings.crm.retailcrm) as backend:
                adapter = CrmAdapter(
                    settings,
                    store,
                    metrics=metrics,
                    backend=backend,
                    hooks=backend,
                    directory_source=owner_payload,
                )
                feed = directory_feed(backend)
                tasks: list[Task] = []
                if feed is not None and settings.adapter.publish_directory:
                    interval = feed.s.directory_seconds
                    tasks.append(
                        ("retailcrm-directory", lambda: feed.run(shutdown, adapter.wake.set, interval))
                    )
                await _run(settings, adapter, metrics, shutdown, tasks, reload=reload, reread=reread)
            return
        if settings.crm.backend == "bitrix24":
            # Bitrix24 (docs/crm-bitrix24.md): the backend (its own batch hooks), its directory feed.
            async with open_bitrix24(store, settings.crm, settings.crm.bitrix24) as b24:
                adapter = CrmAdapter(
                    settings, store, metrics=metrics, backend=b24, hooks=b24, directory_source=owner_payload
                )
                tasks = []
                b24_feed = bitrix24_directory(b24)
                if b24_feed is not None and settings.adapter.publish_directory:
                    every = b24.s.directory_seconds
                    tasks.append(
                        ("bitrix24-directory", lambda: b24_feed.run(shutdown, adapter.wake.set, every))
                    )
                await _run(settings, adapter, metrics, shutdown, tasks, reload=reload, reread=reread)
            return
        if settings.crm.backend == "webhook":
            # Signed webhooks (docs/webhook.md): the consumer enqueues, the deliverer POSTs.
            await create_schema(store)
            deliverer = Deliverer(
                store,
                settings.crm.webhook,
                read_keys(settings.crm.webhook),
                observe=lambda subscriber, result: metrics.webhook_deliveries.labels(
                    subscriber, result
                ).inc(),
            )
            hooks = WebhookBackend(store, settings.crm.webhook, wake=deliverer.wake)
            adapter = CrmAdapter(settings, store, metrics=metrics, backend=hooks, hooks=hooks)
            deliver: list[Task] = [("webhook-deliverer", lambda: deliverer.run(shutdown))]
            await _run(settings, adapter, metrics, shutdown, deliver, reload=reload, reread=reread)
            return
        async with store.transaction():
            await SqliteCrm(store).sync_numbering(settings.crm.inquiries.next_number)
        adapter = CrmAdapter(settings, store, metrics=metrics)
        await _run(settings, adapter, metrics, shutdown, [], reload=reload, reread=reread)
    finally:
        await store.close()


Task = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


async def _run(
    settings: Settings,
    adapter: CrmAdapter,
    metrics: AdapterMetrics,
    shutdown: asyncio.Event,
    tasks: Sequence[Task],
    *,
    reload: asyncio.Event | None = None,
    reread: Callable[[], Settings] | None = None,
) -> None:
    """The consumer, its health/metrics endpoint (unless http_port = 0), SIGHUP reloads of the
    rules and the backend's own tasks (a remote CRM's directory feed, the webhook deliverer)."""
    a = settings.adapter
    async with contextlib.AsyncExitStack() as stack:
        if a.http_port != 0:
            await stack.enter_async_context(
                HealthServer(metrics.registry, adapter.readiness, host=a.http_host, port=a.http_port)
            )
        async with asyncio.TaskGroup() as group:
            side = []
            if reload is not None and reread is not None:
                side.append(group.create_task(_reloads(adapter, reload, reread), name="crm-reload"))
            for name, start in tasks:
                side.append(group.create_task(start(), name=name))
            await adapter.run(shutdown)
            for task in side:
                task.cancel()


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
    backend_tables = ("backend", "retailcrm", "bitrix24", "webhook")
    if any(getattr(old.crm, k) != getattr(new.crm, k) for k in backend_tables):
        restart.append("crm.backend/crm." + old.crm.backend)
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
    try:
        if settings.crm.backend == "retailcrm":
            api_key(settings.crm.retailcrm)
        if settings.crm.backend == "webhook":
            read_keys(settings.crm.webhook)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"pbxlink adapter: {problem}", file=sys.stderr)
        return EX_CONFIG
    b24 = settings.crm.bitrix24
    configure_logging(
        settings.log,
        secrets=[
            settings.mqtt.password,
            settings.crm.retailcrm.api_key,
            b24.webhook_url,
            b24.client_secret,
            b24.refresh_token,
        ],
    )

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
