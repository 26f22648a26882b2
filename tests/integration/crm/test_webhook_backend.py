"""The signed webhook backend with a real SQLite store and a signature-checking receiver on
127.0.0.1: filters per subscriber, signatures with secret rotation, Idempotency-Key, retries with
backoff on 500s and refused connections, dead letters after N tries, on a refusal, or by age,
and nothing enqueued twice for a redelivered message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pbxlab.fakes.webhook_receiver import WebhookReceiver
from pbxlab.ports import free_port

from pbxlink.adapters.backends.webhook.backend import Deliverer, WebhookBackend, create_schema, read_keys
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.metrics import AdapterMetrics
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import Store, open_store
from pbxlink.rules.samples import at, event, event_message, missed, outcome, outcome_message

CONFIG = """
[crm]
backend = "webhook"
[crm.webhook]
max_attempts = {attempts}
max_age_seconds = {age}
backoff_initial_seconds = 0.01
backoff_max_seconds = 0.05
timeout_seconds = 2
[crm.webhook.subscribers.erp]
url = "{erp}"
secret_file = "{dir}/erp.secret"
messages = ["call.outcome"]
directions = ["inbound"]
[crm.webhook.subscribers.wallboard]
url = "{wallboard}"
secret_file = "{dir}/wallboard.secret"
previous_secret_file = "{dir}/wallboard.old"
messages = ["call.event"]
events = ["ringing"]
lines = ["4930100200"]
"""


@dataclass
class Rig:
    store: Store
    inbox: Inbox
    processor: Processor[WebhookBackend]
    deliverer: Deliverer
    backend: WebhookBackend
    metrics: AdapterMetrics

    def count(self, subscriber: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "pbxlink_adapter_webhook_deliveries_total", {"subscriber": subscriber, "result": result}
        )
        return 0.0 if value is None else value

    async def deliver(self, *items: tuple[str, bytes]) -> None:
        await self.inbox.receive_many(list(items), at("2018-03-05T13:32:01Z"))
        await self.processor.run_pending()

    async def drain(self, rounds: int = 400) -> None:
        """Deliver until nothing is pending (backoffs are milliseconds here)."""
        for _ in range(rounds):
            await self.deliverer.deliver_due()
            due_in = await self.deliverer.next_due_in()
            if due_in is None:
                return
            await asyncio.sleep(min(due_in, 0.05))
        raise AssertionError("deliveries still pending")

    async def rows(self) -> list[tuple[str, str, str, int, str | None]]:
        rows = await self.store.db.execute_fetchall(
            "SELECT message_id, subscriber, state, attempts, last_error "
            "FROM webhook_deliveries ORDER BY rowid"
        )
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]


@asynccontextmanager
async def webhook_rig(
    tmp_path: Path, erp_url: str, wallboard_url: str, *, attempts: int = 5, age: int = 3600
) -> AsyncIterator[Rig]:
    metrics = AdapterMetrics("crm")
    (tmp_path / "erp.secret").write_text("erp-secret\n")
    (tmp_path / "wallboard.secret").write_text("wallboard-new\n")
    (tmp_path / "wallboard.old").write_text("wallboard-old\n")
    config = CONFIG.format(erp=erp_url, wallboard=wallboard_url, dir=tmp_path, attempts=attempts, age=age)
    settings = settings_from_toml(config)
    store = await open_store(tmp_path / "adapter.sqlite3")
    await create_schema(store)
    deliverer = Deliverer(
        store,
        settings.crm.webhook,
        read_keys(settings.crm.webhook),
        observe=lambda subscriber, result: metrics.webhook_deliveries.labels(subscriber, result).inc(),
    )
    backend = WebhookBackend(store, settings.crm.webhook, wake=deliverer.wake)
    inbox = Inbox(store)
    processor = Processor(inbox, backend, settings.crm, max_attempts=3, hooks=backend)
    try:
        yield Rig(store, inbox, processor, deliverer, backend, metrics)
    finally:
        await deliverer.aclose()
        await store.close()


@asynccontextmanager
async def receivers(
    erp_secrets: list[str], wallboard_secrets: list[str]
) -> AsyncIterator[tuple[WebhookReceiver, WebhookReceiver]]:
    erp, wallboard = WebhookReceiver(erp_secrets), WebhookReceiver(wallboard_secrets)
    await erp.start()
    await wallboard.start()
    try:
        yield erp, wallboard
    finally:
        await erp.stop()
        await wallboard.stop()


RINGING = event(call_id="pbx1:1.1", seq=1, type="ringing", time="2018-03-05T13:29:52Z")


async def test_each_subscriber_gets_what_its_filters_ask_for_signed_with_the_message_id_as_key(
    tmp_path: Path,
) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-old"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url) as rig,
    ):
        answered = outcome_message(outcome(id="pbx1:1.1"))
        await rig.deliver(
            event_message(RINGING),
            event_message(event(call_id="pbx1:1.1", seq=2, type="answered")),
            answered,
            outcome_message(outcome(id="pbx1:2.1", direction="outbound", line=None, initiator="101")),
            event_message(event(call_id="pbx1:3.1", seq=1, type="ringing", line="4930100999")),
        )
        await rig.drain()
        assert erp.received.order == ["pbx1:1.1"]  # the inbound outcome only
        assert erp.received.processed["pbx1:1.1"]["data"]["id"] == "pbx1:1.1"
        assert wallboard.received.order == ["pbx1:1.1:1"]  # ringing on the wanted line only
        assert (erp.received.refused_signature, wallboard.received.refused_signature) == (0, 0)
        assert {r[2] for r in await rig.rows()} == {"delivered"}


async def test_during_rotation_a_receiver_with_only_the_new_secret_accepts_too(tmp_path: Path) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-new"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url) as rig,
    ):
        await rig.deliver(event_message(RINGING))
        await rig.drain()
        assert wallboard.received.order == ["pbx1:1.1:1"]


async def test_a_receiver_answering_500_then_200_gets_each_message_once(tmp_path: Path) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-new"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url) as rig,
    ):
        erp.fail_next = 3
        await rig.deliver(*(outcome_message(outcome(id=f"pbx1:4.{i}")) for i in range(3)))
        await rig.drain()
        assert sorted(erp.received.order) == [f"pbx1:4.{i}" for i in range(3)]
        assert erp.received.failed == 3
        assert all(state == "delivered" for _, _, state, _, _ in await rig.rows())
        assert (rig.count("erp", "retry"), rig.count("erp", "delivered")) == (3.0, 3.0)
        assert max(attempts for *_, attempts, _ in await rig.rows()) >= 2


async def test_a_receiver_that_keeps_failing_is_dead_lettered_after_max_attempts(tmp_path: Path) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-new"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url, attempts=3) as rig,
    ):
        erp.fail_next = 1000
        await rig.deliver(outcome_message(missed(id="pbx1:5.1")))
        await rig.drain()
        [(message, subscriber, state, attempts, error)] = await rig.rows()
        assert (message, subscriber, state, attempts) == ("pbx1:5.1", "erp", "dead", 3)
        assert error == "HTTP 500: receiver is down (3 tries)"
        assert (rig.count("erp", "retry"), rig.count("erp", "dead")) == (2.0, 1.0)
        assert erp.received.failed == 3


async def test_a_refused_signature_is_dead_at_once_and_a_receiver_that_is_down_is_retried(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with (
        receivers(["not-the-secret"], ["wallboard-new"]) as (erp, _wallboard),
        webhook_rig(tmp_path, erp.url, f"http://127.0.0.1:{port}/hook", attempts=4) as rig,
    ):
        await rig.deliver(outcome_message(outcome(id="pbx1:6.1")), event_message(RINGING))
        await rig.drain()
        rows = {r[1]: r for r in await rig.rows()}
        assert rows["erp"][2:4] == ("dead", 1)
        assert rows["erp"][4] == "HTTP 401: bad signature (refused)"
        assert rows["wallboard"][2:4] == ("dead", 4)  # nobody listening: ConnectError, 4 tries
        assert rows["wallboard"][4] == "ConnectError (4 tries)"


async def test_a_delivery_older_than_max_age_is_dead_lettered(tmp_path: Path) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-new"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url, attempts=100, age=1) as rig,
    ):
        erp.fail_next = 1000
        await rig.deliver(outcome_message(outcome(id="pbx1:7.1")))
        await rig.store.db.execute("UPDATE webhook_deliveries SET created_at = created_at - 5")
        await rig.drain()
        [row] = await rig.rows()
        assert row[2:4] == ("dead", 1)
        assert row[4] == "HTTP 500: receiver is down (too old)"


async def test_a_redelivered_message_is_enqueued_and_delivered_once(tmp_path: Path) -> None:
    async with (
        receivers(["erp-secret"], ["wallboard-new"]) as (erp, wallboard),
        webhook_rig(tmp_path, erp.url, wallboard.url) as rig,
    ):
        message = outcome_message(outcome(id="pbx1:8.1"))
        await rig.deliver(message)
        await rig.store.db.execute("UPDATE inbox SET state = 'pending'")
        await rig.processor.run_pending()
        await rig.deliver(message)  # the broker redelivers it: a duplicate in the inbox
        await rig.drain()
        assert erp.received.order == ["pbx1:8.1"]
        assert erp.received.requests == 1
