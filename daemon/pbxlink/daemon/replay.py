"""``pbxlink replay FILE``: the outcomes of a recorded AMI session, one JSON object per line.

Needs no Asterisk, no broker and no config file. It runs the daemon's own core
(:class:`pbxlink.daemon.pipeline.CallCore`) over what the live AMI shell would have queued. The
file is a raw AMI session as ``pbxlink record`` writes it (the banner, then the frames; ``.gz`` is
fine). Outcomes go to stdout in the
order the calls ended; diagnostics (malformed frames, calls still up at the end) go to stderr.

At the end of the file, calls whose channels are all gone are finalized even if their settle time
has not passed (nothing more can arrive); calls with live channels are *not* finalized — they
never ended in this recording — and are listed on stderr instead.

:func:`replay_outcomes` is the reusable core (``pbxlink explain`` uses it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pbxlink.ami.decode import MalformedEvent
from pbxlink.ami.framing import Frame
from pbxlink.calls.model import CallOutcome, TrackerOutput
from pbxlink.calls.outcome import to_json
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import CallTracker, CallTrackerSettings
from pbxlink.daemon.amiclient.record import TranscriptItems, iter_transcript
from pbxlink.daemon.amiclient.shell import Resynced
from pbxlink.daemon.pipeline import CallCore

Diagnostic = Callable[[str], None]

read_chunks = iter_transcript
"""The bytes of a recording (gzip detected by content): the one transcript reader,
:func:`pbxlink.daemon.amiclient.record.iter_transcript`."""


def replay_records(
    chunks: Iterable[bytes],
    settings: CallTrackerSettings | None = None,
    *,
    diagnostic: Diagnostic | None = None,
) -> Iterator[TrackerOutput]:
    """Run a recorded AMI byte stream through the daemon's own core (:class:`CallCore`): the
    items the live shell queued (:class:`TranscriptItems`: frames, and the resync markers
    rebuilt from the snapshot replies) go where the daemon sends them. Yields outcomes and live
    events in the order they happened. ``diagnostic`` receives one line per problem."""
    items = TranscriptItems()
    core = CallCore(CallTracker(settings))
    report = diagnostic or (lambda _line: None)

    def malformed(exc: MalformedEvent) -> None:
        report(f"skipped: {exc}")

    for chunk in chunks:
        for item in items.feed(chunk):
            if isinstance(item, Frame):
                try:
                    event = core.decode(item)
                except MalformedEvent as exc:
                    malformed(exc)
                    continue
                if event is not None:
                    yield from core.handle(event)
            elif isinstance(item, Resynced):
                yield from core.resync(item.channels, item.taken_at, malformed=malformed)
        for problem in items.framer.take_problems():
            report(f"framing: {problem.kind.value} ({problem.size} bytes): {problem.head!r}")
    yield from core.flush_ended()
    if items.framer.pending_bytes:
        report(f"end of input inside a frame: {items.framer.pending_bytes} bytes ignored")
    for call_id, channels in core.tracker.open_calls():
        report(f"still up at the end of the recording, no outcome: {call_id} {' '.join(channels)}")


def replay_outcomes(
    chunks: Iterable[bytes],
    settings: CallTrackerSettings | None = None,
    *,
    events: bool = False,
    diagnostic: Diagnostic | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`replay_records` as contract JSON objects: the outcomes, and with ``events=True``
    the live events too, in the order they happened."""
    for output in replay_records(chunks, settings, diagnostic=diagnostic):
        if events or isinstance(output, CallOutcome):
            yield to_json(output)


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
