"""``pbxlink record``: save a live AMI session's raw bytes, and read such files back.

The transcript format is simply the bytes the socket delivered, unchanged: the banner line
(``Asterisk Call Manager/<version>\\r\\n``), then every frame Asterisk sent — the Login
response, the snapshot replies (``CoreSettings``, ``CoreShowChannels``, ``BridgeList``, with
ActionIDs ``pbxlink/resync/<session>/<action>``), the events, Ping responses — each ended by a
blank line. Nothing pbxlink *sent* is in it, so the secret never is. A file whose name ends in
``.gz`` is written gzip-compressed; :func:`iter_transcript` reads both (by magic bytes).
Feed the chunks to :class:`~pbxlink.ami.framing.AmiFramer` to get the frames back, or
to :class:`TranscriptItems` to get what the live shell queued: the event frames and the
:class:`~pbxlink.daemon.amiclient.shell.Resynced` markers rebuilt from the snapshot replies.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from pbxlink.ami.framing import DEFAULT_MAX_FRAME_BYTES, AmiFramer, Frame
from pbxlink.daemon.amiclient.shell import (
    AmiError,
    AmiItem,
    AmiSettings,
    AmiShell,
    ConnectionLost,
    Resynced,
)
from pbxlink.foundation.errors import EX_CONFIG

__all__ = [
    "RecordSummary",
    "TranscriptItems",
    "configure_parser",
    "iter_transcript",
    "main",
    "record",
]

log = structlog.get_logger("pbxlink.ami.record")

_GZIP_MAGIC = b"\x1f\x8b"
_FLUSH_EVERY = 1.0  # seconds
EX_UNAVAILABLE = 69  # sysexits.h: the service (AMI) is unavailable


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What one recording holds."""

    path: Path
    bytes_written: int
    frames: int
    seconds: float
    ended_by: str  # "stop", "duration" or "connection lost: <reason>"


class _CountingWriter:
    """The shell's tee: writes each chunk as read and counts bytes."""

    __slots__ = ("bytes", "file")

    def __init__(self, file: gzip.GzipFile | BinaryIO) -> None:
        self.file = file
        self.bytes = 0

    def __call__(self, data: bytes) -> None:
        self.file.write(data)
        self.bytes += len(data)


def _open_for_writing(path: Path) -> gzip.GzipFile | BinaryIO:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "wb", compresslevel=6)
    return path.open("wb")


async def record(
    settings: AmiSettings,
    out_path: Path,
    duration: float | None,
    stop_event: asyncio.Event,
) -> RecordSummary:
    """Record one AMI session into ``out_path`` until ``stop_event``, ``duration`` or a lost link.

    The session is not re-established after a disconnect: one file is one session. Raises
    the shell's errors (login refused, peer unreachable) before anything is recorded.
    """
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    try:
        bytes_written, frames, ended_by = await _record_into(settings, out_path, deadline, stop_event)
    except AmiError:
        # Nothing usable was recorded; unlinking an empty file does not block the loop.
        out_path.unlink(missing_ok=True)  # noqa: ASYNC240
        raise
    summary = RecordSummary(out_path, bytes_written, frames, time.monotonic() - started, ended_by)
    log.info(
        "ami_recorded",
        path=str(out_path),
        bytes=summary.bytes_written,
        frames=summary.frames,
        seconds=round(summary.seconds, 3),
        ended_by=ended_by,
    )
    return summary


async def _record_into(
    settings: AmiSettings, out_path: Path, deadline: float | None, stop_event: asyncio.Event
) -> tuple[int, int, str]:
    with _open_for_writing(out_path) as file:
        tee = _CountingWriter(file)
        async with AmiShell(settings, tee=tee, reconnect=False, retry_first_connect=False) as shell:
            log.info("ami_recording", path=str(out_path))
            lost: list[ConnectionLost] = []

            async def consume() -> None:
                async for item in shell.frames():
                    if isinstance(item, ConnectionLost):
                        lost.append(item)
                        return

            async with asyncio.TaskGroup() as tasks:
                consumer = tasks.create_task(consume(), name="record-consumer")
                stopper = tasks.create_task(stop_event.wait(), name="record-stop")
                ended_by = "stop"
                while True:
                    wait = _FLUSH_EVERY
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    done, _ = await asyncio.wait({consumer, stopper}, timeout=wait)
                    file.flush()
                    if stopper in done:
                        break
                    if consumer in done:
                        ended_by = f"connection lost: {lost[0].reason if lost else '?'}"
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        ended_by = "duration"
                        break
                consumer.cancel()
                stopper.cancel()
        frames = shell.stats().frames  # after the Logoff reply, which is recorded too
        file.flush()
    return tee.bytes, frames, ended_by


def iter_transcript(path: Path | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of a recorded session, in chunks, gunzipped if the file is gzip."""
    path = Path(path)
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    with opener(path, "rb") as file:
        while chunk := file.read(chunk_size):
            yield chunk


class TranscriptItems:
    """Rebuild, from a recorded session, the items the live :class:`AmiShell` queued.

    Replies to pbxlink's own actions (ActionID ``pbxlink/...``) are not events: the Login and
    Ping replies are dropped, and the snapshot replies become a :class:`Resynced` marker at the
    point the live shell queued it (after the ``BridgeList`` reply completed). Every other frame
    is passed on in order. The marker's ``taken_at`` is the ``Timestamp`` of the last event
    before it (the wall clock of the live shell is not in the recording), or 0.0.
    """

    __slots__ = ("_bridges", "_channels", "_last_event", "_session", "_version", "framer")

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.framer = AmiFramer(max_frame_bytes=max_frame_bytes)
        self._session = 0
        self._version = ""
        self._channels: list[Frame] = []
        self._bridges: list[Frame] = []
        self._last_event: Frame | None = None

    def feed(self, data: bytes) -> list[AmiItem]:
        items: list[AmiItem] = []
        for frame in self.framer.feed(data):
            action_id = frame.action_id
            if action_id is None or not action_id.startswith("pbxlink/"):
                items.append(frame)
                if frame.event is not None:
                    self._last_event = frame
                continue
            marker = self._own_reply(action_id, frame)
            if marker is not None:
                items.append(marker)
        return items

    def _own_reply(self, action_id: str, frame: Frame) -> Resynced | None:
        parts = action_id.split("/")
        if len(parts) == 3 and parts[1] == "login" and frame.response == "Success":
            self._session = int(parts[2]) if parts[2].isdigit() else self._session + 1
            self._channels, self._bridges = [], []
            return None
        if len(parts) != 4 or parts[1] != "resync":
            return None
        action, event = parts[3], frame.event
        if action == "CoreSettings" and frame.response is not None:
            self._version = frame.get("AsteriskVersion") or ""
        elif action == "CoreShowChannels" and event == "CoreShowChannel":
            self._channels.append(frame)
        elif action == "BridgeList" and event == "BridgeListItem":
            self._bridges.append(frame)
        elif action == "BridgeList" and event == "BridgeListComplete":
            return Resynced(
                session=self._session,
                banner=self.framer.banner or "",
                asterisk_version=self._version,
                channels=tuple(self._channels),
                bridges=tuple(self._bridges),
                taken_at=self._last_timestamp(),
            )
        return None

    def _last_timestamp(self) -> float:
        last = self._last_event
        stamp = last.value("Timestamp") if last is not None else None
        try:
            return float(stamp) if stamp else 0.0
        except ValueError:
            return 0.0


# -- the command ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="file to write (.gz: gzip)")
    parser.add_argument("--host", default="127.0.0.1", help="AMI host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5038, help="AMI port (default 5038)")
    parser.add_argument("--username", default="pbxlink", help="AMI user (default pbxlink)")
    parser.add_argument("--secret-file", type=Path, help="file holding the AMI secret (first line is used)")
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until SIGINT/TERM)"
    )
    parser.add_argument("--events", default="on", help="Login Events: value (default on)")


def main(args: argparse.Namespace) -> int:
    secret = ""
    if args.secret_file is not None:
        try:
            secret = args.secret_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            print(f"pbxlink record: cannot read --secret-file: {exc}", file=sys.stderr)
            return EX_CONFIG
    try:
        settings = AmiSettings(
            host=args.host,
            port=args.port,
            username=args.username,
            secret=secret,
            events=args.events,
        )
    except ValueError as exc:
        print(f"pbxlink record: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.duration is not None and args.duration <= 0:
        print("pbxlink record: --duration must be > 0", file=sys.stderr)
        return EX_CONFIG
    return asyncio.run(_run(settings, args.out, args.duration))


async def _run(settings: AmiSettings, out: Path, duration: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        summary = await record(settings, out, duration, stop)
    except AmiError as exc:
        print(f"pbxlink record: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print(
        f"recorded {summary.bytes_written} bytes, {summary.frames} frames in "
        f"{summary.seconds:.1f} s to {summary.path} ({summary.ended_by})",
        file=sys.stderr,
    )
    return 0 if summary.ended_by in ("stop", "duration") else 1
