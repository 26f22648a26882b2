"""panoramisk's AMIProtocol, fed by :class:`AmiFramer`, routing frames without ever raising.

One instance per TCP connection. Each read is handed to the tee (raw bytes), then to the
framer; each complete frame is routed, inside its own ``try``: a reply to a pending action
goes to that action (panoramisk's ``Action`` decides when a multi-event reply is complete),
anything else to the shell's queue. Nothing a peer sends, and no bug in routing, can end the
connection from here (panoramisk's own ``data_received`` drops split UTF-8 and lets a handler
exception kill the link). Actions are written by :meth:`FramingProtocol.send_action`, which,
unlike ``AMIProtocol.send``, never logs the action (a Login carries the secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from pbxlink.ami.framing import AmiFramer, Frame, FramingProblem, ProblemKind
from pbxlink.daemon.amiclient.errors import AmiConnectionLost

__all__ = ["ActionReply", "FramingProtocol", "LinkCounters"]

log = structlog.get_logger("pbxlink.ami")

_OK_RESPONSES: Final = frozenset({"Success", "Follows", "Goodbye"})


@dataclass(frozen=True, slots=True)
class ActionReply:
    """All the frames Asterisk sent for one action: the response, then any list events."""

    action: str
    frames: tuple[Frame, ...]

    @property
    def response(self) -> Frame:
        return self.frames[0]

    @property
    def ok(self) -> bool:
        return self.frames[0].response in _OK_RESPONSES

    @property
    def message(self) -> str | None:
        return self.frames[0].get("Message")

    @property
    def items(self) -> tuple[Frame, ...]:
        """The list events, without the response and the closing ``...Complete`` event."""
        items = self.frames[1:]
        if items and (items[-1].event or "").endswith("Complete"):
            items = items[:-1]
        return items


@dataclass(slots=True)
class LinkCounters:
    """Running totals of a shell, across its connections (the protocol adds to them)."""

    sessions: int = 0
    frames: int = 0
    events_queued: int = 0
    oversized_frames: int = 0
    missing_banner: int = 0
    handler_errors: int = 0
    tee_errors: int = 0
    ping_timeouts: int = 0
    connect_failures: int = 0


class FramingProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's AMIProtocol with byte framing and a router that cannot kill the link.

    ``deliver`` gets every frame that is not a reply to a pending action (the shell queues
    it); ``tee`` every chunk of bytes as read; ``counters`` are the shell's running totals.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        deliver: Callable[[Frame, FramingProtocol], None],
        counters: LinkCounters,
        tee: Callable[[bytes], object] | None = None,
    ) -> None:
        super().__init__()
        self._deliver = deliver
        self._counters = counters
        self._tee = tee
        self._max_frame_bytes = max_frame_bytes
        self.transport: Any = None
        self.closed = True  # until connection_made
        self.responses: dict[str, Any] = {}
        self.framer = AmiFramer(max_frame_bytes=max_frame_bytes)
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.not_ami: bytes | None = None
        self.logged_in = False

    # asyncio callbacks

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"
        self.log = log
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        counters = self._counters
        if self._tee is not None:
            try:
                self._tee(data)
            except Exception:
                counters.tee_errors += 1
                log.exception("ami_tee_failed")
        frames = self.framer.feed(data)
        problems = self.framer.take_problems()
        if problems:
            self._framing_problems(problems)
        counters.frames += len(frames)
        for frame in frames:
            try:
                self._route(frame)
            except Exception:
                counters.handler_errors += 1
                log.exception("ami_frame_handling_failed", frame=_printable(frame.raw[:200]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost_reason:
            self.lost_reason = str(exc) if exc else "closed by peer"
        pending = {id(a): a for a in self.responses.values()}.values()
        self.responses.clear()
        for action in pending:
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost(self.lost_reason))
        self.lost.set()

    def abort(self, reason: str) -> None:
        """Drop the connection now (no FIN handshake); ``reason`` goes to ConnectionLost."""
        if not self.closed and self.transport is not None:
            self.lost_reason = reason
            self.transport.abort()

    def stop_reading(self) -> None:
        self.transport.pause_reading()

    def start_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    # sending (replaces AMIProtocol.send, which logs the action - a Login secret - on errors)

    def send_action(self, action: Any) -> asyncio.Future[Any]:
        """Write a panoramisk ``Action``; its reply frames collect in ``action.pbx_frames``."""
        action.as_list = None  # let Action detect multi-event replies itself
        action.pbx_frames = []
        self.responses[action.id] = action
        self.transport.write(str(action).encode("utf-8"))
        future: asyncio.Future[Any] = action.future
        return future

    def forget(self, action: Any) -> None:
        self.responses.pop(action.id, None)
        if action.action_id:
            self.responses.pop(action.action_id, None)

    # routing frames

    def _route(self, frame: Frame) -> None:
        responses = self.responses
        if responses:
            action_id = frame.action_id
            if action_id is not None:
                action = responses.get(action_id)
                if action is not None:
                    action.pbx_frames.append(frame)
                    if action.add_message(_to_message(frame)):
                        self.forget(action)
                    return
        self._deliver(frame, self)

    def _framing_problems(self, problems: list[FramingProblem]) -> None:
        counters = self._counters
        for problem in problems:
            if problem.kind is ProblemKind.OVERSIZED_FRAME:
                counters.oversized_frames += 1
                log.warning(
                    "ami_frame_dropped",
                    reason="oversized",
                    size=problem.size,
                    limit=self._max_frame_bytes,
                    head=_printable(problem.head),
                )
            else:
                counters.missing_banner += 1
                log.error("ami_not_ami", head=_printable(problem.head))
                if not self.logged_in:
                    self.not_ami = problem.head
                    self.abort("peer is not AMI")


def _printable(data: bytes) -> str:
    """Peer bytes for a log line: text where it is UTF-8, escapes where it is not."""
    return data.decode("utf-8", "backslashreplace")


def _to_message(frame: Frame) -> Message:
    headers: dict[str, Any] = {}
    for key, value in frame.headers:
        seen = headers.get(key)
        if seen is None:
            headers[key] = value
        elif isinstance(seen, list):
            seen.append(value)
        else:
            headers[key] = [seen, value]
    return Message(headers)
