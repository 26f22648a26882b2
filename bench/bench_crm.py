"""CRM adapter benchmark: planner decisions/s, and outcomes/s applied end to end by one adapter
(real mosquitto → shared subscription → inbox → rules → SQLite CRM) with 1,000,000 clients.

    .venv/bin/python bench/bench_crm.py [--clients 1000000] [--outcomes 2000]

Prints figures; asserts nothing. Needs mosquitto on PATH (started on a free loopback port).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import structlog

from pbxlink.adapters.backends.sqlite_crm import ImportedClient, SqliteCrm
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.store import open_store
from pbxlink.rules.calls import parse_outcome
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem
from pbxlink.rules.planner import plan_call
from pbxlink.rules.samples import EMPLOYEES, at, missed, outcome, outcome_message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
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


async def bench_end_to_end(workdir: Path, clients: int, outcomes: int) -> None:
    database = workdir / "crm.sqlite3"
    built = await build_crm(database, clients)
    print(f"built a CRM of {clients:,} clients in {built:.1f} s ({database.stat().st_size / 1e6:.0f} MB)")
    # The lab's one mosquitto launcher; no queue limits (a million-client burst), no persistence.
    broker = start_mosquitto(
        name=f"bench-crm-{os.getpid()}",
        state_dir=workdir / "mosquitto",
        persistence=False,
        extra_config="max_queued_messages 0\nmax_inflight_messages 0\n",
    )
    port = broker.port
    try:
        settings = settings_from_toml(f'[mqtt]\nport = {port}\n[adapter]\ndatabase = "{database}"\n' + RULES)
        store = await open_store(database)
        adapter = CrmAdapter(settings, store)
        shutdown = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(adapter.run(shutdown), name="adapter")
            elapsed, published = await _measure(adapter, port, clients, outcomes)
            shutdown.set()
        counts = {}
        for table in ("inquiries", "tasks", "clients", "deals"):
            async with store.db.execute(f"SELECT count(*) FROM {table}") as cursor:
                row = await cursor.fetchone()
                counts[table] = row[0] if row else 0
        await store.close()
        print(
            f"end to end: {outcomes:,} outcomes applied in {elapsed:.2f} s → "
            f"{outcomes / elapsed:,.0f} outcomes/s (publishing took {published:.2f} s); "
            f"created {counts}"
        )
    finally:
        stop_mosquitto(broker)


async def _measure(adapter: CrmAdapter, port: int, clients: int, outcomes: int) -> tuple[float, float]:
    await asyncio.wait_for(adapter.ready.wait(), 10)
    # Half the calls come from known clients (spread over the million), half from new numbers.
    messages = []
    for n in range(outcomes):
        number = phone((n * 7919) % clients + 1) if n % 2 == 0 else f"+38067{n:07d}"
        data = (missed if n % 3 else outcome)(id=f"pbx1:{n}", external={"raw": number, "e164": number})
        messages.append(outcome_message(data))
    start = time.perf_counter()
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000
    ) as client:
        await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages))
    published = time.perf_counter() - start
    while (await adapter.inbox.counts()).get("done", 0) < outcomes:  # noqa: ASYNC110 - polling the DB is the measurement
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    return elapsed, published


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--outcomes", type=int, default=2000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt: "N pending publish calls"
    bench_planner()
    with tempfile.TemporaryDirectory(prefix="pbxlink-bench-crm-") as workdir:
        asyncio.run(bench_end_to_end(Path(workdir), args.clients, args.outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
