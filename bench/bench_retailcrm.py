"""RetailCRM backend benchmark: outcomes/s delivered to the fake RetailCRM at its documented rate
limit (10 requests/s, enforced by the fake with 503s and respected by pbxlink's limiter), and
HTTP requests per outcome, for the kinds of work the seed's rules cause.

    .venv/bin/python bench/bench_retailcrm.py [--outcomes 1000] [--rate 10]

The fake RetailCRM runs in its own process on 127.0.0.1 (tests/lab/pbxlab/fakes/retailcrm.py);
the adapter's inbox, processor and RetailCRM backend run here on a real SQLite file, as
`pbxlink adapter` runs them (MQTT left out: bench_crm.py measures that side). Baseline in the
same run: the same calls uploaded one per request (upload_batch = 1). Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))

from pbxlab.fakes.process import FakeRetailCrmProcess

from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy
from pbxlink.adapters.backends.retailcrm.backend import RetailCrm, describe_error
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import open_store
from pbxlink.rules.samples import at, missed, outcome, outcome_message

KEY = "bench-key"
BASE = """
[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "{url}"
site = "main"
rate_limit = {rate}
upload_batch = {batch}
call_events = {events}
stale_event_seconds = 3600
[crm.retailcrm.users]
"101" = 27
"""
SEED_RULES = """
[crm.orders]
enabled = true
[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"
[crm.tasks]
enabled = true
assignees = ["101"]
link_to_this_call = true
unlinked = "skip"
"""


async def run_case(
    name: str,
    fake: FakeRetailCrmProcess,
    outcomes: list[dict[str, Any]],
    *,
    rate: int,
    batch: int,
    events: bool,
    rules: str,
) -> None:
    text = BASE.format(url=fake.url, rate=rate, batch=batch, events=str(events).lower()) + rules
    settings = settings_from_toml(text)
    s = settings.crm.retailcrm
    before = len(fake.state()["requests"])
    with tempfile.TemporaryDirectory(prefix="bench-retailcrm-") as scratch:
        store = await open_store(Path(scratch) / "adapter.sqlite3")
        moment = at("2018-03-05T13:32:05Z")
        async with RemoteClient(
            fake.url,
            name="retailcrm",
            headers={"X-API-KEY": KEY},
            policy=RemotePolicy(rate_per_second=float(rate)),
            describe_error=describe_error,
        ) as client:
            backend = RetailCrm(store, settings.crm, s, client, clock=lambda: moment)
            inbox = Inbox(store)
            processor = Processor(inbox, backend, settings.crm, clock=lambda: moment, hooks=backend)
            await inbox.receive_many([outcome_message(o) for o in outcomes], moment)
            started = time.perf_counter()
            done = 0
            while done < len(outcomes):
                done += len(await processor.run_pending())
            elapsed = time.perf_counter() - started
            retries = client.counters.retries
        await store.close()
    requests = fake.state()["requests"][before:]
    limited = sum(1 for r in requests if r.get("status") == 503)
    print(
        f"{name:<58} {len(outcomes):>5} outcomes  {len(outcomes) / elapsed:>8.1f} outcomes/s  "
        f"{len(requests) / len(outcomes):>6.3f} requests/outcome  {len(requests) / elapsed:>5.1f} req/s  "
        f"503s {limited}  retries {retries}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcomes", type=int, default=1000, help="for the calls-only cases")
    parser.add_argument("--rate", type=int, default=10, help="the account's rate limit (req/s)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n, rate = args.outcomes, args.rate
    small = max(10, n // 30)
    with tempfile.TemporaryDirectory(prefix="bench-retailcrm-fake-") as logs:
        fake = FakeRetailCrmProcess(
            Path(logs) / "fake.log",
            api_key=KEY,
            users={27: "Anna"},
            statuses=("new", "callback", "complete"),
            rate_limit=rate,
        )
        try:
            print(f"fake RetailCRM at {fake.url}, rate limit {rate} requests/s (503 past it)")
            answered = [outcome(id=f"pbx1:a{i}") for i in range(n)]
            await run_case(
                "calls only, batched uploads (upload_batch = 50)",
                fake,
                answered,
                rate=rate,
                batch=50,
                events=False,
                rules="",
            )
            await run_case(
                "baseline: calls only, one upload per call (upload_batch = 1)",
                fake,
                [outcome(id=f"pbx1:b{i}") for i in range(small * 3)],
                rate=rate,
                batch=1,
                events=False,
                rules="",
            )
            await run_case(
                "calls + hangup popups (call_events = true)",
                fake,
                [outcome(id=f"pbx1:c{i}") for i in range(small * 3)],
                rate=rate,
                batch=50,
                events=True,
                rules="",
            )
            await run_case(
                "seed rules: missed call, new number (customer+order+task)",
                fake,
                [
                    missed(id=f"pbx1:d{i}", external={"raw": f"050{i:07d}", "e164": f"+38050{i:07d}"})
                    for i in range(small)
                ],
                rate=rate,
                batch=50,
                events=False,
                rules=SEED_RULES,
            )
            await run_case(
                "seed rules: repeat caller with an open order (task only)",
                fake,
                [
                    missed(id=f"pbx1:e{i}", external={"raw": "0501234567", "e164": "+380501234567"})
                    for i in range(small)
                ],
                rate=rate,
                batch=50,
                events=False,
                rules=SEED_RULES,
            )
        finally:
            fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
