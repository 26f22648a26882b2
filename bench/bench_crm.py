"""CRM adapter benchmark: planner decisions/s, and outcomes/s applied end to end by one adapter
(real mosquitto → subscription → inbox → rules → SQLite CRM) with 1,000,000 clients: the
per-message path (before issue 13) and the batched path side by side on copies of one CRM,
then a backlog (an hour of peak traffic queued while the adapter was down) drained.

    .venv/bin/python bench/bench_crm.py [--clients 1000000] [--outcomes 5000] [--backlog 72000]

Prints figures; asserts nothing. Needs mosquitto on PATH (started on a free loopback port).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import structlog

from pbxlink.adapters.backends.sqlite_crm import ImportedClient, SqliteCrm
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.store import Store, open_store
from pbxlink.rules.calls import parse_outcome
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem
from pbxlink.rules.planner import plan_call
from pbxlink.rules.samples import EMPLOYEES, at, missed, outcome, outcome_message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from pbxlab.mosquitto import Broker as BrokerHandle
from pbxlab.mosquitto import start_mosquitto, stop_mosquitto

RULES = """
[crm.inquiries]
number_template = "{C:6}"
[crm.inquiries.on_answered]
enabled = true
manager = "anna"
[crm.inquiries.on_missed]
enabled = true
manager = "anna"
even_if_open_inquiry = true
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
[crm.clients.answered]
create = "client_and_deal"
[crm.clients.missed]
create = "client"
[crm.clients]
repeat_calls = "if_no_open_deal"
"""


def phone(n: int) -> str:
    return f"+38098{n:07d}"


def bench_planner(seconds: float = 2.0) -> None:
    settings = settings_from_toml(RULES).crm
    known = CrmFacts(
        clients=(
            ClientFact(
                "1",
                "Иван",
                at("2020-01-01T00:00:00Z"),
                ("anna",),
                open_orders=(OpenItem("7", at("2021-01-01T00:00:00Z")),),
            ),
        ),
        employees=EMPLOYEES,
        next_inquiry_counter=42,
    )
    unknown = CrmFacts(employees=EMPLOYEES)
    same_number = [parse_outcome(missed()), parse_outcome(outcome())]
    # 10,000 different numbers: more than the normalization cache holds, so every call parses.
    distinct = [
        parse_outcome((missed if n % 2 else outcome)(external={"raw": f"098{n:07d}", "e164": None}))
        for n in range(10_000)
    ]
    cases = (
        (known, same_number, "known client, repeated number"),
        (unknown, same_number, "new number, repeated"),
        (unknown, distinct, "new numbers, all different"),
    )
    for facts, calls, label in cases:
        count = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for call in calls:
                plan_call(call, facts, settings)
            count += len(calls)
        print(f"planner ({label}): {count / elapsed:,.0f} decisions/s ({elapsed / count * 1e6:.1f} µs each)")


async def build_crm(path: Path, clients: int) -> float:
    start = time.perf_counter()
    store = await open_store(path)
    crm = SqliteCrm(store)
    async with store.transaction() as db:
        for e in EMPLOYEES:
            await crm.add_employee(e.id, e.name, extension=e.extension, deleted=e.deleted)
        created = at("2020-01-01T00:00:00Z")
        await crm.bulk_import(
            [
                ImportedClient(
                    f"Клиент {i}",
                    created,
                    ((phone(i), "0" + phone(i)[3:]),),
                    (("anna", "boris", "vera")[i % 3],),
                )
                for i in range(1, clients + 1)
            ]
        )
        # Publishing a million retained directory entries is not what this measures.
        await db.execute("DELETE FROM directory_dirty")
    await store.close()
    return time.perf_counter() - start


def messages_for(count: int, clients: int, first: int = 0) -> list[tuple[str, bytes]]:
    """Half the calls come from known clients (spread over the million), half from new numbers."""
    messages = []
    for n in range(first, first + count):
        number = phone((n * 7919) % clients + 1) if n % 2 == 0 else f"+38067{n:07d}"
        data = (missed if n % 3 else outcome)(id=f"pbx1:{n}", external={"raw": number, "e164": number})
        messages.append(outcome_message(data))
    return messages


class Publisher:
    """Publishes from separate processes, as the daemon does (not on the adapter's event loop):
    `processes` publishers, each with its share, start together when all are connected.

    `started` is when they began to publish.
    """

    def __init__(
        self, port: int, messages: list[tuple[str, bytes]], workdir: Path, processes: int = 1
    ) -> None:
        self.port = port
        self.files = [workdir / f"messages-{n}.json" for n in range(processes)]
        for n, file in enumerate(self.files):
            file.write_text(json.dumps([[t, p.decode()] for t, p in messages[n::processes]]))
        self.started = 0.0
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for file in self.files:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--publish-to",
                str(self.port),
                str(file),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert process.stdout is not None
            await process.stdout.readline()  # "ready": connected, messages loaded
            self.processes.append(process)
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        self.started = time.perf_counter()

    async def wait(self) -> float:
        """Seconds from the first publish to the last PUBACK."""
        for process in self.processes:
            if await process.wait() != 0:
                raise RuntimeError("a publisher failed")
        return time.perf_counter() - self.started


async def publish_here(port: int, path: Path) -> None:
    messages = json.loads(path.read_text())  # noqa: ASYNC240 - before connecting, on purpose
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000
    ) as client:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        for chunk in range(0, len(messages), 5000):
            await asyncio.gather(
                *(client.publish(t, p.encode(), qos=1) for t, p in messages[chunk : chunk + 5000])
            )


async def created(store: Store) -> dict[str, int]:
    counts = {}
    for table in ("inquiries", "tasks", "clients", "deals"):
        async with store.db.execute(f"SELECT count(*) FROM {table}") as cursor:
            row = await cursor.fetchone()
            counts[table] = row[0] if row else 0
    return counts


class Broker:
    """The lab's one mosquitto launcher: no queue limits (a backlog of an hour), no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker: BrokerHandle | None = None
        self.port = 0

    async def __aenter__(self) -> Broker:
        self.broker = await asyncio.to_thread(
            start_mosquitto,
            name=f"bench-crm-{os.getpid()}-{self.workdir.name}",
            state_dir=self.workdir / f"mosquitto-{time.monotonic_ns()}",
            persistence=False,
            extra_config="max_queued_messages 0\nmax_inflight_messages 0\n",
        )
        self.port = self.broker.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.broker is not None
        await asyncio.to_thread(stop_mosquitto, self.broker)


async def run_adapter(
    database: Path, port: int, *, batched: bool, client_id: str
) -> tuple[CrmAdapter, Store]:
    settings = settings_from_toml(
        f'[mqtt]\nport = {port}\n[adapter]\ndatabase = "{database}"\nclient_id = "{client_id}"\n' + RULES
    )
    store = await open_store(database)
    return CrmAdapter(settings, store, batched=batched), store


async def until_done(adapter: CrmAdapter, count: int) -> None:
    """Until `count` messages are stored and none is pending (cheap queries: partial index, rowid)."""
    db = adapter.store.db
    while True:
        [(stored,)] = await db.execute_fetchall("SELECT coalesce(max(rowid), 0) FROM inbox")
        [(pending,)] = await db.execute_fetchall("SELECT count(*) FROM inbox WHERE state = 'pending'")
        if stored >= count and pending == 0:
            break
        await asyncio.sleep(0.05)
    done = (await adapter.inbox.counts()).get("done", 0)
    if done != count:
        raise RuntimeError(f"{done} of {count} outcomes applied")


async def bench_live(database: Path, outcomes: int, clients: int, *, batched: bool) -> float:
    """Outcomes published while the adapter runs: first publish → last inbox row done."""
    async with Broker(database.parent) as broker:
        adapter, store = await run_adapter(database, broker.port, batched=batched, client_id="bench-live")
        shutdown = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown))
        await asyncio.wait_for(adapter.ready.wait(), 10)
        publisher = Publisher(broker.port, messages_for(outcomes, clients), database.parent, processes=2)
        await publisher.start()
        await until_done(adapter, outcomes)
        elapsed = time.perf_counter() - publisher.started
        published = await publisher.wait()
        shutdown.set()
        await task
        counts = await created(store)
        await store.close()
    label = "batched (new)   " if batched else "per message (old)"
    print(
        f"live, {label}: {outcomes:,} outcomes applied in {elapsed:.2f} s → "
        f"{outcomes / elapsed:,.0f} outcomes/s (publishing took {published:.2f} s); created {counts}"
    )
    return outcomes / elapsed


async def bench_backlog(database: Path, outcomes: int, clients: int, *, batched: bool = True) -> float:
    """Outcomes queued by the broker while the adapter was down, then drained: the adapter's own
    capacity, whatever the publisher's speed."""
    async with Broker(database.parent) as broker:
        adapter, store = await run_adapter(database, broker.port, batched=batched, client_id="bench-backlog")
        shutdown = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown))
        await asyncio.wait_for(adapter.ready.wait(), 10)  # the persistent session exists now
        shutdown.set()
        await task
        publisher = Publisher(broker.port, messages_for(outcomes, clients, first=1_000_000), database.parent)
        await publisher.start()
        published = await publisher.wait()
        shutdown = asyncio.Event()
        start = time.perf_counter()
        task = asyncio.create_task(adapter.run(shutdown))
        await until_done(adapter, outcomes)
        elapsed = time.perf_counter() - start
        shutdown.set()
        await task
        counts = await created(store)
        await store.close()
    label = "batched (new)    " if batched else "per message (old)"
    print(
        f"backlog, {label}: {outcomes:,} outcomes queued while the adapter was down (publishing "
        f"took {published:.1f} s) drained in {elapsed:.1f} s → {outcomes / elapsed:,.0f} outcomes/s; "
        f"created {counts}"
    )
    return elapsed


async def bench_end_to_end(workdir: Path, clients: int, outcomes: int, backlog: int) -> None:
    built_file = workdir / "built.sqlite3"
    built = await build_crm(built_file, clients)
    print(f"built a CRM of {clients:,} clients in {built:.1f} s ({built_file.stat().st_size / 1e6:.0f} MB)")

    async def drain(database: Path, *, batched: bool) -> float:
        return await bench_backlog(database, outcomes, clients, batched=batched)

    async def on_a_copy(name: str, run: Callable[[Path], Awaitable[float]]) -> None:
        database = workdir / f"crm-{name}.sqlite3"
        shutil.copyfile(built_file, database)
        await run(database)
        for leftover in workdir.glob(f"crm-{name}.sqlite3*"):  # noqa: ASYNC240 - between runs
            leftover.unlink()

    # Side by side: the same queued outcomes drained by the path before issue 13 and the new one.
    for batched in (False, True):
        await on_a_copy(f"drain-{batched}", functools.partial(drain, batched=batched))
    # Live: published while the adapter runs (bounded by the publisher on a small machine).
    await on_a_copy("live", lambda db: bench_live(db, outcomes, clients, batched=True))
    if backlog:  # an hour of peak traffic
        await on_a_copy("backlog", lambda db: bench_backlog(db, backlog, clients))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument(
        "--outcomes", type=int, default=5000, help="drained by each path side by side, and live"
    )
    parser.add_argument(
        "--backlog", type=int, default=72_000, help="queued while down, then drained (0: skip)"
    )
    parser.add_argument("--publish-to", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    if args.publish_to:
        asyncio.run(publish_here(int(args.publish_to[0]), Path(args.publish_to[1])))
        return 0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    bench_planner()
    with tempfile.TemporaryDirectory(prefix="pbxlink-bench-crm-") as workdir:
        asyncio.run(bench_end_to_end(Path(workdir), args.clients, args.outcomes, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
