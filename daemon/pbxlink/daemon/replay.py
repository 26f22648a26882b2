"""``pbxlink replay FILE``: the outcomes of a recorded AMI session, one JSON object per line.

Needs no Asterisk, no broker and no config file. The file is a raw AMI session as ``pbxlink
record`` writes it (the banner, then the frames; ``.gz`` is fine). Outcomes go to stdout in the
order the calls ended; diagnostics (malformed frames, calls still up at the end) go to stderr.

At the end of the file, calls whose channels are all gone are finalized even if their settle time
has not passed (nothing more can arrive); calls with live channels are *not* finalized — they
never ended in this recording — and are listed on stderr instead.

:func:`replay_outcomes` is the reusable core (``pbxlink explain`` uses it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pbxlink.ami.decode import AmiDecoder, MalformedEvent
from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.model import CallOutcome
from pbxlink.calls.outcome import to_json
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker, CallTrackerSettings

_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"

Diagnostic = Callable[[str], None]


def read_chunks(path: Path, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """The bytes of a recording, gunzipped when it is gzip (by content, not by name)."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def replay_outcomes(
    chunks: Iterable[bytes],
    settings: CallTrackerSettings | None = None,
    *,
    events: bool = False,
    diagnostic: Diagnostic | None = None,
) -> Iterator[dict[str, Any]]:
    """Frame, decode and track a recorded AMI byte stream; yield each outcome's JSON object.

    With ``events=True`` the live events are yielded too, in the order they happened.
    ``diagnostic`` receives one line per problem (malformed frame, call left open at the end).
    """
    framer = AmiFramer()
    decoder = AmiDecoder(TRACKED_EVENTS)
    tracker = CallTracker(settings)
    report = diagnostic or (lambda _line: None)
    for chunk in chunks:
        for frame in framer.feed(chunk):
            try:
                event = decoder.decode(frame)
            except MalformedEvent as exc:
                report(f"skipped: {exc}")
                continue
            if event is None:
                continue
            for output in tracker.handle(event):
                if events or isinstance(output, CallOutcome):
                    yield to_json(output)
        for problem in framer.take_problems():
            report(f"framing: {problem.kind.value} ({problem.size} bytes): {problem.head!r}")
    for output in tracker.flush_ended():
        if events or isinstance(output, CallOutcome):
            yield to_json(output)
    if framer.pending_bytes:
        report(f"end of input inside a frame: {framer.pending_bytes} bytes ignored")
    for call_id, channels in tracker.open_calls():
        report(f"still up at the end of the recording, no outcome: {call_id} {' '.join(channels)}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="recorded AMI session (raw bytes, .gz ok)")
    parser.add_argument("--events", action="store_true", help="print the live events too")
    parser.add_argument("--node", default="pbx1", help="node name in call ids (default pbx1)")
    parser.add_argument(
        "--default-region",
        default="UA",
        metavar="XX",
        help="region for national numbers without a country code (default UA)",
    )
    parser.add_argument(
        "--agents",
        default=PartyRules().agent_endpoints,
        metavar="REGEX",
        help="PJSIP endpoints that are agents' phones (default %(default)s)",
    )
    parser.add_argument(
        "--trunk",
        action="append",
        metavar="ENDPOINT",
        help="an endpoint that leads outside (repeatable; default: trunk)",
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds to wait after a call's last hangup"
    )


def main(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"pbxlink replay: no such file: {path}", file=sys.stderr)
        return 2
    try:
        parties = PartyRules(agent_endpoints=args.agents, trunk_endpoints=frozenset(args.trunk or ("trunk",)))
    except re.error as exc:
        print(f"pbxlink replay: --agents is not a regular expression: {exc}", file=sys.stderr)
        return 2
    settings = CallTrackerSettings(
        node=args.node,
        parties=parties,
        settle_seconds=args.settle,
        default_region=args.default_region.upper(),
    )

    def to_stderr(line: str) -> None:
        print(f"pbxlink replay: {line}", file=sys.stderr)

    out = sys.stdout
    for item in replay_outcomes(read_chunks(path), settings, events=args.events, diagnostic=to_stderr):
        out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()
    return 0
