"""Delivery benchmarks: hangup → PUBACK latency under lab load, and outbox throughput.

    .venv/bin/python bench/bench_delivery.py latency  [--rate 20] [--seconds 60] [--settle 0]
    .venv/bin/python bench/bench_delivery.py final    [--rate 20] [--seconds 30]
    .venv/bin/python bench/bench_delivery.py throughput [--messages 5000]

``latency`` (root; the real lab): starts a lab Asterisk (a free instance), a mosquitto and
``pbxlink run``; SIPp places internal calls 101 → 102 at ``--rate`` calls/s for ``--seconds``;
afterwards it reads the outbox: for every outcome, hangup (the outcome's ``ended_at``, from
Asterisk's event Timestamp) → commit (``created_at``) → PUBACK (``sent_at``). The tracker's
``settle_seconds`` (default 2 s in production: late transfer events) is part of hangup →
commit; ``--settle`` sets it for the run.

``final`` (root; the real lab): the same load twice, side by side in one run: the *default*
config (the outcome goes out when CEL ``LINKEDID_END`` arrives over AMI) and the settle-timer
path (``[cel] final_on_linkedid_end = false``: the outcome waits ``tracker.settle_seconds``,
2 s by default, after the last hangup).

``throughput`` (no lab): N outcome envelopes, 2 kB each, through (1) plain aiomqtt QoS 1
publishing, awaited one by one and pipelined, with no durability; (2) the outbox: committed
with synchronous=FULL then published and marked sent after PUBACK, once with one commit per
outcome and once with the writer's batching.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "lab"))

import aiomqtt  # noqa: E402
from pbxlab import ports  # noqa: E402
from pbxlab.mosquitto import Broker, start_mosquitto, stop_mosquitto  # noqa: E402

from pbxlink.daemon.envelope import Envelope, build_envelope  # noqa: E402
from pbxlink.daemon.metrics import DaemonMetrics  # noqa: E402
from pbxlink.daemon.outbox import Outbox  # noqa: E402
from pbxlink.daemon.pipeline import OutboxWriter  # noqa: E402
from pbxlink.daemon.publisher import OutcomePublisher  # noqa: E402
from pbxlink.foundation.config import MqttSettings  # noqa: E402
from pbxlink.toolkit.metrics import sample  # noqa: E402
from pbxlink.wire.samples import sample_outcome  # noqa: E402


def start_broker(workdir: Path) -> tuple[Broker, int]:
    """The lab's one mosquitto launcher, without persistence (as the figures were measured)."""
    broker = start_mosquitto(name=f"bench-{os.getpid()}", state_dir=workdir / "mosquitto", persistence=False)
    return broker, broker.port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# latency under lab load


@dataclass
class Pass:
    """One daemon run under load: what it published and how fast."""

    label: str
    rate: float
    count: int
    placed_in: float
    sipp_exit: int | None
    cpu: float
    wall: float
    events: int
    hangup_to_commit: list[float] = field(default_factory=list)
    commit_to_puback: list[float] = field(default_factory=list)
    hangup_to_puback: list[float] = field(default_factory=list)


def _run_pass(session: Any, work: Path, mqtt_port: int, config_tail: str, label: str, args: Any) -> Pass:
    """``pbxlink run`` with ``config_tail`` appended to its config; SIPp places internal calls
    101 → 102 at ``args.rate`` for ``args.seconds``; the figures come from the outbox."""
    from pbxlab import Call, Phone  # noqa: PLC0415
    from pbxlab.sipp import PortBlock, Sipp  # noqa: PLC0415

    lab = session.instance
    work.mkdir(parents=True)
    state = work / "state"
    state.mkdir()
    (work / "ami-secret").write_text(lab.ami_secret)
    http_port = ports.free_port()
    (work / "pbxlink.toml").write_text(
        f'[ami]\nport = {lab.ami_port}\nsecret_file = "{work / "ami-secret"}"\n'
        f'[mqtt]\nport = {mqtt_port}\n[state]\ndirectory = "{state}"\n'
        f'[http]\nport = {http_port}\n[agi]\nenabled = false\n[log]\nformat = "json"\n'
        f'level = "warning"\n{config_tail}'
    )
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("pbxlink")), "run", "-c", str(work / "pbxlink.toml")],
        stdout=(work / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    sipp = Sipp(
        lab.sip_port, PortBlock(lab.sipp_local_base, 20, lab.sipp_media_base, 400), work, trace_messages=False
    )
    phone = sipp.phone("102", lab.agent_ports["102"], Phone.answers(ring_ms=200, talk_ms=600_000))
    try:
        for _ in range(100):
            try:
                import urllib.request  # noqa: PLC0415

                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the daemon did not become ready")
        count = int(args.rate * args.seconds)
        cpu0 = _cpu_seconds(daemon.pid)
        t0 = time.monotonic()
        caller = sipp.call(
            Call(
                "102",
                "101",
                "Agent 101",
                hold_ms=args.hold_ms,
                count=count,
                rate=args.rate,
                max_concurrent=count,
            ),
            trace_messages=False,
        )
        code = caller.wait(args.seconds + 120)
        placed_in = time.monotonic() - t0
        db = state / "outbox.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db)
            sent, pending = conn.execute(
                "SELECT sum(status = 'sent'), sum(status = 'pending') FROM outbox WHERE kind = 'call.outcome'"
            ).fetchone()
            conn.close()
            if (sent or 0) >= count and not pending:
                break
            time.sleep(0.5)
        cpu = _cpu_seconds(daemon.pid) - cpu0
        wall = time.monotonic() - t0
        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT payload, created_at, sent_at FROM outbox WHERE kind = 'call.outcome' AND status = 'sent'"
        ).fetchall()
        (events,) = conn.execute("SELECT count(*) FROM outbox WHERE kind = 'call.event'").fetchone()
        conn.close()
    finally:
        phone.stop()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    result = Pass(label, args.rate, count, placed_in, code, cpu, wall, events)
    for payload, created, sent in rows:
        ended = parse_iso(json.loads(payload)["data"]["ended_at"])
        result.hangup_to_commit.append(created - ended)
        result.commit_to_puback.append(sent - created)
        result.hangup_to_puback.append(sent - ended)
    return result


def _print_pass(result: Pass) -> None:
    print(
        f"[{result.label}] calls placed: {result.count} at {result.rate}/s, SIPp done after"
        f" {result.placed_in:.1f} s (exit {result.sipp_exit}); outcomes published:"
        f" {len(result.hangup_to_puback)}; live events: {result.events}; daemon CPU: {result.cpu:.1f} s"
        f" over {result.wall:.1f} s wall ({100 * result.cpu / result.wall:.0f}% of one core)"
    )
    for name, values in (
        ("hangup -> commit", result.hangup_to_commit),
        ("commit -> PUBACK", result.commit_to_puback),
        ("hangup -> PUBACK", result.hangup_to_puback),
    ):
        if values:
            print(
                f"  {name:18} p50 {1000 * statistics.median(values):8.1f} ms   "
                f"p99 {1000 * pct(values, 0.99):8.1f} ms   max {1000 * max(values):8.1f} ms"
            )


def latency(args: argparse.Namespace) -> None:
    from pbxlab.session import LabSession  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    session = LabSession.open(None, workdir=work / "lab")  # claims a free instance offset
    broker, mqtt_port = start_broker(work)
    try:
        result = _run_pass(
            session, work / "run", mqtt_port, f"[tracker]\nsettle_seconds = {args.settle}\n", "latency", args
        )
    finally:
        stop_mosquitto(broker)
        session.close()
    print(f"settle_seconds={args.settle}")
    _print_pass(result)


def final(args: argparse.Namespace) -> None:
    """The default config (the outcome goes out at CEL LINKEDID_END) and the settle-timer path
    (the same config with [cel] final_on_linkedid_end = false: the tracker waits
    tracker.settle_seconds, 2 s by default, after the last hangup), one after the other on one
    lab Asterisk and one broker, under the same load."""
    from pbxlab.session import LabSession  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="bench-final-"))
    session = LabSession.open(None, workdir=work / "lab")
    broker, mqtt_port = start_broker(work)
    try:
        passes = [
            _run_pass(session, work / "default", mqtt_port, "", "default config (LINKEDID_END)", args),
            _run_pass(
                session,
                work / "settle",
                mqtt_port,
                "[cel]\nfinal_on_linkedid_end = false\n",
                "settle timer (final_on_linkedid_end = false)",
                args,
            ),
        ]
    finally:
        stop_mosquitto(broker)
        session.close()
    talk = args.hold_ms / 1000
    print(f"internal calls 101 -> 102 (ring 0.2 s, talk {talk:.1f} s), default settle_seconds 2.0")
    for result in passes:
        _print_pass(result)
    print(f"{'hangup -> PUBACK':44} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for result in passes:
        values = result.hangup_to_puback
        if values:
            print(
                f"{result.label:44} {1000 * statistics.median(values):9.1f} {1000 * pct(values, 0.99):9.1f}"
                f" {1000 * max(values):9.1f}"
            )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# throughput: plain publishing vs the outbox


def envelopes(n: int, tag: str) -> list[Envelope]:
    now = datetime.now(UTC)
    return [
        build_envelope(
            sample_outcome(f"bench:{tag}.{i}", recordings=("x" * 2000,)),
            node="bench",
            now=now,
        )
        for i in range(n)
    ]


async def plain(port: int, batch: list[Envelope], *, pipelined: bool) -> float:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        max_inflight_messages=20,
    ) as client:
        t0 = time.perf_counter()
        if pipelined:
            await asyncio.gather(*(client.publish(e.topic, e.payload, qos=1) for e in batch))
        else:
            for e in batch:
                await client.publish(e.topic, e.payload, qos=1)
        return time.perf_counter() - t0


async def through_outbox(port: int, batch: list[Envelope], work: Path, *, one_commit_each: bool) -> float:
    path = work / f"outbox-{one_commit_each}.sqlite"
    metrics = DaemonMetrics()
    async with await Outbox.open(path) as outbox:
        publisher = OutcomePublisher(MqttSettings(port=port), outbox, node="bench", metrics=metrics)
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=300, on_commit=publisher.wake)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(publisher.run(), name="publisher")
            await publisher.wait_connected()
            t0 = time.perf_counter()
            if one_commit_each:
                for e in batch:
                    await outbox.add([e], now=time.time(), event_ttl=300)
                    publisher.wake()
            else:
                async with asyncio.TaskGroup() as writing:
                    writing.create_task(writer.run(), name="outbox-writer")
                    for e in batch:  # as the tracker would: one submit per outcome, no waiting
                        writer.submit([e])
                        await asyncio.sleep(0)
                    writer.stop()
            published = "pbxlink_published_total"
            while sample(metrics.registry, published, kind="call.outcome") < len(batch):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            publisher.stop()
        return elapsed


async def throughput(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    broker, port = start_broker(work)
    n = args.messages
    try:
        rows = [
            (
                "plain QoS 1, one at a time (no durability)",
                await plain(port, envelopes(n, "a"), pipelined=False),
            ),
            ("plain QoS 1, pipelined (no durability)", await plain(port, envelopes(n, "b"), pipelined=True)),
            (
                "outbox, one commit per outcome + publish",
                await through_outbox(port, envelopes(n, "c"), work, one_commit_each=True),
            ),
            (
                "outbox, writer batching + publish",
                await through_outbox(port, envelopes(n, "d"), work, one_commit_each=False),
            ),
        ]
    finally:
        stop_mosquitto(broker)
    print(
        f"{n} outcomes of {len(envelopes(1, 'x')[0].payload)} bytes, mosquitto on loopback, "
        f"state dir {work} ({_fs_type(work)})"
    )
    for name, elapsed in rows:
        print(f"{name:45} {n / elapsed:9.0f} outcomes/s   ({elapsed:.2f} s)")


def _fs_type(path: Path) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=20.0)
    lat.add_argument("--seconds", type=float, default=60.0)
    lat.add_argument("--hold-ms", type=int, default=2000)
    lat.add_argument("--settle", type=float, default=0.0)
    fin = sub.add_parser("final")
    fin.add_argument("--rate", type=float, default=20.0)
    fin.add_argument("--seconds", type=float, default=30.0)
    fin.add_argument("--hold-ms", type=int, default=2000)
    thr = sub.add_parser("throughput")
    thr.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    if args.what == "latency":
        latency(args)
    elif args.what == "final":
        final(args)
    else:
        asyncio.run(throughput(args))


if __name__ == "__main__":
    main()
