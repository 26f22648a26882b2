"""Bitrix24 and webhook benchmark: sustained outcomes/s into the fake Bitrix24 portal under its
documented limit (a leaky bucket draining 2 requests/s, 50 deep, 503 QUERY_LIMIT_EXCEEDED past
it) with requests per outcome and the 503s met; and signed webhook deliveries/s to a local
receiver that verifies every signature.

    .venv/bin/python bench/bench_bitrix24.py [--outcomes 600] [--rate 2] [--deliveries 2000]

The fake portal and the receiver run in their own processes on 127.0.0.1 (tests/lab/pbxlab/
fakes/); the adapter's inbox, processor and backend run here on a real SQLite file, as `pbxlink
adapter` runs them (MQTT left out: bench_crm.py measures that side). The client's limiter runs
at the default 95% of the portal's rate and never spends the burst, so the bucket starts full
and stays full: what is measured is the steady state. Baseline in the same run: one outcome per
batch request (the processor's batch = 1 message). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))

from pbxlab.fakes.process import FakeBitrix24Process, WebhookReceiverProcess

from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, open_client
from pbxlink.adapters.backends.bitrix24.backend import Bitrix24
from pbxlink.adapters.backends.webhook.backend import Deliverer, WebhookBackend, create_schema, read_keys
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import open_store
from pbxlink.rules.samples import at, event, event_message, missed, outcome, outcome_message

TOKEN = "bench-token"
USERS = {7: ("Anna", "101"), 9: ("Desk", "100")}
BASE = """
[crm]
backend = "bitrix24"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
rate_limit = {rate}
stale_event_seconds = 100000000
[crm.bitrix24.users]
"101" = 7
"100" = 9
"""
SEED_RULES = """
[crm.clients.missed]
create = "client"
[crm.tasks]
enabled = true
assignees = ["101"]
"""


async def run_case(
    name: str,
    fake: FakeBitrix24Process,
    scratch: Path,
    messages: list[tuple[str, bytes]],
    outcomes: int,
    *,
    rate: float,
    rules: str = "",
    batch: int = 100,
) -> None:
    secret = scratch / "webhook"
    secret.write_text(fake.webhook)
    settings = settings_from_toml(BASE.format(secret=secret, rate=rate) + rules)
    s = settings.crm.bitrix24
    state = fake.state()
    before, limited_before = len(state["requests"]), state["rejected_for_limit"]
    store = await open_store(scratch / f"{name[:12].replace(' ', '_')}-{time.monotonic_ns()}.sqlite3")
    moment = at("2018-03-05T13:32:05Z")
    async with open_client(s) as client:
        backend = Bitrix24(store, settings.crm, s, Bitrix24Api(client, s), clock=lambda: moment)
        inbox = Inbox(store)
        processor = Processor(inbox, backend, settings.crm, clock=lambda: moment, hooks=backend)
        await backend.employees()  # the user list is cached for 5 minutes: not part of the stream
        await inbox.receive_many(messages, moment)
        started = time.perf_counter()
        done = 0
        while done < len(messages):
            done += len(await processor.run_pending(batch_size=batch))
        elapsed = time.perf_counter() - started
        retries = client.counters.retries
    await store.close()
    state = fake.state()
    requests = len(state["requests"]) - before
    limited = state["rejected_for_limit"] - limited_before
    print(
        f"{name:<60} {outcomes:>5} outcomes  {outcomes / elapsed:>7.1f} outcomes/s  "
        f"{requests / outcomes:>6.3f} requests/outcome  {requests / elapsed:>4.2f} req/s  "
        f"503s {limited}  retries {retries}",
        flush=True,
    )


async def webhook_case(scratch: Path, count: int) -> None:
    receiver = WebhookReceiverProcess(scratch / "receiver.log", secrets=["bench-secret"])
    try:
        (scratch / "hook.secret").write_text("bench-secret\n")
        settings = settings_from_toml(
            '[crm]\nbackend = "webhook"\n[crm.webhook.subscribers.erp]\n'
            f'url = "{receiver.url}"\nsecret_file = "{scratch / "hook.secret"}"\n'
        )
        store = await open_store(scratch / "webhook.sqlite3")
        await create_schema(store)
        deliverer = Deliverer(store, settings.crm.webhook, read_keys(settings.crm.webhook))
        backend = WebhookBackend(store, settings.crm.webhook)
        inbox = Inbox(store)
        processor = Processor(inbox, backend, settings.crm, hooks=backend)
        moment = at("2018-03-05T13:32:05Z")
        await inbox.receive_many([outcome_message(outcome(id=f"pbx1:w{i}")) for i in range(count)], moment)
        started = time.perf_counter()
        while await inbox.counts() != {"done": count}:
            await processor.run_pending()
        enqueued = time.perf_counter() - started
        started = time.perf_counter()
        while (await deliverer.counts()).get("delivered", 0) < count:
            await deliverer.deliver_due()
        elapsed = time.perf_counter() - started
        await deliverer.aclose()
        await store.close()
        state = receiver.state()
        print(
            f"{'signed webhook: outcomes enqueued (in the message transaction)':<60} {count:>5} outcomes  "
            f"{count / enqueued:>7.1f} outcomes/s",
            flush=True,
        )
        print(
            f"{'signed webhook: deliveries to a verifying local receiver':<60} {count:>5} deliveries "
            f"{count / elapsed:>7.1f} deliveries/s  (8 in flight; bad signatures "
            f"{state['refused_signature']}, repeats {state['repeats']})",
            flush=True,
        )
    finally:
        receiver.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcomes", type=int, default=600, help="for the telephony-only cases")
    parser.add_argument("--rate", type=float, default=2.0, help="the portal's drain rate (req/s)")
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n, rate = args.outcomes, args.rate
    small = max(10, n // 30)
    client_rate = rate * 0.95  # the limiter's headroom, as in the adapter
    with tempfile.TemporaryDirectory(prefix="bench-bitrix24-") as scratch_dir:
        scratch = Path(scratch_dir)
        fake = FakeBitrix24Process(scratch / "fake.log", token=TOKEN, users=USERS, rate=rate, burst=50)
        try:
            print(f"fake Bitrix24 at {fake.url}: leaky bucket {rate} req/s, 50 deep (503 past it)")
            await run_case(
                "telephony only: register + finish per outcome, batched",
                fake,
                scratch,
                [outcome_message(outcome(id=f"pbx1:a{i}")) for i in range(n)],
                n,
                rate=client_rate,
            )
            rung: list[tuple[str, bytes]] = []
            for i in range(n):
                call = f"pbx1:r{i}"
                rung.append(
                    event_message(event(call_id=call, seq=1, type="ringing", time="2018-03-05T13:29:52Z"))
                )
                rung.append(outcome_message(outcome(id=call)))
            await run_case(
                "telephony: ringing (register, card) + outcome (finish)",
                fake,
                scratch,
                rung,
                n,
                rate=client_rate,
            )
            await run_case(
                "baseline: one outcome per batch request (batch = 1 message)",
                fake,
                scratch,
                [outcome_message(outcome(id=f"pbx1:b{i}")) for i in range(small)],
                small,
                rate=client_rate,
                batch=1,
            )
            await run_case(
                "seed rules: missed, new number (look-up+contact+task)",
                fake,
                scratch,
                [
                    outcome_message(
                        missed(id=f"pbx1:d{i}", external={"raw": f"050{i:07d}", "e164": f"+38050{i:07d}"})
                    )
                    for i in range(small)
                ],
                small,
                rate=client_rate,
                rules=SEED_RULES,
            )
        finally:
            fake.stop()
        await webhook_case(scratch, args.deliveries)


if __name__ == "__main__":
    asyncio.run(main())
