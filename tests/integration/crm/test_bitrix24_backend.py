"""The Bitrix24 backend against the fake portal over real HTTP, with a real SQLite store.

Telephony (register at ringing with the card shown, finish with the outcome, one request for a
burst), seeds 001 and 003 on Bitrix24 (contacts found with findbycomm, contacts and deals for new
numbers, repeat-call deals only without an open deal, missed-call tasks one each linked to the
newest open deal), and the failure contract: refusals dead-lettered with Bitrix24's reason,
503 / 429 / 502 retried, an outage leaves the work pending, an interrupted or redelivered
message never doubles a contact, deal, task or call.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from pbxlab.bitrix24_rig import TELEPHONY_ONLY, bitrix24_rig
from pbxlab.fakes.bitrix24 import FakeBitrix24

from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, TokenStore
from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.adapters.backends.bitrix24.setup import open_bitrix24
from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy
from pbxlink.adapters.config import settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processor
from pbxlink.adapters.store import open_store
from pbxlink.foundation.config import Secret
from pbxlink.rules.samples import at, event, event_message, missed, outcome, outcome_message

NEW = outcome(id="pbx1:1.1", external={"raw": "0981234567", "e164": "+380981234567"})


async def test_a_new_number_answered_gets_a_contact_a_deal_and_its_call_finished(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        await rig.outcome(NEW)
        p = rig.fake.portal
        [contact] = p.contacts.values()
        assert contact["ORIGIN_ID"] == "pbxlink-pbx1:1.1"  # its first call
        assert contact["PHONE"][0]["VALUE"] == "+380981234567"
        assert contact["ASSIGNED_BY_ID"] == 7  # answered by 101 = UF_PHONE_INNER of user 7
        [deal] = p.deals.values()
        assert (deal["CONTACT_ID"], deal["CLOSED"], deal["ASSIGNED_BY_ID"]) == (contact["ID"], "N", 7)
        [call] = p.statistic
        assert call["EXTERNAL_CALL_ID"] == "pbx1:1.1"
        assert (call["CALL_FAILED_CODE"], call["CALL_DURATION"], call["PORTAL_USER_ID"]) == ("200", 115, 7)
        assert (call["PORTAL_NUMBER"], call["INCOMING"]) == ("4930100200", "2")
        assert (call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]) == ("CONTACT", contact["ID"])
        assert call["SHOW"] == "0"  # registered at the outcome: no card to pop any more
        assert p.registered == {}
        assert list(p.lines) == ["4930100200"]
        assert await rig.inbox_state("pbx1:1.1") == ("done", 0, None)


async def test_ringing_registers_with_the_card_shown_and_the_outcome_finishes_that_call(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        ringing = event(call_id="pbx1:2.1", seq=1, type="ringing", time="2018-03-05T13:29:52Z", agent="102")
        await rig.deliver(event_message(ringing))
        await rig.processor.run_pending()
        [registered] = rig.fake.portal.registered.values()
        assert (registered["SHOW"], registered["USER_ID"], registered["TYPE"]) == ("1", 8, 2)
        assert registered["EXTERNAL_CALL_ID"] == "pbx1:2.1"
        assert registered["LINE_NUMBER"] == "4930100200"
        assert registered["CRM_CREATE"] == "0"
        await rig.outcome(outcome(id="pbx1:2.1", last_handled_by="102"))
        [call] = rig.fake.portal.statistic
        assert call["CALL_ID"] == registered["CALL_ID"]
        assert call["PORTAL_USER_ID"] == 8
        assert rig.commands("telephony.externalCall.register") == 1


async def test_a_missed_call_from_a_new_number_gets_a_contact_and_one_task_each(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        await rig.outcome(missed(id="pbx1:3.1"))
        p = rig.fake.portal
        assert len(p.contacts) == 1
        assert p.deals == {}  # missed → "client" only
        tasks = sorted(p.tasks.values(), key=lambda t: t["responsibleId"])
        assert [t["responsibleId"] for t in tasks] == ["7", "8"]
        assert all(t["title"] == "Пропущенный звонок" for t in tasks)
        assert all(t["ufCrmTask"] == [] for t in tasks)  # no open deal: unlinked, as RO App does
        assert tasks[0]["deadline"].startswith("2018-03-05T")
        [call] = p.statistic
        assert (call["CALL_FAILED_CODE"], call["CALL_STATUS"], call["CALL_DURATION"]) == ("304", 0, 0)
        assert call["PORTAL_USER_ID"] == 7  # the first agent it rang owns the missed call


async def test_a_known_contact_with_an_open_deal_gets_no_second_deal_and_its_task_on_the_newest(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        contact = rig.fake.add_contact("Typed by hand", ["098 123 45 67"], assigned=8)
        rig.fake.add_deal("old", contact)
        newest = rig.fake.add_deal("newer", contact)
        rig.fake.add_deal("won", contact, closed=True)
        await rig.outcome(outcome(id="pbx1:4.1"))  # answered repeat call
        assert len(rig.fake.portal.deals) == 3
        assert len(rig.fake.portal.contacts) == 1
        await rig.outcome(missed(id="pbx1:4.2"))
        assert {t["ufCrmTask"][0] for t in rig.fake.portal.tasks.values()} == {f"D_{newest}"}
        assert rig.commands("crm.duplicate.findbycomm") == 2  # one per message, in the batch's look-up


async def test_an_internal_call_is_never_sent(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        before = len(rig.fake.portal.requests)
        await rig.outcome(outcome(id="pbx1:5.1", direction="internal", external=None, initiator="101"))
        assert [r["method"] for r in rig.fake.portal.requests[before:]] in ([], ["user.get"])
        assert rig.fake.portal.statistic == []
        assert await rig.inbox_state("pbx1:5.1") == ("done", 0, None)


async def test_a_burst_of_outcomes_goes_in_a_few_batch_requests(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        before = len(rig.fake.portal.requests)
        await rig.deliver(*(outcome_message(outcome(id=f"pbx1:6.{i}")) for i in range(120)))
        await rig.processor.run_pending()
        assert len(rig.fake.portal.statistic) == 120
        batches = [r for r in rig.fake.portal.requests[before:] if r["method"] == "batch"]
        assert len(batches) == 5  # 240 commands, 50 per request (a register stays with its finish)


async def test_a_redelivered_outcome_creates_and_finishes_nothing_twice(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        await rig.outcome(missed(id="pbx1:7.1"))
        await rig.store.db.execute("UPDATE inbox SET state = 'pending' WHERE id = 'pbx1:7.1'")
        await rig.processor.run_pending()
        p = rig.fake.portal
        assert (len(p.contacts), len(p.deals), len(p.tasks), len(p.statistic)) == (1, 0, 2, 1)
        assert rig.backend.duplicates == 1
        assert await rig.inbox_state("pbx1:7.1") == ("done", 0, None)


async def test_a_message_interrupted_after_its_writes_finds_them_instead_of_writing_again(
    tmp_path: Path,
) -> None:
    """What SIGKILL between Bitrix24's answers and the local commit leaves: the message pending
    and in flight, no ledger rows, no CALL_ID kept. The next attempt finds the contact and deal
    by ORIGIN_ID, the tasks by their marker, gets the same CALL_ID from register, and sees the
    finish in the statistics."""
    async with bitrix24_rig(tmp_path) as rig:
        await rig.outcome(NEW)
        await rig.outcome(missed(id="pbx1:8.2", external={"raw": "0501112233", "e164": "+380501112233"}))
        db = rig.store.db
        await db.execute("DELETE FROM crm_effects")
        await db.execute("DELETE FROM crm_links")
        await db.execute("UPDATE inbox SET state = 'pending'")
        await db.execute("INSERT INTO crm_inflight (message_id, since) SELECT id, 'x' FROM inbox")
        await rig.processor.run_pending()
        p = rig.fake.portal
        assert (len(p.contacts), len(p.deals), len(p.tasks), len(p.statistic)) == (2, 1, 2, 2)
        assert await rig.inbox_state("pbx1:1.1") == ("done", 0, None)
        assert await rig.inbox_state("pbx1:8.2") == ("done", 0, None)


async def test_a_refused_command_dead_letters_its_message_with_bitrix24s_reason(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        await rig.outcome(outcome(id="pbx1:9.1", last_handled_by="555", first_answered_by="555"))
        await rig.outcome(outcome(id="pbx1:9.2"))
        state, _, error = await rig.inbox_state("pbx1:9.1")
        assert state == "dead"
        assert error == "telephony.externalCall.register: ERROR_CORE User is not found or is not active"
        assert [c["EXTERNAL_CALL_ID"] for c in rig.fake.portal.statistic] == ["pbx1:9.2"]


async def test_past_the_limit_503_and_429_and_a_502_are_retried_and_each_call_finished_once(
    tmp_path: Path,
) -> None:
    policy = RemotePolicy(rate_per_second=1000, backoff_initial=0.05, backoff_max=0.3, attempts=20)
    async with bitrix24_rig(
        tmp_path, config=TELEPHONY_ONLY, policy=policy, rate_per_second=20, burst=1
    ) as rig:
        rig.fake.faults.operation_limit_next = 2
        rig.fake.faults.fail_next = 1
        await rig.deliver(*(outcome_message(outcome(id=f"pbx1:10.{i}")) for i in range(60)))
        await rig.processor.run_pending()
        p = rig.fake.portal
        assert sorted(c["EXTERNAL_CALL_ID"] for c in p.statistic) == sorted(f"pbx1:10.{i}" for i in range(60))
        statuses = [r.get("status") for r in p.requests]
        assert {429, 502} <= set(statuses)
        assert await rig.inbox.counts() == {"done": 60}


async def test_the_portal_down_leaves_the_work_pending_without_an_attempt_then_finishes_it_once(
    tmp_path: Path,
) -> None:
    policy = RemotePolicy(
        rate_per_second=1000, backoff_initial=0.05, backoff_max=0.1, retry_budget_seconds=0.5
    )
    async with bitrix24_rig(tmp_path, policy=policy) as rig:
        rig.fake.faults.fail_next = 10_000
        await rig.outcome(missed(id="pbx1:11.1"))
        assert await rig.inbox_state("pbx1:11.1") == ("pending", 0, None)
        assert rig.processor.unavailable is not None
        rig.fake.faults.fail_next = 0
        await rig.processor.run_pending()
        p = rig.fake.portal
        assert (len(p.contacts), len(p.tasks), len(p.statistic)) == (1, 2, 1)
        assert await rig.inbox_state("pbx1:11.1") == ("done", 0, None)


async def test_a_steady_stream_at_the_documented_limit_is_never_refused(tmp_path: Path) -> None:
    """2 requests/s drained, 50 deep; the client spends 1.9/s without the burst: no 503 ever."""
    async with bitrix24_rig(
        tmp_path, config=TELEPHONY_ONLY, policy=RemotePolicy(rate_per_second=1.9), rate_per_second=2, burst=50
    ) as rig:
        for round_ in range(3):
            await rig.deliver(*(outcome_message(outcome(id=f"pbx1:12.{round_}.{i}")) for i in range(60)))
            await rig.processor.run_pending()
        assert rig.fake.portal.rejected_for_limit == 0
        assert len(rig.fake.portal.statistic) == 180


async def test_an_application_token_that_expired_is_refreshed_and_the_call_repeated(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        fake = rig.fake
        access, refresh = fake.issue_tokens()
        state = tmp_path / "tokens.json"
        s = Bitrix24Settings(
            auth="oauth",
            portal=fake.url,
            client_id=fake.client_id,
            oauth_url=f"{fake.url}/oauth/token/",
            token_state=str(state),
        )
        tokens = TokenStore(s, Secret(fake.client_secret), Secret(refresh))
        async with RemoteClient(f"{fake.url}/rest/", name="bitrix24") as client:
            api = Bitrix24Api(client, s, tokens)
            users = await api.call("user.get")
            assert len(users) == 3
            async with httpx.AsyncClient() as http:
                await http.post(f"{fake.url}/_fake/faults", json={"expire_tokens": True})
            assert len(await api.call("user.get")) == 3
        assert tokens.refreshes == 2  # the first access token, then the refresh after expiry
        saved = json.loads(state.read_text())
        assert saved["refresh_token"] in fake.refresh_tokens
        assert access not in saved.values()
        assert oct(state.stat().st_mode & 0o777) == "0o600"


async def test_a_local_application_configured_by_files_signs_in_refreshes_and_writes_calls(
    tmp_path: Path,
) -> None:
    """auth = "oauth" end to end through open_bitrix24: the client secret and the first refresh
    token from files, tokens refreshed on expiry and kept in token_state, calls finished."""
    fake = FakeBitrix24(rate_per_second=1000, burst=10_000)
    fake.add_user(7, "Anna", "101")
    fake.add_user(9, "Desk", "100")
    await fake.start()
    _, refresh = fake.issue_tokens()
    (tmp_path / "secret").write_text(fake.client_secret + "\n")
    (tmp_path / "refresh").write_text(refresh + "\n")
    settings = settings_from_toml(
        f"""
[crm]
backend = "bitrix24"
[crm.bitrix24]
auth = "oauth"
portal = "{fake.url}"
client_id = "{fake.client_id}"
client_secret_file = "{tmp_path / "secret"}"
refresh_token_file = "{tmp_path / "refresh"}"
oauth_url = "{fake.url}/oauth/token/"
token_state = "{tmp_path / "tokens.json"}"
default_user = "100"
[crm.bitrix24.lines]
"4930100200" = "office"
"""
    )
    store = await open_store(tmp_path / "adapter.sqlite3")
    moment = at("2018-03-05T13:32:05Z")
    try:
        async with open_bitrix24(store, settings.crm, settings.crm.bitrix24) as backend:
            inbox = Inbox(store)
            processor = Processor(inbox, backend, settings.crm, clock=lambda: moment, hooks=backend)
            await inbox.receive_many([outcome_message(outcome(id="pbx1:o.1"))], moment)
            await processor.run_pending()
            fake.access_tokens = dict.fromkeys(fake.access_tokens, 0.0)  # every access token expires
            await inbox.receive_many([outcome_message(outcome(id="pbx1:o.2"))], moment)
            await processor.run_pending()
    finally:
        await store.close()
        await fake.stop()
    assert sorted(c["EXTERNAL_CALL_ID"] for c in fake.portal.statistic) == ["pbx1:o.1", "pbx1:o.2"]
    assert list(fake.portal.lines) == ["4930100200"]
    assert [r["method"] for r in fake.portal.requests].count("oauth.token") == 2  # first token, then expiry
    saved = json.loads((tmp_path / "tokens.json").read_text())
    assert saved["refresh_token"] in fake.refresh_tokens  # the newest one, unspent


async def test_a_readable_recording_is_attached_with_its_bytes_and_an_unreadable_one_is_skipped(
    tmp_path: Path,
) -> None:
    recording = tmp_path / "pbx1-9.1.wav"
    recording.write_bytes(b"RIFF" + bytes(1000))
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        await rig.outcome(outcome(id="pbx1:13.1", recordings=[str(recording)]))
        await rig.outcome(outcome(id="pbx1:13.2", recordings=[str(tmp_path / "gone.wav")]))
        calls = {c["EXTERNAL_CALL_ID"]: c["CALL_ID"] for c in rig.fake.portal.statistic}
        assert sorted(calls) == ["pbx1:13.1", "pbx1:13.2"]
        records = rig.fake.portal.records
        assert list(records) == [calls["pbx1:13.1"]]
        assert (records[calls["pbx1:13.1"]]["FILENAME"], records[calls["pbx1:13.1"]]["SIZE"]) == (
            "pbx1-9.1.wav",
            1004,
        )
        assert await rig.inbox_state("pbx1:13.2") == ("done", 0, None)


async def test_tasks_meeting_an_expired_token_together_refresh_it_once(tmp_path: Path) -> None:
    """The directory feed and the processor share one token pair: a refresh token is good for
    one use, so concurrent expiries must not spend it twice (the second would be refused)."""
    fake = FakeBitrix24(rate_per_second=1000, burst=10_000)
    fake.add_user(7, "Anna", "101")
    await fake.start()
    try:
        _, refresh = fake.issue_tokens()
        s = Bitrix24Settings(
            auth="oauth",
            portal=fake.url,
            client_id=fake.client_id,
            oauth_url=f"{fake.url}/oauth/token/",
            token_state=str(tmp_path / "tokens.json"),
        )
        tokens = TokenStore(s, Secret(fake.client_secret), Secret(refresh))
        async with RemoteClient(f"{fake.url}/rest/", name="bitrix24") as client:
            api = Bitrix24Api(client, s, tokens)
            await api.call("user.get")
            fake.access_tokens = dict.fromkeys(fake.access_tokens, 0.0)
            answers = await asyncio.gather(*(api.call("user.get") for _ in range(5)))
        assert all(len(a) == 1 for a in answers)
        assert tokens.refreshes == 2  # the first token, then one refresh for all five
    finally:
        await fake.stop()


async def test_each_agent_a_group_call_rings_sees_the_card_and_the_others_lose_it_when_one_answers(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path, config=TELEPHONY_ONLY) as rig:
        call = "pbx1:14.1"
        rings = [
            event(call_id=call, seq=1, type="ringing", time="2018-03-05T13:29:52Z", agent="101"),
            event(call_id=call, seq=2, type="ringing", time="2018-03-05T13:29:52Z", agent="102"),
        ]
        await rig.deliver(*(event_message(r) for r in rings))  # one batch: show rides with register
        await rig.processor.run_pending()
        [registered] = rig.fake.portal.registered.values()
        assert registered["SHOWN_TO"] == [7, 8]
        await rig.deliver(
            event_message(
                event(call_id=call, seq=3, type="answered", time="2018-03-05T13:30:05Z", agent="102")
            )
        )
        await rig.processor.run_pending()
        assert registered["SHOWN_TO"] == [8]
        again = event(call_id=call, seq=4, type="ringing", time="2018-03-05T13:29:52Z", agent="102")
        await rig.deliver(event_message(again))
        await rig.processor.run_pending()
        assert rig.commands("telephony.externalCall.show") == 1  # 102 was shown the card already
        await rig.outcome(outcome(id=call, last_handled_by="102", first_answered_by="102"))
        [finished] = rig.fake.portal.statistic
        assert (finished["CALL_ID"], finished["PORTAL_USER_ID"]) == (registered["CALL_ID"], 8)


async def test_configured_lines_are_added_once_whatever_the_restarts(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        await rig.backend.register_lines()  # a restart: the line is there already
        assert list(rig.fake.portal.lines) == ["4930100200"]
        assert rig.commands("telephony.externalLine.add") == 1
