"""Routing benchmark: FastAGI request → answer latency with a 1,000,000-number directory.

    .venv/bin/python bench/bench_routing.py [--numbers 1000000] [--open-requests 5000]
        [--requests 5000] [--concurrency 1 50 500] [--rate 200] [--modes open closed]
        [--servers raw constant pbxlink pbxlink-nofreeze] [--no-pin] [--rebuild]

What it does:
1. builds a directory SQLite file of N numbers through the real path (contract payloads →
   parse_directory_message → DirectoryStore.apply, batches of 1,000) and caches it under
   /tmp/pbxlink-bench (rebuilt with --rebuild);
2. starts, each in its own process: the pbxlink FastAGI server (DirectoryStore.load() of the
   file, PresenceTracker, decide()) as the daemon runs it (gc.freeze() after the load), the
   same without the freeze, and two baselines answering a constant: our server with a
   constant resolver, and a bare asyncio server that writes the three SET VARIABLEs (the
   transport floor);
3. the load generator is this process (never the server's): by default the server process
   is pinned to one CPU and this one to the others, so each has a core; for each concurrency
   level it runs that many client sessions behaving like res_agi (a new TCP connection, the
   env block, a 200 reply to each command); latency = connect → server close. Two load
   models: open loop (Poisson arrivals at --rate/s spread over the sessions: how calls reach a
   PBX) and closed loop (each session asks again at once: saturation throughput; latency
   there is queueing, sessions / throughput by Little's law, whatever the server).

Prints: build and load times, RSS of the loaded directory, p50/p99/p99.9/max per server and
level, "shed": sessions the server closed without an answer (past its 300 ms deadline when
overloaded; Asterisk then takes the normal route), the server-side time (accept → close),
the cyclic-GC pauses seen inside the server and the load generator during each row (to tell
GC from scheduling), and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.daemon.agi.probe import agi_environment
from pbxlink.daemon.agi.router import freeze_long_lived
from pbxlink.daemon.agi.server import FastAgiServer
from pbxlink.daemon.agi.service import RoutingService
from pbxlink.routing.decide import decide
from pbxlink.routing.directory import (
    directory_topic,
    encode_directory_entry,
    parse_directory_message,
)
from pbxlink.routing.model import (
    ClientOwners,
    DirectoryEntry,
    Responsible,
    RouteRequest,
    RoutingDecision,
    RoutingPolicy,
)
from pbxlink.routing.presence import DeviceState, PresenceTracker
from pbxlink.wire.model import DirectoryTime

CACHE = Path("/tmp/pbxlink-bench")
MANAGERS = [Responsible(f"manager{i}", str(100 + i)) for i in range(50)]


def number_of(i: int) -> str:
    return f"+38067{i:07d}"  # +380670000000 … (a valid UA mobile range)


def entry_for(i: int, rng: random.Random) -> DirectoryEntry:
    first = ClientOwners(
        f"c{i}", f"Client {i}", DirectoryTime.of(datetime(2020, 1, 1, tzinfo=UTC)), (rng.choice(MANAGERS),)
    )
    clients: tuple[ClientOwners, ...] = (first,)
    if i % 10 == 0:  # one number in ten is shared by two clients
        clients = (
            first,
            ClientOwners(
                f"d{i}",
                "Other",
                DirectoryTime.of(datetime(2024, 1, 1, tzinfo=UTC)),
                (Responsible("gone", "199", deleted=True), rng.choice(MANAGERS)),
            ),
        )
    return DirectoryEntry(number_of(i), DirectoryTime.of(datetime(2026, 11, 22, tzinfo=UTC)), clients)


async def build(path: Path, numbers: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    async with DirectoryStore(path) as store:
        for base in range(0, numbers, 1000):
            batch = []
            for i in range(base, min(base + 1000, numbers)):
                entry = entry_for(i, rng)
                batch.append(
                    parse_directory_message(directory_topic(entry.number), encode_directory_entry(entry))
                )
            await store.apply(batch)
    return time.perf_counter() - started


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- servers (each in its own process) ------------------------------------------------

# server-side time of each session, accept callback -> close (no client-side scheduling in it)
SERVER_TIMES: list[float] = []
# every cyclic-GC collection in this process: (generation, seconds the event loop stood still)
GC_PAUSES: list[tuple[int, float]] = []
_gc_started = [0.0]


def record_gc_pauses() -> None:
    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
        else:
            GC_PAUSES.append((info["generation"], time.perf_counter() - _gc_started[0]))

    gc.callbacks.append(on_gc)


def take(values: list[Any]) -> list[Any]:
    taken = values[:]
    del values[: len(taken)]
    return taken


class TimedAgiServer(FastAgiServer):
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        await super()._accept(reader, writer)
        SERVER_TIMES.append(time.perf_counter() - started)


def answer_stats_requests(control: Any) -> None:
    """Thread: on "stats", send the session times and GC pauses since the last request."""
    while True:
        if control.recv() != "stats":
            return
        control.send((take(SERVER_TIMES), take(GC_PAUSES), os.getloadavg()[0]))


async def _serve(kind: str, db: Path, report: Any, callers: list[str]) -> None:
    if kind == "raw":

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            started = time.perf_counter()
            try:
                await reader.readuntil(b"\n\n")
                for command in (
                    b'SET VARIABLE PBXLINK_ROUTE "PJSIP/101"\n',
                    b'SET VARIABLE PBXLINK_ROUTE_REASON "owner"\n',
                    b'SET VARIABLE PBXLINK_ROUTE_OWNER "101"\n',
                ):
                    writer.write(command)
                    await writer.drain()
                    await reader.readline()
            finally:
                writer.close()
                SERVER_TIMES.append(time.perf_counter() - started)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        report.put({"port": server.sockets[0].getsockname()[1]})
        await asyncio.Event().wait()
        return
    if kind == "constant":
        constant = RoutingDecision(
            target="PJSIP/101",
            agent="101",
            reason="owner",
            owner="101",
            rule=None,
            caller_e164="+380670000001",
            line="4930100200",
        )

        async def resolve(request: RouteRequest) -> RoutingDecision:
            return constant

        agi = TimedAgiServer(resolve, port=0, max_sessions=2000)
        await agi.start()
        report.put({"port": agi.port})
        await asyncio.Event().wait()
        return
    gc.collect()
    before = rss_mb()
    store = DirectoryStore(db)
    await store.open()
    started = time.perf_counter()
    count = await store.load()
    load_s = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    if kind == "pbxlink":
        freeze_long_lived()  # what the daemon does once the directory is loaded
    presence = PresenceTracker()
    for manager in MANAGERS:  # everyone idle, except a few busy ones
        state = DeviceState.INUSE if manager.extension in {"101", "102"} else DeviceState.NOT_INUSE
        presence.device_state(f"PJSIP/{manager.extension}", state)
    policy = RoutingPolicy(default_region="UA")
    service = RoutingService(store, presence, policy)
    decide_us = []
    now = datetime.now(UTC)
    for caller in callers:  # the pure decision alone: normalize + lookup + presence
        t0 = time.perf_counter()
        decide(RouteRequest(caller=caller, line="4930100200"), store, presence, policy, now)
        decide_us.append((time.perf_counter() - t0) * 1e6)
    agi = TimedAgiServer(service.resolve, port=0, max_sessions=2000)
    await agi.start()
    report.put(
        {
            "port": agi.port,
            "entries": count,
            "load_s": load_s,
            "rss_before_mb": before,
            "rss_after_mb": after,
            "distinct": store.index.distinct_entries(),
            "decide_us": decide_us,
            "frozen": gc.get_freeze_count(),
        }
    )
    await asyncio.Event().wait()


def serve(kind: str, db: Path, report: Any, control: Any, callers: list[str], cpu: int | None) -> None:
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    # shed sessions are counted by the client; the server's per-session warnings stay quiet
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    import threading  # noqa: PLC0415

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    record_gc_pauses()
    threading.Thread(target=answer_stats_requests, args=(control,), daemon=True).start()
    asyncio.run(_serve(kind, db, report, callers))


# --- clients -------------------------------------------------------------------------


async def one_request(port: int, env: bytes) -> float | None:
    """Seconds from connect to the server's close; None when no route variable arrived
    (the server shed the session, e.g. past its deadline under overload: Asterisk falls
    through to the group then)."""
    started = time.perf_counter()
    answered = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(env)
            while True:
                line = await reader.readline()
                if not line:
                    break
                answered += 1
                writer.write(b"200 result=1\n")
        finally:
            writer.close()
    except OSError:
        return None
    return time.perf_counter() - started if answered == 3 else None


async def run_level(
    port: int, concurrency: int, requests: int, envs: list[bytes], rate: float | None
) -> tuple[list[float | None], float]:
    """`concurrency` client sessions share `requests` requests.

    rate None: closed loop, each session sends its next request as soon as the last one is
    answered (saturation: throughput, and latency = queueing by Little's law).
    rate R: open loop, requests arrive as a Poisson process of R/s in total, spread over the
    sessions (what a PBX does: calls arrive on their own, however busy the server is).
    """
    latencies: list[float | None] = []
    counter = iter(range(requests))
    rng = random.Random(concurrency)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def session() -> None:
        for i in counter:
            if rate is not None:
                await asyncio.sleep(rng.expovariate(rate / concurrency))
            latencies.append(await one_request(port, envs[i % len(envs)]))

    await asyncio.gather(*(session() for _ in range(concurrency)))
    return latencies, loop.time() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5_000, help="per closed-loop cell")
    parser.add_argument("--open-requests", type=int, default=2_000, help="per open-loop cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50, 500])
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="open-loop arrival rate, requests/s (the lab's Asterisk tops out near 100 calls/s)",
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["raw", "constant", "pbxlink", "pbxlink-nofreeze"],
        choices=["raw", "constant", "pbxlink", "pbxlink-nofreeze"],
        help="pbxlink = as the daemon runs it (gc.freeze() after the load); "
        "pbxlink-nofreeze = the same without the freeze",
    )
    parser.add_argument("--modes", nargs="+", default=["open", "closed"], choices=["open", "closed"])
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server process to one CPU and the load generator "
        "to the others (pinned by default: each has a core of its own)",
    )
    args = parser.parse_args()

    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"directory-{args.numbers}.sqlite3"
    if args.rebuild or not db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(f"building a directory of {args.numbers:,} numbers in {db} …", flush=True)
        seconds = asyncio.run(build(db, args.numbers))
        print(
            f"  built in {seconds:.1f} s ({args.numbers / seconds:,.0f} numbers/s through "
            f"parse + SQLite), file {db.stat().st_size / 2**20:.0f} MiB",
            flush=True,
        )

    rng = random.Random(11)
    forms = [lambda n: "0" + n[4:], lambda n: n[1:], lambda n: n]  # 067…, 38067…, +38067…
    envs = []
    callers: list[str] = []
    for i in range(5000):
        number = number_of(rng.randrange(args.numbers)) if i % 10 else f"+38099{i:07d}"
        caller = forms[i % 3](number)
        callers.append(caller)
        envs.append(
            agi_environment(
                4573, caller=caller, line="4930100200", uniqueid=f"1700000000.{i}", linkedid=f"1700000000.{i}"
            )
        )

    ctx = mp.get_context("spawn")
    server_cpu: int | None = None
    if args.pin:  # the server on one core, this load generator on the other
        cpus = sorted(os.sched_getaffinity(0))
        server_cpu = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]) or {cpus[0]})
    record_gc_pauses()  # the load generator's own GC pauses, to tell them from the server's
    results: dict[tuple[str, str, int], tuple[list[float | None], float]] = {}
    server_side: dict[tuple[str, str, int], tuple[list[float], list[tuple[int, float]], float]] = {}
    client_gc: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    all_modes = {"open": args.rate, "closed": None}
    modes = {mode: all_modes[mode] for mode in args.modes}
    info: dict[str, Any] = {}
    for kind in args.servers:
        report = ctx.Queue()
        control, server_end = ctx.Pipe()
        process = ctx.Process(
            target=serve, args=(kind, db, report, server_end, callers, server_cpu), daemon=True
        )
        process.start()
        try:
            info[kind] = report.get(timeout=600)
            port = info[kind]["port"]
            asyncio.run(run_level(port, 10, 500, envs, None))  # warm up
            control.send("stats")
            control.recv()
            for mode, rate in modes.items():
                count = args.open_requests if rate is not None else args.requests
                for level in args.concurrency:
                    gc.collect()
                    take(GC_PAUSES)
                    results[(mode, kind, level)] = asyncio.run(run_level(port, level, count, envs, rate))
                    client_gc[(mode, kind, level)] = take(GC_PAUSES)
                    control.send("stats")
                    server_side[(mode, kind, level)] = control.recv()
        finally:
            control.send("stop")
            process.terminate()
            process.join(10)

    for kind in ("pbxlink", "pbxlink-nofreeze"):
        if kind not in info:
            continue
        loaded = info[kind]
        print(
            f"\n{kind}: {loaded['entries']:,} numbers loaded from SQLite in "
            f"{loaded['load_s']:.2f} s; RSS {loaded['rss_before_mb']:.0f} → "
            f"{loaded['rss_after_mb']:.0f} MiB (+{loaded['rss_after_mb'] - loaded['rss_before_mb']:.0f}"
            f" MiB for the directory); {loaded['distinct']:,} distinct routing entries shared; "
            f"{loaded['frozen']:,} objects frozen out of the GC"
        )
        us = loaded["decide_us"]
        print(
            f"  decide() alone (normalize + lookup + presence), {len(us):,} callers: "
            f"p50 {statistics.median(us):.0f} us, p99 {percentile(us, 0.99):.0f} us, "
            f"max {max(us):.0f} us"
        )
    names = {
        "raw": "bare asyncio, constant (floor)",
        "constant": "pbxlink server, constant",
        "pbxlink": "pbxlink + decide, dir, gc frozen",
        "pbxlink-nofreeze": "pbxlink + decide, dir, no freeze",
    }
    titles = {
        "open": f"open loop: Poisson arrivals at {args.rate:.0f} requests/s in total",
        "closed": "closed loop (saturation): each session asks again at once",
    }
    print(
        f"\n{os.cpu_count()} cores; server pinned to CPU {server_cpu}, load generator on the rest"
        if server_cpu is not None
        else f"\n{os.cpu_count()} cores, no pinning"
    )
    print(
        "'srv' = inside the server process, accept -> close; 'gc2' = full collections in the "
        "server during the row, 'gc max' = its longest GC pause (any generation), 'cli gc' = "
        "the load generator's longest GC pause; 'load' = 1-min load average after the row"
    )
    for mode in modes:
        print(
            f"\n{titles[mode]}; latency = AGI connect -> answer -> close, ms; "
            f"90% known callers in 3 written forms, 10% unknown"
        )
        header = (
            f"{'server':<34}{'sess':>5}{'p50':>7}{'p99':>7}{'p99.9':>8}{'max':>8}{'req/s':>6}"
            f"{'shed':>5}{'srv p50':>8}{'srv p99':>8}{'srv 99.9':>9}{'gc2':>4}{'gc max':>7}"
            f"{'cli gc':>7}{'load':>5}"
        )
        print(header)
        print("-" * len(header))
        for level in args.concurrency:
            for kind in args.servers:
                samples, elapsed = results[(mode, kind, level)]
                values = [v * 1000 for v in samples if v is not None]
                shed = len(samples) - len(values)
                times, pauses, load = server_side[(mode, kind, level)]
                srv = [v * 1000 for v in times] or [float("nan")]
                full = sum(1 for generation, _ in pauses if generation == 2)
                gc_max = max((p * 1000 for _, p in pauses), default=0.0)
                cli_gc = max((p * 1000 for _, p in client_gc[(mode, kind, level)]), default=0.0)
                if not values:
                    print(f"{names[kind]:<34}{level:>5}  every session shed ({shed})")
                    continue
                print(
                    f"{names[kind]:<34}{level:>5}{statistics.median(values):>7.2f}"
                    f"{percentile(values, 0.99):>7.2f}{percentile(values, 0.999):>8.2f}"
                    f"{max(values):>8.2f}{len(values) / elapsed:>6.0f}{shed:>5}"
                    f"{statistics.median(srv):>8.2f}{percentile(srv, 0.99):>8.2f}"
                    f"{percentile(srv, 0.999):>9.2f}{full:>4}{gc_max:>7.2f}{cli_gc:>7.2f}{load:>5.2f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
