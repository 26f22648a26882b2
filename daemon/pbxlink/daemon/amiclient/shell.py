"""The AMI client: panoramisk 1.4 behind a hardening layer.

``async with AmiShell(settings) as shell:`` connects, logs in and takes a first snapshot; the
frames then come out of one queue, in the order Asterisk sent them::

    async with AmiShell(settings) as shell:
        async for item in shell.frames():
            ...  # a Frame, or a Resynced / ConnectionLost marker

The pieces: :mod:`~pbxlink.daemon.amiclient.protocol` (panoramisk's ``AMIProtocol`` fed by the byte
framer; replies to actions), :mod:`~pbxlink.daemon.amiclient.errors`, and this module: settings,
the markers, and the shell — one supervisor task that connects (with a timeout), logs in
(a refusal is raised, not retried), snapshots, pings (a silent peer is aborted) and reconnects
with capped, jittered backoff. panoramisk's ``Manager`` (fixed 2 s reconnect loop,
fire-and-forget pinger, silent login failure, unordered handler tasks) is not used; its
``Action`` is. docs/ami.md lists each panoramisk defect and how it is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Final, Self

import structlog
from panoramisk.actions import Action

from pbxlink.ami.framing import DEFAULT_MAX_FRAME_BYTES, Frame
from pbxlink.daemon.amiclient.errors import (
    AmiActionError,
    AmiActionTimeout,
    AmiConnectError,
    AmiConnectionLost,
    AmiError,
    AmiLoginError,
    AmiNotConnected,
    AmiProtocolError,
)
from pbxlink.daemon.amiclient.protocol import ActionReply, FramingProtocol, LinkCounters
from pbxlink.toolkit.reconnect import Backoff, Reconnect

__all__ = [
    "ActionReply",
    "AmiActionError",
    "AmiActionTimeout",
    "AmiConnectError",
    "AmiConnectionLost",
    "AmiError",
    "AmiItem",
    "AmiLoginError",
    "AmiNotConnected",
    "AmiProtocolError",
    "AmiSettings",
    "AmiShell",
    "ConnectionLost",
    "Resynced",
    "ShellStats",
]

log = structlog.get_logger("pbxlink.ami")

_LOGOFF_TIMEOUT: Final = 1.0
# What a (re)connect retries on: the peer unreachable or silent, the link dropped during login.
AMI_TRANSIENT: Final[tuple[type[Exception], ...]] = (
    OSError,
    TimeoutError,
    AmiConnectionLost,
    AmiActionTimeout,
)


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AmiSettings:
    """How to reach and watch one Asterisk manager interface (seconds, bytes)."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "pbxlink"
    secret: str = field(default="", repr=False)
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    action_timeout: float = 10.0
    connect_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    events: str = "on"
    queue_high_water: int = 100_000

    def __post_init__(self) -> None:
        problems = [
            name
            for name in (
                "ping_interval",
                "ping_timeout",
                "action_timeout",
                "connect_timeout",
                "backoff_initial",
                "backoff_max",
            )
            if not getattr(self, name) > 0
        ]
        if problems:
            raise ValueError(f"must be > 0: {', '.join(problems)}")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        if self.max_frame_bytes < 1024 or self.queue_high_water < 2:
            raise ValueError("max_frame_bytes must be >= 1024 and queue_high_water >= 2")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        for name in ("host", "username", "secret", "events"):
            if any(c in getattr(self, name) for c in "\r\n"):
                raise ValueError(f"{name} must not contain line breaks")


# -- what the shell hands out --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resynced:
    """Queued after every (re)login, once the snapshot of the calls already up is taken.

    Every frame queued after this marker happened after the snapshot; frames queued between
    the previous :class:`ConnectionLost` (or the start) and this marker may or may not be
    reflected in it. ``channels`` are the ``CoreShowChannel`` events, ``bridges`` the
    ``BridgeListItem`` events; ``taken_at`` is the wall clock (epoch seconds) when the
    snapshot was complete, to turn their ``Duration`` into start times.
    """

    session: int
    banner: str
    asterisk_version: str
    channels: tuple[Frame, ...]
    bridges: tuple[Frame, ...]
    taken_at: float


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """Queued when a session ends; events may be missing until the next :class:`Resynced`."""

    session: int
    reason: str
    at: float


AmiItem = Frame | Resynced | ConnectionLost


class _End(Enum):
    END = "end"


@dataclass(frozen=True, slots=True)
class ShellStats:
    """Counters of one shell since it was created."""

    sessions: int
    frames: int
    events_queued: int
    queued_now: int
    oversized_frames: int
    missing_banner: int
    handler_errors: int
    tee_errors: int
    ping_timeouts: int
    connect_failures: int
    reading_paused: bool


class _ItemStream:
    """The async iterator :meth:`AmiShell.frames` returns."""

    __slots__ = ("_shell",)

    def __init__(self, shell: AmiShell) -> None:
        self._shell = shell

    def __aiter__(self) -> _ItemStream:
        return self

    async def __anext__(self) -> AmiItem:
        return await self._shell._next_item()  # noqa: SLF001 - the shell's own iterator, same module


# -- the shell -----------------------------------------------------------------------------


class AmiShell:
    """One AMI connection, kept alive; frames out of one ordered queue.

    ``tee`` gets every chunk of bytes exactly as read from the socket (the recorder writes it
    to a file). ``reconnect=False`` ends the shell's stream after the first lost connection
    instead of reconnecting; ``retry_first_connect=False`` raises :class:`AmiConnectError`
    when the first connection fails instead of retrying with backoff.
    """

    def __init__(
        self,
        settings: AmiSettings,
        *,
        tee: Callable[[bytes], object] | None = None,
        reconnect: bool = True,
        retry_first_connect: bool = True,
    ) -> None:
        self.settings = settings
        self.tee = tee
        self.counters = LinkCounters()
        self._reconnect = reconnect
        self._retry_first = retry_first_connect
        self._queue: asyncio.Queue[AmiItem | _End] = asyncio.Queue()
        self._tasks: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._protocol: FramingProtocol | None = None
        self._paused: FramingProtocol | None = None
        self._closing = False
        self._consuming = False
        self._action_seq = 0
        self.banner: str | None = None
        self.asterisk_version: str | None = None

    # -- lifecycle

    async def __aenter__(self) -> Self:
        if self._tasks is not None:
            raise RuntimeError("AmiShell is not reentrant")
        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._tasks = tasks
        try:
            protocol = await self._establish(retry=self._retry_first)
        except BaseException:
            await tasks.__aexit__(None, None, None)  # no task started yet
            raise
        self._supervisor = tasks.create_task(self._supervise(protocol), name="ami-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closing = True
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            if exc_type is None:
                with contextlib.suppress(AmiError):
                    await self._call(protocol, "Logoff", {}, within=_LOGOFF_TIMEOUT, check=False)
            protocol.transport.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
        tasks = self._tasks
        assert tasks is not None
        # Hand the TaskGroup only a cancellation (it may be its own, after the supervisor
        # failed); any other exception of the body must come out unchanged, not in a group.
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        try:
            if cancelled:
                await tasks.__aexit__(exc_type, exc, tb)
            else:
                await tasks.__aexit__(None, None, None)
            return None
        except BaseExceptionGroup as group:
            errors = group.exceptions
            if len(errors) == 1 and isinstance(errors[0], AmiError):
                raise errors[0] from None
            raise
        finally:
            self._queue.put_nowait(_End.END)

    # -- consuming

    def frames(self) -> AsyncIterator[AmiItem]:
        """Every event frame and marker, in arrival order, until the shell closes.

        One consumer at a time: a second ``__anext__`` while one is waiting raises
        ``RuntimeError`` (two readers would split the stream). Iterators may be taken again
        one after the other; they all read the same queue.
        """
        return _ItemStream(self)

    async def _next_item(self) -> AmiItem:
        if self._consuming:
            raise RuntimeError("AmiShell.frames() has exactly one consumer at a time")
        self._consuming = True
        queue = self._queue
        try:
            item = await queue.get()
        finally:
            self._consuming = False
        if item is _End.END:
            queue.put_nowait(item)  # later calls end at once, too
            raise StopAsyncIteration
        paused = self._paused
        if paused is not None and queue.qsize() <= self.settings.queue_high_water // 2:
            self._paused = None
            paused.start_reading()
            log.info("ami_reading_resumed", queued=queue.qsize())
        return item

    def enqueue(self, item: AmiItem, protocol: FramingProtocol | None = None) -> None:
        """Queue a frame or a marker (called by the protocol; markers by the supervisor)."""
        queue = self._queue
        queue.put_nowait(item)
        if isinstance(item, Frame):
            self.counters.events_queued += 1
        if protocol is not None and self._paused is None and queue.qsize() >= self.settings.queue_high_water:
            protocol.stop_reading()
            self._paused = protocol
            log.warning("ami_reading_paused", queued=queue.qsize())

    # -- actions

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.logged_in and not protocol.closed

    async def action(
        self,
        name: str,
        headers: Mapping[str, str] | None = None,
        *,
        within: float | None = None,
        check: bool = True,
    ) -> ActionReply:
        """Send an action and wait ``within`` seconds (default ``action_timeout``) for its
        complete reply (response plus list events).

        Raises :class:`AmiNotConnected`, :class:`AmiActionTimeout`,
        :class:`AmiConnectionLost`, and with ``check`` :class:`AmiActionError`.
        """
        protocol = self._protocol
        if protocol is None or not protocol.logged_in or protocol.closed:
            raise AmiNotConnected(f"no AMI session for action {name}")
        return await self._call(
            protocol,
            name,
            headers or {},
            within=within or self.settings.action_timeout,
            check=check,
        )

    @property
    def pending_actions(self) -> int:
        """Actions sent on the current connection that still wait for their reply."""
        protocol = self._protocol
        if protocol is None:
            return 0
        return len({id(action) for action in protocol.responses.values()})

    def abort_connection(self) -> None:
        """Drop the current TCP connection at once (the supervisor reconnects)."""
        protocol = self._protocol
        if protocol is not None:
            protocol.abort("aborted by pbxlink")

    def stats(self) -> ShellStats:
        c = self.counters
        return ShellStats(
            sessions=c.sessions,
            frames=c.frames,
            events_queued=c.events_queued,
            queued_now=self._queue.qsize(),
            oversized_frames=c.oversized_frames,
            missing_banner=c.missing_banner,
            handler_errors=c.handler_errors,
            tee_errors=c.tee_errors,
            ping_timeouts=c.ping_timeouts,
            connect_failures=c.connect_failures,
            reading_paused=self._paused is not None,
        )

    async def _call(
        self,
        protocol: FramingProtocol,
        name: str,
        headers: Mapping[str, str],
        *,
        within: float,
        check: bool = True,
        action_id: str | None = None,
    ) -> ActionReply:
        if protocol.closed:
            raise AmiNotConnected(f"AMI connection closed before action {name}")
        for key, value in headers.items():
            if any(c in key or c in value for c in "\r\n") or ":" in key:
                raise ValueError(f"AMI header {key!r} of action {name} is not a single line")
        self._action_seq += 1
        action = Action(
            {
                "Action": name,
                "ActionID": action_id or f"pbxlink/{self._action_seq}/{name}",
                **headers,
            }
        )
        future = protocol.send_action(action)
        try:
            async with asyncio.timeout(within):
                await future
        except TimeoutError:
            protocol.forget(action)
            raise AmiActionTimeout(name, within) from None
        except asyncio.CancelledError:
            protocol.forget(action)
            raise
        reply = ActionReply(name, tuple(action.pbx_frames))
        if check and not reply.ok:
            raise AmiActionError(name, reply)
        return reply

    # -- connecting, watching, reconnecting

    async def _supervise(self, protocol: FramingProtocol) -> None:
        while True:
            await self._watch(protocol)
            self._protocol = None
            if self._paused is protocol:
                self._paused = None
            session = self.counters.sessions
            self.enqueue(ConnectionLost(session, protocol.lost_reason, time.time()))
            if self._closing:
                return
            log.warning("ami_shell_connection_lost", session=session, reason=protocol.lost_reason)
            if not self._reconnect:
                self._queue.put_nowait(_End.END)
                return
            protocol = await self._establish(retry=True)

    async def _watch(self, protocol: FramingProtocol) -> None:
        """Ping every ping_interval; a Ping without reply in ping_timeout aborts the link."""
        settings = self.settings
        while not protocol.lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.ping_interval):
                    await protocol.lost.wait()
            if protocol.lost.is_set() or self._paused is protocol:
                continue  # a paused reader is our consumer being slow, not the peer
            try:
                await self._call(protocol, "Ping", {}, within=settings.ping_timeout, check=False)
            except AmiActionTimeout:
                self.counters.ping_timeouts += 1
                log.warning("ami_peer_silent", ping_timeout=settings.ping_timeout)
                protocol.abort(f"no reply to Ping within {settings.ping_timeout:g} s")
                await protocol.lost.wait()
            except (AmiConnectionLost, AmiNotConnected):
                await protocol.lost.wait()

    async def _establish(self, *, retry: bool) -> FramingProtocol:
        settings = self.settings
        reconnect = Reconnect(
            Backoff(settings.backoff_initial, settings.backoff_max), transient=AMI_TRANSIENT
        )
        while True:
            try:
                return await self._open_session()
            except AMI_TRANSIENT as exc:
                self.counters.connect_failures += 1
                reason = str(exc) or type(exc).__name__
                if not retry:
                    raise AmiConnectError(settings.host, settings.port, reason) from exc
                delay = reconnect.failed()
                log.warning(
                    "ami_connect_failed",
                    host=settings.host,
                    port=settings.port,
                    error=reason,
                    attempt=reconnect.failures,
                    retry_in=round(delay, 3),
                )
                await reconnect.wait(delay)

    async def _open_session(self) -> FramingProtocol:
        settings = self.settings
        loop = asyncio.get_running_loop()
        protocol = FramingProtocol(
            max_frame_bytes=settings.max_frame_bytes,
            deliver=self.enqueue,
            counters=self.counters,
            tee=self.tee,
        )
        async with asyncio.timeout(settings.connect_timeout):
            await loop.create_connection(lambda: protocol, settings.host, settings.port)
        try:
            return await self._login_and_resync(protocol)
        except BaseException as exc:
            protocol.abort(f"login or resync failed: {exc!r}")
            if protocol.logged_in:  # events of this session may be queued: close it for them
                self.enqueue(ConnectionLost(self.counters.sessions, protocol.lost_reason, time.time()))
            raise

    async def _login_and_resync(self, protocol: FramingProtocol) -> FramingProtocol:
        settings = self.settings
        session = self.counters.sessions + 1
        try:
            login = await self._call(
                protocol,
                "Login",
                {"Username": settings.username, "Secret": settings.secret, "Events": settings.events},
                within=settings.action_timeout,
                check=False,
                action_id=f"pbxlink/login/{session}",
            )
        except AmiConnectionLost:
            if protocol.not_ami is not None:
                raise AmiProtocolError(settings.host, settings.port, protocol.not_ami) from None
            raise
        if not login.ok:
            reason = login.message or login.response.response or "refused"
            log.error(
                "ami_login_failed",
                user=settings.username,
                host=settings.host,
                port=settings.port,
                reason=reason,
            )
            raise AmiLoginError(settings.username, settings.host, settings.port, reason)
        banner = protocol.framer.banner
        if banner is None:
            raise AmiProtocolError(settings.host, settings.port, b"")
        protocol.logged_in = True
        self.counters.sessions = session
        self._protocol = protocol
        self.banner = banner
        core = await self._call(
            protocol,
            "CoreSettings",
            {},
            within=settings.action_timeout,
            action_id=f"pbxlink/resync/{session}/CoreSettings",
        )
        self.asterisk_version = core.response.get("AsteriskVersion") or ""
        channels = await self._call(
            protocol,
            "CoreShowChannels",
            {},
            within=settings.action_timeout,
            action_id=f"pbxlink/resync/{session}/CoreShowChannels",
        )
        bridges = await self._call(
            protocol,
            "BridgeList",
            {},
            within=settings.action_timeout,
            action_id=f"pbxlink/resync/{session}/BridgeList",
        )
        marker = Resynced(
            session=session,
            banner=banner,
            asterisk_version=self.asterisk_version,
            channels=channels.items,
            bridges=bridges.items,
            taken_at=time.time(),
        )
        self.enqueue(marker)
        log.info(
            "ami_logged_in",
            session=session,
            host=settings.host,
            port=settings.port,
            user=settings.username,
            asterisk=self.asterisk_version,
            banner=banner,
            channels=len(marker.channels),
            bridges=len(marker.bridges),
        )
        return protocol
