"""Throughput of AMI framing: pbxlink's AmiFramer vs panoramisk 1.4's own parser.

Input: the real lab session tests/unit/ami/data/inbound_answered_cyrillic.ami repeated, fed in
4 KiB reads (what a socket typically returns). Prints frames per second for

* panoramisk: ``AMIProtocol.data_received`` (decode each read, split, ``Message.from_line``,
  dispatch to one no-op handler) — the bare parser the daemon would otherwise run;
* pbxlink framing only: ``AmiFramer.feed``;
* pbxlink framing + ``Frame.event`` (what routing by event name costs);
* pbxlink framing + ``Frame.event`` + ``Frame.headers`` (every header parsed);
* pbxlink framing + ``Frame.event`` + six ``Frame.value(key)`` byte-search lookups.

    .venv/bin/python bench/bench_ami_framing.py [--repeat N] [--chunk BYTES]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from panoramisk.ami_protocol import AMIProtocol

from pbxlink.ami.framing import AmiFramer

TRANSCRIPT = Path(__file__).resolve().parent.parent / "tests/unit/ami/data/inbound_answered_cyrillic.ami"


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _CountingFactory:
    """Stands in for panoramisk's Manager: counts dispatched events."""

    def __init__(self) -> None:
        self.events = 0
        self.forgetable_actions = ("ping", "login")
        self.awaiting_actions: list[object] = []

    def dispatch(self, message: object) -> None:
        self.events += 1

    def connection_lost(self, exc: object) -> None:
        pass


def panoramisk_parse(chunks: list[bytes]) -> int:
    protocol = AMIProtocol()
    protocol.connection_made(_NullTransport())
    factory = _CountingFactory()
    protocol.factory = factory
    protocol.encoding = "utf-8"
    for chunk in chunks:
        protocol.data_received(chunk)
    return factory.events


def framing_only(chunks: list[bytes]) -> int:
    framer = AmiFramer()
    return sum(len(framer.feed(chunk)) for chunk in chunks)


def framing_event(chunks: list[bytes]) -> int:
    framer = AmiFramer()
    n = 0
    for chunk in chunks:
        for frame in framer.feed(chunk):
            if frame.event is not None:
                n += 1
    return n


def framing_headers(chunks: list[bytes]) -> int:
    framer = AmiFramer()
    n = 0
    for chunk in chunks:
        for frame in framer.feed(chunk):
            if frame.event is not None and frame.headers:
                n += 1
    return n


FIELDS = ("Channel", "Uniqueid", "Linkedid", "Timestamp", "CallerIDNum", "ChannelState")


def framing_values(chunks: list[bytes]) -> int:
    framer = AmiFramer()
    n = 0
    for chunk in chunks:
        for frame in framer.feed(chunk):
            if frame.event is not None:
                for key in FIELDS:
                    frame.value(key)
                n += 1
    return n


def best_of(runs: int, fn: Callable[[list[bytes]], int], chunks: list[bytes]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        count = fn(chunks)
        best = min(best, time.perf_counter() - started)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="copies of the transcript body")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per read")
    parser.add_argument("--runs", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    raw = TRANSCRIPT.read_bytes()
    banner, _, body = raw.partition(b"\r\n")
    data = banner + b"\r\n" + body * args.repeat
    chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]
    frames = AmiFramer().feed(data)
    print(
        f"input: {len(data) / 1e6:.1f} MB, {len(frames)} frames "
        f"({sum(f.event is not None for f in frames)} events), {len(chunks)} reads of "
        f"{args.chunk} B, best of {args.runs}"
    )
    for label, fn in (
        ("panoramisk 1.4 data_received", panoramisk_parse),
        ("pbxlink AmiFramer.feed", framing_only),
        ("pbxlink feed + .event", framing_event),
        ("pbxlink feed + .event + .headers", framing_headers),
        ("pbxlink feed + .event + 6x .value()", framing_values),
    ):
        seconds, count = best_of(args.runs, fn, chunks)
        print(f"{label:36s} {count / seconds:12,.0f} frames/s  ({count} in {seconds:.3f} s)")


if __name__ == "__main__":
    main()
