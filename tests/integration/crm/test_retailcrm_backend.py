"""The RetailCRM backend against the fake RetailCRM over real HTTP, with a real SQLite store.

Seed 002 (Ringostat + RetailCRM) on RetailCRM's own API: customers by phone, orders into
statuses by prioritized line rules, missed-call tasks linked to the order, internal calls never
sent, every outcome uploaded with externalId = outcome id; and the failure contract: 4xx →
dead letter with RetailCRM's reason, 503 bursts and slow answers retried, an outage leaves the
work pending, an interrupted message never doubles a customer, order or task.
"""

from __future__ import annotations

import time
from pathlib import Path

from pbxlab.retailcrm_rig import CONFIG, retailcrm_rig

from pbxlink.adapters.backends.ledger import prune_ledger
from pbxlink.adapters.backends.remote import RemotePolicy
from pbxlink.rules.samples import event, event_message, missed, outcome, outcome_message

NEW_NUMBER = outcome(id="pbx1:1.1", external={"raw": "0981234567", "e164": "+380981234567"})


async def test_a_new_number_gets_one_customer_and_an_order_and_its_call_uploaded(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        await rig.outcome(NEW_NUMBER)
        state = rig.fake.state
        [customer] = state.customers
        assert customer["externalId"] == "pbxlink-pbx1:1.1"
        assert customer["phones"] == [{"number": "+380981234567"}]
        assert customer["managerId"] == 27  # answered by 101 = RetailCRM user 27
        [order] = state.orders
        assert (order["status"], order["customer"]["id"], order["managerId"]) == ("new", customer["id"], 27)
        [call] = state.calls
        assert call["externalId"] == "pbx1:1.1"
        assert (call["type"], call["result"], call["code"], call["userId"]) == ("in", "answered", "101", 27)
        assert (call["duration"], call["durationWaiting"]) == (115, 15)
        assert call["date"] == "2018-03-05 15:29:50"  # Europe/Kyiv local time, RetailCRM's format
        assert call["externalPhone"] == "4930100200"
        assert await rig.inbox_state("pbx1:1.1") == ("done", 0, None)


async def test_a_call_to_the_reviews_line_creates_the_order_straight_in_cancelled(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        await rig.outcome(outcome(id="pbx1:2.1", line="4930100300"))
        [order] = rig.fake.state.orders
        assert order["status"] == "cancel-other"
        assert order["site"] == "reviews"  # the DID ↔ site map


async def test_a_known_number_typed_in_national_form_keeps_its_one_customer(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        rig.fake.add_customer("Typed by hand", ["098 123 45 67"], manager_id=28)
        await rig.outcome(NEW_NUMBER)
        [customer] = rig.fake.state.customers
        assert customer["firstName"] == "Typed by hand"
        [order] = rig.fake.state.orders
        assert order["customer"]["id"] == customer["id"]
        assert order["managerId"] == 28  # the customer's responsible manager


async def test_a_missed_call_creates_a_task_linked_to_the_order(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        await rig.outcome(missed(id="pbx1:3.1"))
        [order] = rig.fake.state.orders
        assert order["status"] == "callback"
        [task] = rig.fake.state.tasks
        assert task["order"]["id"] == order["id"]
        assert task["performer"] == 27
        assert task["datetime"] == "2018-03-05 17:29"  # missed at 15:29 local (call start) + 2 hours
        [call] = rig.fake.state.calls
        assert (call["result"], call["durationWaiting"]) == ("no answer", 130)


async def test_an_internal_call_is_never_sent(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        before = len(rig.fake.state.requests)
        await rig.outcome(outcome(id="pbx1:4.1", direction="internal", external=None, initiator="101"))
        assert rig.fake.state.requests[before:] == []
        assert await rig.inbox_state("pbx1:4.1") == ("done", 0, None)


async def test_live_ringing_opens_the_popup_and_the_outcome_closes_it(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        ringing = event(call_id="pbx1:5.1", seq=1, type="ringing", time="2018-03-05T13:29:52Z")
        await rig.deliver(event_message(ringing))
        await rig.processor.run_pending()
        await rig.outcome(outcome(id="pbx1:5.1"))
        assert [(e["type"], e["codes"], e.get("hangupStatus")) for e in rig.fake.state.events] == [
            ("in", ["101"], None),
            ("hangup", ["101"], "answered"),
        ]
        assert rig.fake.state.events[0]["userIds"] == [27]


async def test_an_event_older_than_the_stale_limit_opens_no_popup(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path, now="2018-03-06T13:29:52Z") as rig:  # a day late
        await rig.deliver(event_message(event(call_id="pbx1:6.1", seq=1, type="ringing")))
        await rig.processor.run_pending()
        assert rig.fake.state.events == []


async def test_many_outcomes_go_up_in_few_uploads(tmp_path: Path) -> None:
    config = CONFIG.replace("[crm.orders]\nenabled = true", "[crm.orders]\nenabled = false").replace(
        "[crm.tasks]\nenabled = true", "[crm.tasks]\nenabled = false"
    )
    config = config.replace("stale_event_seconds = 600", "stale_event_seconds = 600\ncall_events = false")
    async with retailcrm_rig(tmp_path, config=config) as rig:
        await rig.deliver(*(outcome_message(outcome(id=f"pbx1:7.{i}")) for i in range(120)))
        await rig.processor.run_pending()
        assert len(rig.fake.state.calls) == 120
        uploads = rig.requests("/api/v5/telephony/calls/upload")
        assert len(uploads) == 3  # 50 + 50 + 20


async def test_a_redelivered_outcome_after_a_replay_creates_nothing_twice(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        await rig.outcome(missed(id="pbx1:8.1"))
        # The same message processed again from scratch (e.g. the inbox row reset by an operator):
        await rig.store.db.execute("UPDATE inbox SET state = 'pending' WHERE id = 'pbx1:8.1'")
        await rig.processor.run_pending()
        state = rig.fake.state
        assert (len(state.customers), len(state.orders), len(state.tasks), len(state.calls)) == (1, 1, 1, 1)


async def test_a_message_interrupted_after_its_writes_finds_them_instead_of_writing_again(
    tmp_path: Path,
) -> None:
    """What SIGKILL between RetailCRM's answer and the local commit leaves: the message pending and
    in flight, no ledger rows. Its next attempt must find the task (no externalId) and the order."""
    async with retailcrm_rig(tmp_path) as rig:
        await rig.outcome(missed(id="pbx1:9.1"))
        db = rig.store.db
        await db.execute("DELETE FROM crm_effects")
        await db.execute("DELETE FROM crm_links")
        await db.execute("UPDATE inbox SET state = 'pending' WHERE id = 'pbx1:9.1'")
        await db.execute("INSERT INTO crm_inflight (message_id, since) VALUES ('pbx1:9.1', 'x')")
        await rig.processor.run_pending()
        state = rig.fake.state
        assert (len(state.customers), len(state.orders), len(state.tasks), len(state.calls)) == (1, 1, 1, 1)
        assert await rig.inbox_state("pbx1:9.1") == ("done", 0, None)


async def test_a_4xx_is_dead_lettered_with_retailcrms_reason(tmp_path: Path) -> None:
    config = CONFIG.replace('status = "callback"', 'status = "no-such-status"')
    async with retailcrm_rig(tmp_path, config=config) as rig:
        await rig.outcome(missed(id="pbx1:10.1"))
        state, attempts, error = await rig.inbox_state("pbx1:10.1")
        assert state == "dead"
        assert attempts == 1
        assert error is not None
        assert "Order is not loaded" in error
        assert "status" in error
        assert rig.fake.state.orders == []
        [letter] = await rig.inbox.dead_letters()
        assert letter.reason == error


async def test_a_burst_of_503s_is_retried_and_everything_arrives_once(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        rig.fake.faults.fail_next = 6
        await rig.outcome(missed(id="pbx1:11.1"))
        state = rig.fake.state
        assert (len(state.customers), len(state.orders), len(state.tasks), len(state.calls)) == (1, 1, 1, 1)
        assert rig.client.counters.retries >= 6
        assert await rig.inbox_state("pbx1:11.1") == ("done", 0, None)


async def test_an_outage_leaves_the_work_pending_without_counting_attempts(tmp_path: Path) -> None:
    policy = RemotePolicy(
        rate_per_second=1000, retry_budget_seconds=0.5, backoff_initial=0.05, backoff_max=0.1
    )
    async with retailcrm_rig(tmp_path, policy=policy) as rig:
        rig.fake.faults.unavailable_until = time.monotonic() + 3600
        for _ in range(4):  # more runs than max_attempts: an outage must never dead-letter
            await rig.outcome(missed(id="pbx1:12.1"))
        assert await rig.inbox_state("pbx1:12.1") == ("pending", 0, None)
        assert rig.processor.unavailable is not None
        rig.fake.faults.unavailable_until = 0
        await rig.processor.run_pending()
        state = rig.fake.state
        assert (len(state.customers), len(state.orders), len(state.tasks), len(state.calls)) == (1, 1, 1, 1)
        assert await rig.inbox_state("pbx1:12.1") == ("done", 0, None)


async def test_a_slow_task_create_that_times_out_is_checked_not_sent_twice(tmp_path: Path) -> None:
    policy = RemotePolicy(rate_per_second=1000, read_timeout=0.3, backoff_initial=0.05, backoff_max=0.1)
    async with retailcrm_rig(tmp_path, policy=policy) as rig:
        rig.fake.faults.late = {"/api/v5/tasks/create": 0.6}  # made at once, answered too late
        await rig.outcome(missed(id="pbx1:13.1"))
        assert await rig.inbox_state("pbx1:13.1") == ("pending", 0, None)  # ambiguous: not re-sent
        rig.fake.faults.late = {}
        await rig.processor.run_pending()
        state = rig.fake.state
        assert (len(state.customers), len(state.orders), len(state.tasks), len(state.calls)) == (1, 1, 1, 1)
        assert await rig.inbox_state("pbx1:13.1") == ("done", 0, None)


async def test_a_dead_lettered_message_leaves_no_in_flight_mark_and_pruning_follows_the_inbox(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace('status = "callback"', 'status = "no-such-status"')
    async with retailcrm_rig(tmp_path, config=config) as rig:
        await rig.outcome(missed(id="pbx1:14.1"))  # dead: 4xx
        await rig.outcome(outcome(id="pbx1:14.2"))  # done
        db = rig.store.db
        assert await db.execute_fetchall("SELECT message_id FROM crm_inflight") == []
        assert list(await db.execute_fetchall("SELECT * FROM crm_effects WHERE message_id = 'pbx1:14.2'"))
        await db.execute("DELETE FROM inbox WHERE id = 'pbx1:14.2'")  # what inbox.prune does after retention
        assert await prune_ledger(rig.store) > 0
        assert await db.execute_fetchall("SELECT * FROM crm_effects WHERE message_id = 'pbx1:14.2'") == []
