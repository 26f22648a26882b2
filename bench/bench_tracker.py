"""Benchmark: framing + decode + call tracking vs panoramisk's bare AMI parser.

Builds a transcript of >= 200k AMI events by repeating a recorded lab session (default: the
100 overlapping calls of tests/data/ami/load_100_overlapping.ami.gz) with every epoch-based
number shifted per repetition, so each repetition has fresh Uniqueids/Linkedids and later
Timestamps. Then, over the same bytes, in 64 KiB reads:

* pbxlink: AmiFramer -> AmiDecoder -> CallTracker (outcomes produced and counted);
* panoramisk 1.4: ``AMIProtocol.data_received`` with a dummy transport and a factory whose
  ``dispatch`` does nothing (parsing only, no tracking).

Prints events/s for both, the ratio, the outcomes produced, and memory: peak RSS of the
process, and the tracker's traced memory after the first and after the last repetition (flat
when finished calls leave no state behind).

    .venv/bin/python bench/bench_tracker.py [--repeat N] [--transcript PATH]
"""

from __future__ import annotations

import argparse
import gc
import re
import resource
import time
import tracemalloc
from pathlib import Path
from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from pbxlink.ami.decode import AmiDecoder
from pbxlink.ami.framing import AmiFramer
from pbxlink.calls.model import CallOutcome
from pbxlink.calls.parties import PartyRules
from pbxlink.calls.tracker import TRACKED_EVENTS, CallTracker, CallTrackerSettings
from pbxlink.daemon.replay import read_chunks

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRANSCRIPT = ROOT / "tests" / "data" / "ami" / "load_100_overlapping.ami.gz"
SETTINGS = CallTrackerSettings(parties=PartyRules(r"^1\d\d$", frozenset({"trunk"})))
CHUNK = 1 << 16
_EPOCH = re.compile(rb"(?<![0-9])(1[0-9]{9})(?=\.[0-9])")


def build_repetitions(source: Path, repeat: int) -> list[bytes]:
    """The source session's banner, then ``repeat`` shifted copies of its frames."""
    data = b"".join(read_chunks(source))
    banner_end = data.index(b"\n") + 1
    banner, body = data[:banner_end], data[banner_end:]
    epochs = [int(m.group(1)) for m in _EPOCH.finditer(body)]
    span = max(epochs) - min(epochs) + 60
    parts = [banner]
    for rep in range(repeat):
        shift = rep * span

        def shifted(m: re.Match[bytes], s: int = shift) -> bytes:
            return str(int(m.group(1)) + s).encode()

        parts.append(_EPOCH.sub(shifted, body) if shift else body)
    return parts


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def run_pbxlink(chunks: list[bytes]) -> tuple[float, int, int]:
    framer = AmiFramer()
    decoder = AmiDecoder(TRACKED_EVENTS)
    tracker = CallTracker(SETTINGS)
    outcomes = 0
    events = 0
    started = time.perf_counter()
    for chunk in chunks:
        for frame in framer.feed(chunk):
            if frame.event is not None:
                events += 1
            event = decoder.decode(frame)
            if event is not None:
                for output in tracker.handle(event):
                    if isinstance(output, CallOutcome):
                        outcomes += 1
    for output in tracker.flush_ended():
        if isinstance(output, CallOutcome):
            outcomes += 1
    return time.perf_counter() - started, events, outcomes


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Factory:
    save_stream = None

    def __init__(self) -> None:
        self.events = 0

    def dispatch(self, message: Any) -> None:
        self.events += 1


def run_panoramisk(chunks: list[bytes]) -> tuple[float, int]:
    protocol = AMIProtocol()
    protocol.connection_made(_Transport())
    factory = _Factory()
    protocol.factory = factory
    started = time.perf_counter()
    for chunk in chunks:
        protocol.data_received(chunk)
    return time.perf_counter() - started, factory.events


def tracker_memory(parts: list[bytes]) -> list[tuple[int, float, float, int]]:
    """After each repetition: traced memory held overall and by the tracker's own module
    (KiB), and the channels the tracker still holds."""
    framer = AmiFramer()
    decoder = AmiDecoder(TRACKED_EVENTS)
    tracker = CallTracker(SETTINGS)
    readings: list[tuple[int, float, float, int]] = []
    only_tracker = [tracemalloc.Filter(True, "*/calls/tracker.py")]
    gc.collect()
    tracemalloc.start()
    for rep, part in enumerate(parts):
        for chunk in chunks_of(part):
            for frame in framer.feed(chunk):
                event = decoder.decode(frame)
                if event is not None:
                    tracker.handle(event)
        tracker.tick(tracker.clock + 3600)  # settle whatever ended
        gc.collect()
        if rep:
            snapshot = tracemalloc.take_snapshot()
            total = sum(stat.size for stat in snapshot.statistics("filename"))
            own = sum(stat.size for stat in snapshot.filter_traces(only_tracker).statistics("filename"))
            readings.append((rep, total / 1024, own / 1024, tracker.tracked_channels))
    tracemalloc.stop()
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transcript", type=Path, default=DEFAULT_TRANSCRIPT)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="best of N timed runs")
    args = parser.parse_args()

    parts = build_repetitions(args.transcript, args.repeat)
    data = b"".join(parts)
    events = data.count(b"\nEvent: ")
    chunks = chunks_of(data)
    print(
        f"transcript: {args.transcript.name} x {args.repeat} = {len(data) / 1e6:.1f} MB, "
        f"{events:,} events, {len(chunks):,} reads of {CHUNK // 1024} KiB"
    )

    ours = min((run_pbxlink(chunks) for _ in range(args.rounds)), key=lambda r: r[0])
    theirs = min((run_panoramisk(chunks) for _ in range(args.rounds)), key=lambda r: r[0])
    ours_rate = ours[1] / ours[0]
    theirs_rate = theirs[1] / theirs[0]
    print(
        f"pbxlink  framing+decode+tracker: {ours[0]:6.2f} s  {ours_rate:10,.0f} events/s  "
        f"({ours[1]:,} events, {ours[2]:,} outcomes)"
    )
    print(
        f"panoramisk bare parser:          {theirs[0]:6.2f} s  {theirs_rate:10,.0f} events/s  "
        f"({theirs[1]:,} events dispatched)"
    )
    print(f"ratio pbxlink / panoramisk: {ours_rate / theirs_rate:.2f}")
    print(
        f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        "(includes the transcript held in memory)"
    )
    readings = tracker_memory(parts[: 1 + min(args.repeat, 10)])
    print("after each repetition of 100 calls: traced KiB (all / tracker module) and channels held:")
    print("  " + ", ".join(f"#{rep}: {total:,.0f}/{own:,.0f}/{held}" for rep, total, own, held in readings))


if __name__ == "__main__":
    main()
