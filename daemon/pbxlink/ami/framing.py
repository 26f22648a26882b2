"""AMI byte framing, sans I/O: bytes in, :class:`Frame` objects out.

An AMI session is a banner line (``Asterisk Call Manager/<version>\\r\\n``, no blank line after
it) followed by frames: header lines ``Key: Value`` ended by a blank line. :class:`AmiFramer`
splits the byte stream on blank lines (``\\r\\n\\r\\n``; a bare ``\\n\\n`` or a mix of both is
tolerated), so it does not matter how the stream was cut into reads: a UTF-8 character split
across two reads survives because text is decoded per complete frame, never per read.

The framer never raises on what the peer sends. A frame larger than ``max_frame_bytes`` is
dropped and the framer resynchronises at the next blank line; a stream that does not start with
the banner is framed anyway. Both are reported as :class:`FramingProblem` values
(:meth:`AmiFramer.take_problems`) and counted in :class:`FramingCounters`.

:class:`Frame` keeps the raw bytes. The ``Event``/``Response`` name is read straight from the
bytes; header lines are decoded and split only when first asked for.

This module is pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "BANNER_PREFIX",
    "BARE_LINE_KEY",
    "DEFAULT_MAX_FRAME_BYTES",
    "AmiFramer",
    "Frame",
    "FramingCounters",
    "FramingProblem",
    "ProblemKind",
]

BANNER_PREFIX: Final = b"Asterisk Call Manager/"
DEFAULT_MAX_FRAME_BYTES: Final = 1 << 20
# Key given to a line without a colon inside a frame (old-style ``Command`` output, garbage).
BARE_LINE_KEY: Final = "Output"
# How many leading bytes of a bad frame a problem record keeps, for the log line.
PROBLEM_HEAD_BYTES: Final = 96

# A blank line: a line feed, an optional carriage return, a line feed. The frame ends at the
# first line feed (its own line's terminator); a carriage return before it is trimmed.
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
# The longest separator is 3 bytes; an incomplete one can start at most 2 bytes before the end.
_SEPARATOR_TAIL: Final = 2
_CR: Final = 13
_LF: Final = 10

_EVENT_PREFIX: Final = b"Event: "
_RESPONSE_PREFIX: Final = b"Response: "
# Names are interned through these caches so equal names are one object; bounded so that a
# peer sending endless distinct names cannot grow them without limit.
_NAME_CACHE_LIMIT: Final = 4096
_event_names: dict[bytes, str] = {}
_response_names: dict[bytes, str] = {}


class ProblemKind(Enum):
    """What went wrong in the byte stream."""

    OVERSIZED_FRAME = "oversized_frame"
    MISSING_BANNER = "missing_banner"


@dataclass(frozen=True, slots=True)
class FramingProblem:
    """One misbehaviour of the peer, reported as a value.

    ``head`` is the first bytes of the offending frame or line (for a log line);
    ``size`` is its length in bytes as far as it was seen (for an oversized frame
    that is more than the limit, not necessarily the full length).
    """

    kind: ProblemKind
    head: bytes
    size: int


@dataclass(slots=True)
class FramingCounters:
    """Running totals of one framer (mutable; read them, do not write them)."""

    frames: int = 0
    bytes_in: int = 0
    oversized_frames: int = 0
    discarded_bytes: int = 0
    missing_banner: int = 0


class Frame:
    """One AMI frame (an event or a response) as received.

    ``raw`` is the frame's bytes without the blank line that ended it. Everything else is
    derived from it lazily and cached.
    """

    __slots__ = ("_event", "_exact", "_headers", "_index", "_lossy", "_response", "_text", "raw")

    raw: bytes

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._event: str | bool | None = False  # False: not looked at yet
        self._response: str | bool | None = False
        self._text: str | None = None
        self._lossy = False
        self._headers: tuple[tuple[str, str], ...] | None = None
        self._index: dict[str, str] | None = None
        self._exact: dict[str, str] | None = None

    # -- cheap fields, straight from the bytes -----------------------------------------------

    @property
    def event(self) -> str | None:
        """The ``Event`` header's value, or ``None`` for a response (or a frame without one)."""
        name = self._event
        if name is False:
            raw = self.raw
            if raw.startswith(_EVENT_PREFIX):
                name = _first_line_value(raw, len(_EVENT_PREFIX), _event_names)
            elif raw.startswith(_RESPONSE_PREFIX):
                name = None
            else:
                name = self.get("Event")
            self._event = name
        return name  # type: ignore[return-value]

    @property
    def response(self) -> str | None:
        """The ``Response`` header's value (``Success``, ``Error``, ...), or ``None``."""
        name = self._response
        if name is False:
            raw = self.raw
            if raw.startswith(_RESPONSE_PREFIX):
                name = _first_line_value(raw, len(_RESPONSE_PREFIX), _response_names)
            elif raw.startswith(_EVENT_PREFIX):
                name = None
            else:
                name = self.get("Response")
            self._response = name
        return name  # type: ignore[return-value]

    @property
    def action_id(self) -> str | None:
        """The ``ActionID`` header (set on responses and on the events of an action's list).

        Looked for in Asterisk's spelling first, so frames without one cost a byte search.
        """
        if b"ActionID:" not in self.raw:
            return None
        return self.get("ActionID")

    # -- decoded text and headers, on first use -------------------------------------------

    @property
    def text(self) -> str:
        """The frame decoded as UTF-8; invalid bytes become U+FFFD (see :attr:`lossy`)."""
        text = self._text
        if text is None:
            try:
                text = self.raw.decode("utf-8")
            except UnicodeDecodeError:
                text = self.raw.decode("utf-8", "replace")
                self._lossy = True
            self._text = text
        return text

    @property
    def lossy(self) -> bool:
        """True when the frame held bytes that are not UTF-8 (replaced by U+FFFD in text)."""
        _ = self.text
        return self._lossy

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """All header lines as ``(key, value)`` pairs in order; repeated keys are kept.

        A line without a colon becomes ``(BARE_LINE_KEY, line)``. One space after the colon
        is removed from the value; nothing else is stripped.
        """
        headers = self._headers
        if headers is None:
            headers = self._parse()
        return headers

    @property
    def header_map(self) -> dict[str, str]:
        """Header values by key exactly as sent (first occurrence wins); build it once, cheap.

        Keys keep Asterisk's spelling (``Uniqueid``, ``CallerIDNum``), so a lookup with that
        spelling needs no case folding. Use :meth:`get` for case-insensitive lookups.
        """
        exact = self._exact
        if exact is None:
            exact = self._exact = dict(reversed(self.headers))
        return exact

    def value(self, key: str) -> str | None:
        """The first value of header ``key`` spelled exactly as Asterisk does, else ``None``.

        Found by a byte search of the raw frame, without parsing the other headers: the
        cheapest way to read a few fields of a large event. Same result as :meth:`get` when
        the key's spelling matches and its line is ``Key: Value``.
        """
        raw = self.raw
        marks = _value_marks.get(key)
        if marks is None:
            marks = _value_marks[key] = _marks_for(key)
        line_mark, first_mark = marks
        found = raw.find(line_mark)
        if found >= 0:
            start = found + len(line_mark)
        elif raw.startswith(first_mark):
            start = len(first_mark)
        else:
            return None
        if found >= 0 and raw.startswith(first_mark):
            start = len(first_mark)  # the first line comes first
        end = raw.find(b"\n", start)
        if end < 0:
            end = len(raw)
        elif raw[end - 1] == _CR:
            end -= 1
        return raw[start:end].decode("utf-8", "replace")

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of the first header named ``key`` (case-insensitive), else ``default``."""
        index = self._index
        if index is None:
            index = self._index = {k.lower(): v for k, v in reversed(self.headers)}
        return index.get(key.lower(), default)

    def get_all(self, key: str) -> tuple[str, ...]:
        """Every value of the headers named ``key`` (case-insensitive), in order."""
        wanted = key.lower()
        return tuple(value for name, value in self.headers if name.lower() == wanted)

    def _parse(self) -> tuple[tuple[str, str], ...]:
        text = self.text
        if text.count("\n") == text.count("\r\n"):
            lines = text.split("\r\n")
        else:
            lines = text.replace("\r\n", "\n").split("\n")
        # Fast path: every line is "Key: Value" (what Asterisk writes).
        pairs = [tuple(line.split(": ", 1)) for line in lines]
        if 1 in map(len, pairs):
            pairs = [pair if len(pair) == 2 else _odd_line(pair[0]) for pair in pairs]
        headers: tuple[tuple[str, str], ...] = tuple(pairs)  # type: ignore[arg-type]
        self._headers = headers
        return headers

    # -- value semantics --------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Frame):
            return self.raw == other.raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        kind = f"event={self.event!r}" if self.event is not None else f"response={self.response!r}"
        return f"Frame({kind}, {len(self.raw)} bytes)"


_value_marks: dict[str, tuple[bytes, bytes]] = {}


def _marks_for(key: str) -> tuple[bytes, bytes]:
    first = key.encode() + b": "
    return b"\n" + first, first


def _odd_line(line: str) -> tuple[str, str]:
    """A line that is not ``Key: Value``: ``Key:Value`` or a line without any colon."""
    key, colon, value = line.partition(":")
    if colon:
        return (key, value[1:] if value[:1] == " " else value)
    return (BARE_LINE_KEY, line)


def _first_line_value(raw: bytes, start: int, cache: dict[bytes, str]) -> str:
    end = raw.find(b"\n", start)
    value = raw[start:] if end < 0 else raw[start:end]
    if value[-1:] == b"\r":
        value = value[:-1]
    name = cache.get(value)
    if name is None:
        name = value.decode("utf-8", "replace")
        if len(cache) < _NAME_CACHE_LIMIT:
            cache[value] = name
    return name


class AmiFramer:
    """Cut an AMI byte stream into frames. Feed it whatever the socket returned.

    ``expect_banner``: the stream starts with the ``Asterisk Call Manager/`` line (a live
    session or a recorded transcript). ``max_frame_bytes``: a larger frame is dropped.
    """

    __slots__ = (
        "_banner_pending",
        "_discarding",
        "_max",
        "_problems",
        "_rest",
        "_scan_from",
        "banner",
        "counters",
    )

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, expect_banner: bool = True) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self._max = max_frame_bytes
        self._rest = b""
        self._scan_from = 0
        self._banner_pending = expect_banner
        self._discarding = False
        self._problems: list[FramingProblem] = []
        self.banner: str | None = None
        """The banner line without its line end (e.g. ``Asterisk Call Manager/9.0.0``)."""
        self.counters = FramingCounters()

    @property
    def pending_bytes(self) -> int:
        """Bytes held back waiting for the end of a frame."""
        return len(self._rest)

    def take_problems(self) -> list[FramingProblem]:
        """The problems found since the last call (oldest first), and forget them."""
        problems = self._problems
        if problems:
            self._problems = []
        return problems

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they completed, in order."""
        if not data:
            return []
        self.counters.bytes_in += len(data)
        buf = self._rest + data if self._rest else bytes(data)
        pos = 0
        if self._banner_pending:
            pos = self._take_banner(buf)
            if self._banner_pending:
                self._rest = buf
                return []
        if self._discarding:
            pos = self._skip_discarded(buf, max(pos, self._scan_from))
            if self._discarding:
                self._rest = buf[-_SEPARATOR_TAIL:]
                self._scan_from = 0
                return []
        frames: list[Frame] = []
        append = frames.append
        limit = self._max
        scan_from = max(pos, self._scan_from)
        for match in _BLANK_LINE.finditer(buf, scan_from):
            start = pos
            end = match.start()
            pos = match.end()
            if end > start and buf[end - 1] == _CR:
                end -= 1
            if end - start > limit:
                self._oversized(_head(buf, start, end), end - start)
                self.counters.discarded_bytes += end - start
                continue
            while start < end and buf[start] in (_CR, _LF):
                start += 1
            if start != end:
                append(Frame(buf[start:end]))
        self.counters.frames += len(frames)
        # The size limit counts the frame's bytes up to its last line end. An unfinished frame
        # may end with "\r\n\r" still waiting for its final "\n", so only more than
        # limit + 3 bytes proves it too large whatever comes next.
        if len(buf) - pos > limit + _SEPARATOR_TAIL + 1:
            self._oversized(_head(buf, pos, len(buf)), len(buf) - pos)
            self.counters.discarded_bytes += len(buf) - pos - _SEPARATOR_TAIL
            self._discarding = True
            self._rest = buf[-_SEPARATOR_TAIL:]
            self._scan_from = 0
            return frames
        self._rest = buf[pos:] if pos else buf
        self._scan_from = max(0, len(self._rest) - _SEPARATOR_TAIL)
        return frames

    def _take_banner(self, buf: bytes) -> int:
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) <= self._max:
                return 0  # wait for the rest of the first line
            end = len(buf)
        line = buf[:end]
        self._banner_pending = False
        if end <= self._max and line.startswith(BANNER_PREFIX):
            self.banner = line.rstrip(b"\r").decode("utf-8", "replace")
            return end + 1
        self.counters.missing_banner += 1
        self._problems.append(
            FramingProblem(ProblemKind.MISSING_BANNER, line[:PROBLEM_HEAD_BYTES], len(line))
        )
        return 0

    def _skip_discarded(self, buf: bytes, scan_from: int) -> int:
        match = _BLANK_LINE.search(buf, scan_from)
        if match is None:
            self.counters.discarded_bytes += max(0, len(buf) - scan_from - _SEPARATOR_TAIL)
            return len(buf)
        self.counters.discarded_bytes += match.start() - scan_from
        self._discarding = False
        self._scan_from = 0
        return match.end()

    def _oversized(self, head: bytes, size: int) -> None:
        self.counters.oversized_frames += 1
        self._problems.append(FramingProblem(ProblemKind.OVERSIZED_FRAME, head, size))


def _head(buf: bytes, start: int, end: int) -> bytes:
    """The first bytes of a frame for a problem record, leading line ends skipped."""
    stop = min(end, start + PROBLEM_HEAD_BYTES + 8)
    return buf[start:stop].lstrip(b"\r\n")[:PROBLEM_HEAD_BYTES]
