"""``pbxlink run``: the long-running daemon, one TaskGroup of named tasks.

    ami ─▶ pipeline (decode ─▶ tracker) ─▶ outbox-writer ─▶ publisher ─▶ MQTT
    tracker-tick · outbox-housekeeping · http (/metrics /healthz /readyz) · watchdog · reload

* READY=1 goes to systemd only when the outbox is open, the HTTP endpoint listens and AMI is
  logged in; WATCHDOG=1 is sent from the loop; STOPPING=1 on shutdown.
* SIGTERM/SIGINT drain: stop reading AMI, commit what the tracker produced, publish what is
  pending (bounded by ``DRAIN_SECONDS``), announce offline, exit 0. Anything not acknowledged
  stays in the outbox for the next start.
* SIGHUP reloads the config. A bad new config is refused with one logged error listing every
  problem and the old one keeps running. A good one is applied without dropping calls: log
  settings at once, the MQTT and HTTP parts by restarting just those tasks, the AMI part by
  reconnecting (the tracker resyncs). Keys that need a restart (node, state, tracker) are
  logged and left as they were.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import structlog

from pbxlink.ami.framing import Frame
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import CallTracker, CallTrackerSettings
from pbxlink.daemon.agi.router import Router
from pbxlink.daemon.amiclient.shell import AmiError, AmiLoginError, AmiShell, ConnectionLost, Resynced
from pbxlink.daemon.amiclient.shell import AmiSettings as ShellSettings
from pbxlink.daemon.cel_reader import CelReader, CelReadError, open_cel_reader
from pbxlink.daemon.config import AmiSettings, Settings, load_settings
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import SCHEMA_VERSION, Outbox, OutboxError
from pbxlink.daemon.pipeline import CallPipeline, OutboxWriter
from pbxlink.daemon.publisher import OutcomePublisher
from pbxlink.daemon.systemd import SystemdNotifier, keep_watchdog_fed
from pbxlink.foundation.config import add_config_arguments
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.routing.presence import PRESENCE_EVENTS as ROUTING_PRESENCE_EVENTS
from pbxlink.toolkit.http import HealthServer, Readiness
from pbxlink.toolkit.logs import configure_logging
from pbxlink.wire.model import RoutingDecision

log = structlog.get_logger(__name__)

EX_CANTCREAT: Final = 73  # sysexits.h: cannot create (the outbox in the state directory)
OUTBOX_FILE: Final = "outbox.sqlite"
DRAIN_SECONDS: Final = 10.0  # on SIGTERM, how long to keep publishing what is pending
TICK_SECONDS: Final = 0.2  # how often settled calls are finalized while AMI is quiet
HOUSEKEEPING_SECONDS: Final = 5.0  # gauges, STATUS=, pruning
PRUNE_EVERY: Final = 720  # housekeeping rounds between prunes (an hour)
# AMI events the routing presence tracker reads (pbxlink.routing.presence), lower case.
PRESENCE_EVENTS: Final = frozenset(name.lower() for name in ROUTING_PRESENCE_EVENTS)


AmiShellFactory = Callable[[ShellSettings], AmiShell]


def shell_settings(ami: AmiSettings) -> ShellSettings:
    """The AMI shell's settings from the ``[ami]`` section (the secret revealed only here)."""
    return ShellSettings(
        host=ami.host,
        port=ami.port,
        username=ami.username,
        secret=ami.secret.reveal() if ami.secret is not None else "",
        ping_interval=ami.ping_interval,
        ping_timeout=ami.ping_timeout,
        action_timeout=ami.action_timeout,
        connect_timeout=ami.connect_timeout,
        backoff_initial=ami.backoff_initial,
        backoff_max=ami.backoff_max,
        max_frame_bytes=ami.max_frame_bytes,
    )


def tracker_settings(settings: Settings) -> CallTrackerSettings:
    return CallTrackerSettings(
        node=settings.node.name,
        parties=PartyRules(
            agent_endpoints=settings.tracker.agent_endpoints,
            trunk_endpoints=frozenset(settings.tracker.trunk_endpoints),
        ),
        settle_seconds=settings.tracker.settle_seconds,
        default_region=settings.node.default_region,
    )


class Daemon:
    """Everything ``pbxlink run`` runs. ``await Daemon(settings).run(shutdown=…)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: SystemdNotifier | None = None,
        ami_shell: AmiShellFactory = AmiShell,
        router: Callable[[Settings], Router] = Router,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._notifier = notifier or SystemdNotifier.from_environment()
        self._ami_shell_factory = ami_shell
        self._router_factory = router
        self._router: Router | None = None
        self._clock = clock
        self.metrics = DaemonMetrics()
        self.metrics.export_agi(
            lambda: (
                None if self._router is None else (self._router.server.counters, self._router.feed.counters)
            )
        )
        self._ami: AmiShell | None = None
        self._ami_seen = _ShellCounters()
        self._ami_restart = asyncio.Event()
        self._http_restart = asyncio.Event()
        self._mqtt_restart = asyncio.Event()
        self._publisher: OutcomePublisher | None = None
        self._writer: OutboxWriter | None = None
        self._pipeline: CallPipeline | None = None
        self._outbox: Outbox | None = None
        self._cel_reader: CelReader | None = open_cel_reader(settings.cel)
        # AMI time from which Asterisk's CEL records are read back (the last AMI event before
        # a connection loss, or the restored tracker's clock at start); None: no gap open
        self._gap_since: float | None = None
        self._http_listening = False
        self._ready_sent = False
        self._mqtt_stop_for_good = False  # set on shutdown: a pending [mqtt] reload must not restart

    # -- readiness ----------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        writer = self._writer
        return Readiness(
            {
                "ami": self._ami is not None and self._ami.connected,
                "mqtt": self._publisher is not None and self._publisher.connected,
                "outbox_writable": writer is not None and writer.writable,
                **({"agi": self._router is not None} if self.settings.agi.enabled else {}),
            }
        )

    def _status_line(self, pending: int | None = None) -> str:
        checks = self.readiness().checks
        parts = [f"AMI {'up' if checks['ami'] else 'down'}", f"MQTT {'up' if checks['mqtt'] else 'down'}"]
        if not checks["outbox_writable"]:
            parts.append("OUTBOX NOT WRITABLE")
        if pending is not None:
            parts.append(f"outbox pending {pending}")
        return ", ".join(parts)

    def _maybe_ready(self) -> None:
        if self._ready_sent or not self._http_listening:
            return
        if self._ami is None or not self._ami.connected or self._writer is None:
            return
        if self.settings.agi.enabled and self._router is None:
            return
        self._ready_sent = True
        self._notifier.ready(self._status_line())
        log.info("daemon_ready", status=self._status_line())

    # -- the run ------------------------------------------------------------------------------

    async def run(self, *, shutdown: asyncio.Event, reload: asyncio.Event | None = None) -> int:
        """Run until ``shutdown`` is set; return the exit status."""
        settings = self.settings
        path = settings.state.directory / OUTBOX_FILE
        try:
            outbox = await Outbox.open(path)
        except OutboxError as exc:
            log.error("outbox_unavailable", error=str(exc), path=str(path))
            self._notifier.status(f"cannot open the outbox: {exc}")
            return EX_CANTCREAT
        if 0 < outbox.migrated_from < SCHEMA_VERSION:
            log.info(
                "outbox_migrated",
                path=str(path),
                from_version=outbox.migrated_from,
                to_version=SCHEMA_VERSION,
            )
        try:
            if not settings.agi.enabled:
                return await self._run_with(outbox, shutdown, reload or asyncio.Event())
            try:
                router = self._router_factory(settings)
                await router.__aenter__()
            except OSError as exc:
                log.error("agi_unavailable", error=str(exc), host=settings.agi.host, port=settings.agi.port)
                self._notifier.status(f"cannot listen for FastAGI: {exc}")
                return EX_CANTCREAT
            self._router = router
            try:
                return await self._run_with(outbox, shutdown, reload or asyncio.Event())
            finally:
                self._router = None
                await router.__aexit__(None, None, None)
        finally:
            await outbox.close()

    def _routing_for(self, keys: Iterable[str]) -> RoutingDecision | None:
        return self._router.routing_for(keys) if self._router is not None else None

    async def _run_with(self, outbox: Outbox, shutdown: asyncio.Event, reload: asyncio.Event) -> int:
        settings = self.settings
        self._publisher = self._new_publisher(outbox)
        self._writer = OutboxWriter(
            outbox,
            metrics=self.metrics,
            event_ttl=settings.mqtt.event_expiry_seconds,
            on_commit=lambda: self._publisher.wake() if self._publisher else None,
            clock=self._clock,
        )
        self._pipeline = CallPipeline(
            CallTracker(tracker_settings(settings)),
            self._writer,
            node=settings.node.name,
            metrics=self.metrics,
            topic_prefix=settings.mqtt.topic_prefix,
            routing_lookup=self._routing_for,
            final_on_linkedid_end=settings.cel.final_on_linkedid_end,
        )
        self._outbox = outbox
        journal = await outbox.journal()
        if journal:
            # The previous run's tracker, rebuilt from its journal; the first AMI snapshot then
            # ends the calls that finished while no daemon was watching.
            replayed = self._pipeline.replay_journal(journal)
            log.info(
                "tracker_restored", journal_entries=replayed, open_calls=self._pipeline.tracker.active_calls
            )
            # Calls that started (or ended) while no daemon was watching are in Asterisk's CEL
            # records from the journal's last moment on.
            self._gap_since = self._pipeline.tracker.clock or None
        stats = await outbox.stats()
        log.info(
            "daemon_starting",
            node=settings.node.name,
            outbox=str(outbox.path),
            pending_outcomes=stats.pending_outcomes,
            pending_events=stats.pending_events,
        )
        failed = False
        exit_status = 1
        try:
            async with asyncio.TaskGroup() as tg:
                writer_task = tg.create_task(self._writer.run(), name="outbox-writer")
                publisher_task = tg.create_task(self._run_publisher(outbox), name="publisher")
                ami_task = tg.create_task(self._run_ami(), name="ami")
                others = [
                    tg.create_task(self._run_ticker(), name="tracker-tick"),
                    tg.create_task(self._run_housekeeping(outbox), name="outbox-housekeeping"),
                    tg.create_task(self._run_http(), name="http"),
                    tg.create_task(keep_watchdog_fed(self._notifier), name="watchdog"),
                    tg.create_task(self._run_reloads(reload), name="reload"),
                ]
                if self._router is not None:
                    others.append(
                        tg.create_task(self.run_directory_feed(self._router), name="directory-feed")
                    )
                await shutdown.wait()
                await self._drain(ami_task, writer_task, publisher_task)
                for task in others:
                    task.cancel()
        except* AmiLoginError as group:
            # A wrong AMI user/secret is a configuration problem: exit 78 so that systemd does
            # not restart in a loop (RestartPreventExitStatus=78).
            failed = True
            exit_status = EX_CONFIG
            for refused in group.exceptions:
                log.error("ami_login_refused", error=str(refused))
        except* Exception as group:
            failed = True
            for exc in group.exceptions:
                log.error("daemon_task_failed", error=str(exc), error_type=type(exc).__name__, exc_info=exc)
        if failed:
            self._notifier.stopping("failed")
            return exit_status
        log.info("daemon_stopped")
        return 0

    async def _drain(
        self,
        ami_task: asyncio.Task[None],
        writer_task: asyncio.Task[None],
        publisher_task: asyncio.Task[None],
    ) -> None:
        self._notifier.stopping()
        log.info("daemon_stopping", drain_seconds=DRAIN_SECONDS)
        ami_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ami_task
        assert self._writer is not None
        assert self._pipeline is not None
        self._pipeline.tick(self._clock())
        self._writer.stop()
        await writer_task
        self._mqtt_stop_for_good = True
        if self._publisher is not None:
            self._publisher.stop()
        done, _ = await asyncio.wait({publisher_task}, timeout=DRAIN_SECONDS)
        if not done:
            log.warning(
                "drain_timeout", seconds=DRAIN_SECONDS, pending="kept in the outbox for the next start"
            )
            publisher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher_task

    # -- tasks --------------------------------------------------------------------------------

    def _new_publisher(self, outbox: Outbox) -> OutcomePublisher:
        return OutcomePublisher(
            self.settings.mqtt, outbox, node=self.settings.node.name, metrics=self.metrics, clock=self._clock
        )

    async def _run_publisher(self, outbox: Outbox) -> None:
        """The publisher; replaced by a new one when a reload changes ``[mqtt]``."""
        while True:
            publisher = self._publisher
            assert publisher is not None
            publisher.wake()
            async with asyncio.TaskGroup() as tasks:
                task = tasks.create_task(publisher.run(), name="publisher-connection")
                restart = tasks.create_task(self._mqtt_restart.wait(), name="mqtt-reload-wait")
                await asyncio.wait({task, restart}, return_when=asyncio.FIRST_COMPLETED)
                restart.cancel()
                if not task.done():
                    # Reload: let the old connection finish its in-flight publishes and say offline.
                    self._mqtt_restart.clear()
                    publisher.stop()
                    done, _ = await asyncio.wait({task}, timeout=DRAIN_SECONDS)
                    if not done:
                        task.cancel()
                elif not task.cancelled():
                    return  # the publisher ended (stopped); the group re-raises what ended it
            if self._mqtt_stop_for_good:
                return
            self._publisher = self._new_publisher(outbox)

    async def _run_ami(self) -> None:
        """Read AMI into the pipeline; reconnect when a reload changes ``[ami]``.

        The shell reconnects by itself (capped, jittered backoff) and announces each new
        session with a snapshot, which the tracker reconciles against.
        """
        assert self._pipeline is not None
        pipeline = self._pipeline
        while True:
            self._ami_restart.clear()
            shell = self._ami_shell_factory(shell_settings(self.settings.ami))
            async with shell:
                self._ami = shell
                self._ami_seen = _ShellCounters()
                try:
                    async with asyncio.TaskGroup() as tasks:
                        reader = tasks.create_task(self._pump(shell, pipeline), name="ami-frames")
                        restart = tasks.create_task(self._ami_restart.wait(), name="ami-reload-wait")
                        await asyncio.wait({reader, restart}, return_when=asyncio.FIRST_COMPLETED)
                        restart.cancel()
                        reader.cancel()  # a no-op when the stream ended by itself
                finally:
                    self._ami = None
                    self.metrics.ami_connected.set(0)
                if not reader.cancelled():
                    return  # the stream ended; an error of it came out of the group above
            log.info("ami_reconnecting", reason="config reload")

    async def _pump(self, shell: AmiShell, pipeline: CallPipeline) -> None:
        metrics = self.metrics
        router = self._router
        writer = self._writer
        assert writer is not None
        async for item in shell.frames():
            await writer.wait_for_room()  # backpressure while the outbox cannot be written
            if self._gap_since is not None and not isinstance(item, ConnectionLost):
                # The first item of a new session: what happened during the gap, from CEL.
                stamp = item.value("Timestamp") if isinstance(item, Frame) else None
                until = _float(stamp) or (item.taken_at if isinstance(item, Resynced) else self._clock())
                since, self._gap_since = self._gap_since, None
                await self._backfill(pipeline, since, until)
            if isinstance(item, Frame):
                pipeline.feed(item)
                if router is not None and (item.event or "").lower() in PRESENCE_EVENTS:
                    router.on_ami_frame(item)
            elif isinstance(item, Resynced):
                if router is not None:
                    await self._seed_presence(shell, router)
                metrics.ami_connected.set(1)
                if item.session > 1:
                    metrics.reconnects.labels(link="ami").inc()
                pipeline.resync(item.channels, item.taken_at)
                log.info(
                    "ami_resynced",
                    session=item.session,
                    channels=len(item.channels),
                    asterisk=item.asterisk_version,
                )
                self._maybe_ready()
            else:
                metrics.ami_connected.set(0)
                log.warning("ami_connection_lost", session=item.session, reason=item.reason)
                if self._gap_since is None:
                    self._gap_since = pipeline.last_event_time or pipeline.tracker.clock or None

    async def _backfill(self, pipeline: CallPipeline, since: float, until: float) -> None:
        """Fold Asterisk's CEL records of the gap ``(since, until]`` through the tracker, except
        those of calls whose outcome the outbox already has."""
        reader = self._cel_reader
        outbox = self._outbox
        if reader is None or outbox is None:
            return
        floor = until - self.settings.cel.max_gap_seconds
        if since < floor:
            log.warning(
                "cel_gap_too_long", since=since, until=until, reading_from=floor, path=str(reader.path)
            )
            since = floor
        if until <= since:
            return
        try:
            read = await asyncio.to_thread(reader.read, since, until)
        except CelReadError as exc:
            log.warning("cel_backfill_failed", error=str(exc), since=since, until=until)
            return
        for skipped in read.skipped[:20]:
            log.warning(
                "cel_record_skipped", path=str(reader.path), where=skipped.where, reason=skipped.reason
            )
        node = self.settings.node.name
        known = await outbox.known_ids(f"{node}:{r.linkedid}" for r in read.records)
        records = [r for r in read.records if f"{node}:{r.linkedid}" not in known]
        outcomes = pipeline.backfill(records, until)
        log.info(
            "cel_backfilled",
            since=since,
            until=until,
            records=len(records),
            already_published=len(read.records) - len(records),
            skipped=len(read.skipped),
            outcomes=outcomes,
            open_calls=pipeline.tracker.active_calls,
        )

    async def _seed_presence(self, shell: AmiShell, router: Router) -> None:
        """After each (re)login: who is online, for routing (``DeviceStateList``)."""
        try:
            reply = await shell.action("DeviceStateList")
        except AmiError as exc:
            log.warning("presence_snapshot_failed", error=str(exc))
            return
        router.on_ami_snapshot(reply.items)

    async def run_directory_feed(self, router: Router) -> None:
        """The ownership directory from MQTT (retained messages), own connection."""
        mqtt = self.settings.mqtt
        # The same [mqtt] settings as the publisher (TLS, client certificate, auth): one factory.
        await router.feed.run(
            mqtt, identifier=f"{mqtt.client_id or 'pbxlink-' + self.settings.node.name}-directory"
        )

    def _sync_shell_counters(self) -> None:
        """Carry the shell's framing counters into the metrics (oversized, not-AMI frames)."""
        shell = self._ami
        if shell is None:
            return
        stats = shell.stats()
        seen = self._ami_seen
        rejected = self.metrics.ami_frames_rejected
        if stats.oversized_frames > seen.oversized:
            rejected.labels(reason="oversized").inc(stats.oversized_frames - seen.oversized)
        if stats.handler_errors > seen.handler_errors:
            rejected.labels(reason="handler_error").inc(stats.handler_errors - seen.handler_errors)
        self._ami_seen = _ShellCounters(stats.oversized_frames, stats.handler_errors)

    async def _run_ticker(self) -> None:
        assert self._pipeline is not None
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._pipeline.tick(self._clock())
            self._sync_shell_counters()

    async def _run_housekeeping(self, outbox: Outbox) -> None:
        rounds = 0
        retention = self.settings.state.retention_hours * 3600
        while True:
            stats = await outbox.stats()
            m = self.metrics
            m.outbox_pending.labels(kind="call.outcome").set(stats.pending_outcomes)
            m.outbox_pending.labels(kind="call.event").set(stats.pending_events)
            oldest = stats.oldest_pending_created_at
            m.outbox_oldest_pending_age.set(0 if oldest is None else max(0.0, self._clock() - oldest))
            self._notifier.status(self._status_line(stats.pending_outcomes + stats.pending_events))
            if rounds % PRUNE_EVERY == 0:
                with contextlib.suppress(OutboxError):  # a full disk is reported by the writer
                    pruned = await outbox.prune(done_before=self._clock() - retention)
                    if pruned:
                        log.info(
                            "outbox_pruned", rows=pruned, retention_hours=self.settings.state.retention_hours
                        )
            rounds += 1
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _run_http(self) -> None:
        while True:
            self._http_restart.clear()
            http = self.settings.http
            if not http.enabled:
                self._http_listening = True
                await self._http_restart.wait()
                continue
            async with HealthServer(self.metrics.registry, self.readiness, host=http.host, port=http.port):
                self._http_listening = True
                self._maybe_ready()
                await self._http_restart.wait()

    async def _run_reloads(self, reload: asyncio.Event) -> None:
        while True:
            await reload.wait()
            reload.clear()
            self.apply_reload()

    def apply_reload(self) -> bool:
        """Load the config again; apply it or keep the old one. Return True when applied."""
        if self._reload_settings is None:
            log.warning("config_reload_unavailable", reason="started without a config source")
            return False
        self._notifier.reloading()
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            self.metrics.config_reloads.labels(result="error").inc()
            log.error(
                "config_reload_refused",
                problems=[str(p) for p in exc.problems],
                keeping="the running configuration",
            )
            self._notifier.ready(f"{self._status_line()}; reload refused: {exc.problems[0]}")
            return False
        old = self.settings
        self.settings = new
        changed = [
            f.name for f in dataclasses.fields(Settings) if getattr(old, f.name) != getattr(new, f.name)
        ]
        needs_restart = [name for name in changed if name in ("node", "state", "tracker", "cel")]
        if needs_restart:
            self.settings = dataclasses.replace(new, **{name: getattr(old, name) for name in needs_restart})
            log.warning(
                "config_reload_needs_restart",
                sections=needs_restart,
                keeping="the running values of these sections",
            )
        if "log" in changed:
            configure_logging(new.log, secrets=(new.ami.secret, new.mqtt.password))
        if "mqtt" in changed:
            self._mqtt_restart.set()
        if "http" in changed:
            self._http_restart.set()
        if "ami" in changed:
            self._ami_restart.set()
        self.metrics.config_reloads.labels(result="applied").inc()
        log.info("config_reloaded", changed=changed)
        self._notifier.ready(self._status_line())
        return True


# ---------------------------------------------------------------------------------------------
# The command


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class _ShellCounters:
    oversized: int = 0
    handler_errors: int = 0


def main(args: argparse.Namespace) -> int:
    config_path: Path | None = args.config
    overrides: list[str] = args.overrides

    def load() -> Settings:
        return load_settings(config_path, overrides=overrides, require_secrets=True)

    try:
        settings = load()
    except ConfigError as exc:
        print(f"pbxlink run: {len(exc.problems)} config problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    configure_logging(settings.log, secrets=(settings.ami.secret, settings.mqtt.password))
    return asyncio.run(serve(settings, reload_settings=load))


async def serve(
    settings: Settings,
    *,
    reload_settings: Callable[[], Settings] | None = None,
    ami_shell: AmiShellFactory = AmiShell,
) -> int:
    """Run the daemon with signal handling: SIGTERM/SIGINT stop, SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    reload = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, shutdown.set)
    loop.add_signal_handler(signal.SIGINT, shutdown.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    try:
        daemon = Daemon(settings, reload_settings=reload_settings, ami_shell=ami_shell)
        return await daemon.run(shutdown=shutdown, reload=reload)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


__all__ = ["Daemon", "configure_parser", "main", "serve", "shell_settings", "tracker_settings"]
