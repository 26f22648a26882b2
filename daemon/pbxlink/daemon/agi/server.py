"""Our own asyncio FastAGI server (panoramisk's fast_agi freezes the loop on early closes).

Per connection:

1. read the environment block under the request deadline (``deadline_ms`` from accept);
   a peer that closes early, sends garbage, too much, or too slowly is dropped, counted, and
   never blocks anything (every read is awaited, with a limit and a timeout);
2. ask the resolver for a decision within what is left of the deadline; past it the decision
   is "no route" (reason ``deadline``), an exception is "no route" (reason ``error``);
3. send ``SET VARIABLE`` for PBXLINK_ROUTE, PBXLINK_ROUTE_REASON, PBXLINK_ROUTE_OWNER, each
   awaiting Asterisk's ``200`` (bounded by ``io_timeout_ms``), then close. Asterisk sees the
   close, ends AGI() and the dialplan goes on.

More than ``max_sessions`` concurrent connections: the extra ones are closed at once, which
Asterisk treats as "no answer" (the dialplan falls through). Nothing here can hang a call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import msgspec
import structlog

from pbxlink.daemon.agi.protocol import (
    AgiProtocolError,
    parse_agi_environment,
    parse_agi_reply,
    set_variable_command,
)
from pbxlink.routing.model import RouteReason, RouteRequest, RoutingDecision, fall_through

__all__ = ["AgiCounters", "DecisionSink", "FastAgiServer", "Resolver"]

log = structlog.get_logger()

Resolver = Callable[[RouteRequest], Awaitable[RoutingDecision]]
DecisionSink = Callable[[RouteRequest, RoutingDecision], None]

ENV_LIMIT = 16 * 1024  # bytes of environment block accepted (Asterisk sends ~1 KiB)


@dataclass(slots=True)
class AgiCounters:
    """What the server saw; exported as metrics by the daemon."""

    connections: int = 0
    answered: int = 0
    routed: int = 0
    deadline: int = 0
    errors: int = 0
    early_close: int = 0
    bad_request: int = 0
    oversize: int = 0
    slow_request: int = 0
    unknown_script: int = 0
    over_limit: int = 0
    answer_failed: int = 0
    active: int = 0


class FastAgiServer:
    """``async with FastAgiServer(resolver, port=4573) as server: …``."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        path: str = "route",
        deadline_ms: float = 300.0,
        io_timeout_ms: float = 2000.0,
        max_sessions: int = 256,
        backlog: int = 1024,
        on_decision: DecisionSink | None = None,
    ) -> None:
        self._resolver = resolver
        self.host = host
        self.port = port
        self.path = path.strip("/")
        self.deadline = deadline_ms / 1000.0
        self.io_timeout = io_timeout_ms / 1000.0
        self.max_sessions = max_sessions
        self.backlog = backlog
        self._on_decision = on_decision
        self.counters = AgiCounters()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=ENV_LIMIT, reuse_address=True, backlog=self.backlog
        )  # a dropped SYN costs a caller 1 s (asyncio's default is 100)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "agi_listening", host=self.host, port=self.port, path=self.path, deadline_ms=self.deadline * 1000
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        if self.counters.active >= self.max_sessions:
            self.counters.over_limit += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        self.counters.active += 1
        try:
            await self._session(reader, writer)
        finally:
            self.counters.active -= 1
            if task is not None:
                self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.io_timeout):
                    await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline_at = started + self.deadline
        try:
            async with asyncio.timeout_at(deadline_at):
                block = await reader.readuntil(b"\n\n")
        except asyncio.IncompleteReadError:
            self.counters.early_close += 1
            return
        except asyncio.LimitOverrunError:
            self.counters.oversize += 1
            log.warning("agi_request_too_large", limit=ENV_LIMIT, peer=_peer(writer))
            return
        except TimeoutError:
            self.counters.slow_request += 1
            log.warning("agi_request_too_slow", peer=_peer(writer))
            return
        except OSError:
            self.counters.early_close += 1
            return
        try:
            env = parse_agi_environment(block)
        except AgiProtocolError as exc:
            self.counters.bad_request += 1
            log.warning("agi_bad_request", error=str(exc), peer=_peer(writer))
            return
        if env.network_script != self.path:
            self.counters.unknown_script += 1
            log.warning("agi_unknown_script", script=env.network_script, expected=self.path)
            return
        request = env.route_request()
        decision = await self._decide(request, deadline_at)
        decision = msgspec.structs.replace(decision, decided_in_ms=round((loop.time() - started) * 1000.0, 3))
        if self._on_decision is not None:
            try:
                self._on_decision(request, decision)
            except Exception:  # a broken sink must not cost the call its answer
                log.exception("agi_decision_sink_failed")
        fields = msgspec.structs.asdict(decision)
        log.info("route_decided", uniqueid=request.uniqueid, linkedid=request.linkedid, **fields)
        try:
            async with asyncio.timeout(self.io_timeout):
                await self._answer(reader, writer, decision)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, AgiProtocolError) as exc:
            self.counters.answer_failed += 1
            log.warning("agi_answer_failed", error=repr(exc), uniqueid=request.uniqueid)
            return
        self.counters.answered += 1
        if decision.target:
            self.counters.routed += 1

    async def _decide(self, request: RouteRequest, deadline_at: float) -> RoutingDecision:
        try:
            async with asyncio.timeout_at(deadline_at):
                return await self._resolver(request)
        except TimeoutError:
            self.counters.deadline += 1
            return fall_through(request, RouteReason.DEADLINE)
        except Exception:
            self.counters.errors += 1
            log.exception("route_resolver_failed", uniqueid=request.uniqueid)
            return fall_through(request, RouteReason.ERROR)

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decision: RoutingDecision
    ) -> None:
        for name, value in decision.channel_variables().items():
            writer.write(set_variable_command(name, value))
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise asyncio.IncompleteReadError(b"", None)
                reply = parse_agi_reply(line)
                if reply.hangup:  # the caller hung up: nothing left to tell
                    return
                if reply.code != 200:
                    log.warning("agi_command_failed", variable=name, code=reply.code)
                break


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
