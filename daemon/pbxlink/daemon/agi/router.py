"""Routing at run time, in one `async with`: directory, presence, decisions and the AGI server.

    async with Router(settings) as router:     # AGI listening at once, directory loading
        ami frames   → router.on_ami_frame(frame)   (decoded by the AMI codec's presence events)
        AMI (re)connect: frames answering DeviceStateList → router.on_ami_snapshot(frames)
        MQTT client  → await router.consume_directory(client)   (or router.feed.run(...))
        outcome      → router.routing_for([linkedid, *uniqueids])  → RoutingDecision or None

The directory loads in the background: AGI requests that arrive before it is loaded wait for
it up to the deadline, then fall through (reason ``deadline``) instead of answering a wrong
"unknown caller".
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from pbxlink.ami.decode import FrameLike
from pbxlink.daemon.agi.directory_feed import DirectoryFeed
from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.daemon.agi.server import FastAgiServer
from pbxlink.daemon.agi.service import RoutingDecisions, RoutingService
from pbxlink.routing.policy import routing_policy
from pbxlink.routing.presence import PresenceDecoder, PresenceFrameProblem, PresenceTracker
from pbxlink.wire.model import RoutingDecision

if TYPE_CHECKING:
    from pbxlink.daemon.config import Settings

__all__ = ["DIRECTORY_FILE", "Router", "freeze_long_lived"]

log = structlog.get_logger()
DIRECTORY_FILE = "directory.sqlite3"


def freeze_long_lived() -> None:
    """Take every object alive now (above all the loaded directory) out of the cyclic GC's scans.

    A full collection traverses every tracked container, and the directory's dict of a million
    numbers costs about 15 ms of stopped event loop per full collection; frozen, it is skipped.
    Collected first, so no garbage that exists now is kept for good. The directory changes
    later (the MQTT feed) are plain dict writes of acyclic entries, freed by reference counting.
    """
    gc.collect()
    gc.freeze()


class Router:
    """Owns the directory store, the presence tracker, the decisions and the AGI server."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory_path: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.presence = PresenceTracker()
        self.presence_decoder = PresenceDecoder()
        self.decisions = RoutingDecisions()
        self.store = DirectoryStore(directory_path or settings.state.directory / DIRECTORY_FILE)
        self.feed = DirectoryFeed(
            self.store,
            topic_prefix=f"{settings.mqtt.topic_prefix.rstrip('/')}/directory/",
            batch_size=settings.routing.directory_batch,
        )
        zone = ZoneInfo(settings.node.timezone)  # rule `hours` are the PBX's local time
        self.service = RoutingService(
            self.store,
            self.presence,
            routing_policy(settings.routing, settings.node.default_region),
            clock=clock or (lambda: datetime.now(zone)),
        )
        agi = settings.agi
        self.server = FastAgiServer(
            self.service.resolve,
            host=agi.host,
            port=agi.port,
            path=agi.path,
            deadline_ms=agi.deadline_ms,
            io_timeout_ms=agi.io_timeout_ms,
            max_sessions=agi.max_sessions,
            on_decision=self.decisions.record,
        )
        self.presence_problems = 0
        self._load: asyncio.Task[int] | None = None
        self._tasks: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        await self.store.open()
        # The load runs beside the caller, owned by the router's TaskGroup (entered here, left
        # in _shutdown): a failing load fails the task that opened the router.
        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._tasks = tasks
        try:
            self._load = tasks.create_task(self._load_directory(), name="directory-load")
            if self.settings.agi.enabled:
                await self.server.start()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        await self.server.close()
        if self._load is not None and not self._load.done():
            self._load.cancel()
        try:
            if self._tasks is not None:
                tasks, self._tasks = self._tasks, None
                await tasks.__aexit__(None, None, None)
        finally:
            await self.store.close()

    async def _load_directory(self) -> int:
        loop = asyncio.get_running_loop()
        started = loop.time()
        count = await self.store.load()
        loaded_in = loop.time() - started
        freeze_long_lived()
        log.info(
            "directory_loaded",
            numbers=count,
            seconds=round(loaded_in, 3),
            distinct_entries=self.store.index.distinct_entries(),
            gc_frozen=gc.get_freeze_count(),
        )
        return count

    async def wait_ready(self) -> None:
        """The directory is in memory (the AGI server listens from the start)."""
        await self.store.wait_loaded()

    # --- AMI → presence ----------------------------------------------------------------
    def on_ami_frame(self, frame: FrameLike) -> None:
        update = self.presence_decoder.update(frame)
        if isinstance(update, PresenceFrameProblem):
            self.presence_problems += 1
            log.warning("presence_frame_unreadable", ami_event=update.event, reason=update.reason)
        elif update is not None:
            self.presence.apply(update)

    def on_ami_snapshot(self, frames: Iterable[FrameLike]) -> None:
        updates, problems = self.presence_decoder.snapshot(frames)
        for problem in problems:
            self.presence_problems += 1
            log.warning("presence_frame_unreadable", ami_event=problem.event, reason=problem.reason)
        self.presence.replace(updates)
        log.info("presence_seeded", updates=len(updates))

    # --- MQTT → directory --------------------------------------------------------------
    async def consume_directory(self, client: aiomqtt.Client) -> None:
        await self.feed.consume(client)

    # --- decisions → outcome -----------------------------------------------------------
    def routing_for(self, keys: Iterable[str]) -> RoutingDecision | None:
        """The decision made for a call, by its linkedids and channel uniqueids."""
        return self.decisions.for_call(keys)
