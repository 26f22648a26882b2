"""Contract tests of the fake Bitrix24: the documented examples, sent as the REST docs send them.

Requests and expected answers come from the official REST documentation (bitrix24/b24restdocs:
telephony-external-call-register/finish/attach-record.md, how-to-call-rest-api/batch.md,
_includes/system-errors.md, limits.md), sent over real HTTP on 127.0.0.1 to an inbound webhook
URL or with an application's `auth` token. If the fake drifts from the documented API, these
fail, and so would the backend tested against it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pbxlab.fakes.bitrix24 import BURST, FakeBitrix24

# The documentation's own example values.
DOC_USER = 1269
DOC_PHONE = "79062195047"
DOC_EXTERNAL = "asterisk-1710140185.18441"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBitrix24]:
    portal = FakeBitrix24(webhooks={1: "k3y"}, rate_per_second=1000, burst=10_000)
    portal.add_user(1, "Admin", "100")
    portal.add_user(DOC_USER, "Doc", "555")
    await portal.start()
    yield portal
    await portal.stop()


@pytest.fixture
async def hook(fake: FakeBitrix24) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.webhook_url()) as client:
        yield client


async def call(client: httpx.AsyncClient, method: str, params: dict[str, Any]) -> httpx.Response:
    return await client.post(method, json=params)


def register_example(contact_id: int) -> dict[str, Any]:
    return {
        "USER_ID": DOC_USER,
        "PHONE_NUMBER": DOC_PHONE,
        "TYPE": 2,
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": contact_id,
        "SHOW": 1,
        "LINE_NUMBER": "3",
        "EXTERNAL_CALL_ID": DOC_EXTERNAL,
    }


async def test_the_documented_register_answers_a_call_id_and_the_entity_in_result_with_time(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    contact = fake.add_contact("Ivan", [DOC_PHONE])
    answer = await call(hook, "telephony.externalCall.register", register_example(contact))
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"result", "time"}
    assert body["result"]["CALL_ID"].startswith("externalCall.")
    assert body["result"]["CRM_ENTITY_TYPE"] == "CONTACT"
    assert body["result"]["CRM_ENTITY_ID"] == contact
    assert body["result"]["CRM_CREATED_ENTITIES"] == []
    assert {"start", "finish", "duration", "operating_reset_at", "operating"} <= set(body["time"])


async def test_registering_the_same_external_call_again_returns_the_same_call_id(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    contact = fake.add_contact("Ivan", [DOC_PHONE])
    first = (await call(hook, "telephony.externalCall.register", register_example(contact))).json()
    again = (await call(hook, "telephony.externalCall.register", register_example(contact))).json()
    other = (
        await call(
            hook,
            "telephony.externalCall.register",
            {**register_example(contact), "EXTERNAL_CALL_ID": "asterisk-2"},
        )
    ).json()
    assert again["result"]["CALL_ID"] == first["result"]["CALL_ID"]
    assert other["result"]["CALL_ID"] != first["result"]["CALL_ID"]


async def test_the_documented_finish_records_the_call_in_the_statistics_once(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    contact = fake.add_contact("Ivan", [DOC_PHONE])
    call_id = (await call(hook, "telephony.externalCall.register", register_example(contact))).json()[
        "result"
    ]["CALL_ID"]
    finish = {
        "CALL_ID": call_id,
        "USER_ID": DOC_USER,
        "DURATION": 95,
        "STATUS_CODE": "200",
        "VOTE": 5,
        "ADD_TO_CHAT": 0,
    }
    answer = await call(hook, "telephony.externalCall.finish", finish)
    assert answer.status_code == 200
    result = answer.json()["result"]
    assert (
        result["CALL_ID"],
        result["CALL_DURATION"],
        result["CALL_STATUS"],
        result["CALL_FAILED_CODE"],
    ) == (
        call_id,
        95,
        1,
        "200",
    )
    assert result["PORTAL_NUMBER"] == "3"
    assert result["INCOMING"] == "2"
    assert result["CRM_ENTITY_TYPE"] == "CONTACT"
    assert result["CRM_ENTITY_ID"] == contact
    again = await call(hook, "telephony.externalCall.finish", finish)
    assert again.status_code == 400
    assert again.json() == {
        "error": "ERROR_CORE",
        "error_description": "Call is not found (call should be registered prior to finishing)",
    }
    stats = (await call(hook, "voximplant.statistic.get", {"FILTER": {"CALL_ID": call_id}})).json()
    assert [row["CALL_ID"] for row in stats["result"]] == [call_id]


async def test_finish_without_duration_defaults_to_missed_304(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    registered = await call(
        hook,
        "telephony.externalCall.register",
        {"USER_PHONE_INNER": "555", "PHONE_NUMBER": "380501112233", "TYPE": 2},
    )
    call_id = registered.json()["result"]["CALL_ID"]
    result = (
        await call(hook, "telephony.externalCall.finish", {"CALL_ID": call_id, "USER_PHONE_INNER": "555"})
    ).json()
    assert (result["result"]["CALL_FAILED_CODE"], result["result"]["CALL_STATUS"]) == ("304", 0)


async def test_the_documented_attach_record_needs_a_finished_call_and_answers_a_file_id(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    call_id = (
        await call(
            hook, "telephony.externalCall.register", {"USER_ID": 1, "PHONE_NUMBER": DOC_PHONE, "TYPE": 1}
        )
    ).json()["result"]["CALL_ID"]
    record = {
        "CALL_ID": call_id,
        "FILENAME": "call-001.mp3",
        "FILE_CONTENT": base64.b64encode(b"ID3....").decode(),
    }
    early = await call(hook, "telephony.externalCall.attachRecord", record)
    assert early.status_code == 400
    assert early.json()["error_description"] == (
        "Call is not found in the statistic table. It looks like it is not finished yet."
    )
    await call(hook, "telephony.externalCall.finish", {"CALL_ID": call_id, "USER_ID": 1, "DURATION": 3})
    answer = await call(hook, "telephony.externalCall.attachRecord", record)
    assert answer.status_code == 200
    assert isinstance(answer.json()["result"]["FILE_ID"], int)
    wrong = await call(hook, "telephony.externalCall.attachRecord", {**record, "FILENAME": "call.ogg"})
    assert wrong.json() == {
        "error": "ERROR_CORE",
        "error_description": "Wrong file extension. Only wav and mp3 are allowed",
    }
    only_name = await call(
        hook, "telephony.externalCall.attachRecord", {"CALL_ID": call_id, "FILENAME": "c.wav"}
    )
    assert set(only_name.json()["result"]) == {"uploadUrl", "fieldName"}


async def test_register_errors_are_the_documented_error_shape(hook: httpx.AsyncClient) -> None:
    no_user = await call(hook, "telephony.externalCall.register", {"PHONE_NUMBER": DOC_PHONE, "TYPE": 2})
    assert no_user.status_code == 400
    assert no_user.json() == {
        "error": "ERROR_CORE",
        "error_description": "USER_ID or USER_PHONE_INNER should be set",
    }
    bad_type = await call(
        hook, "telephony.externalCall.register", {"USER_ID": 1, "PHONE_NUMBER": DOC_PHONE, "TYPE": 9}
    )
    assert bad_type.json()["error_description"] == "Unknown TYPE"
    bad_date = await call(
        hook,
        "telephony.externalCall.register",
        {"USER_ID": 1, "PHONE_NUMBER": DOC_PHONE, "TYPE": 2, "CALL_START_DATE": "yesterday"},
    )
    assert bad_date.json()["error_description"] == "CALL_START_DATE should be in the ISO-8601 format"


async def test_the_documented_batch_runs_commands_in_order_with_result_references(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    body: dict[str, Any] = {
        "halt": 0,
        "cmd": {
            "reg": f"telephony.externalCall.register?USER_ID=1&PHONE_NUMBER={DOC_PHONE}"
            "&TYPE=2&EXTERNAL_CALL_ID=x1",
            "fin": "telephony.externalCall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=1&DURATION=12",
            "bad": "telephony.externalCall.finish?CALL_ID=nope&USER_ID=1",
            "users": "user.get?FILTER[UF_PHONE_INNER]=555",
        },
    }
    answer = await hook.post("batch", json=body)
    assert answer.status_code == 200
    result = answer.json()["result"]
    assert set(result) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert result["result"]["fin"]["CALL_ID"] == result["result"]["reg"]["CALL_ID"]
    assert result["result"]["users"][0]["ID"] == str(DOC_USER)
    assert result["result_error"] == {
        "bad": {
            "error": "ERROR_CORE",
            "error_description": "Call is not found (call should be registered prior to finishing)",
        }
    }
    assert result["result_total"] == {"users": 1}
    # halt=1 stops at the first error (a new physical call, else register answers the finished one)
    commands = {**body["cmd"], "reg": body["cmd"]["reg"].replace("x1", "x2")}
    halted = (await hook.post("batch", json={"halt": 1, "cmd": commands})).json()["result"]
    assert set(halted["result"]) == {"reg", "fin"}
    assert set(halted["result_error"]) == {"bad"}


async def test_a_batch_refuses_more_than_fifty_commands_and_nesting(hook: httpx.AsyncClient) -> None:
    many = {"cmd": {f"c{i}": "user.get" for i in range(51)}}
    assert (await hook.post("batch", json=many)).json()["error"] == "ERROR_CORE"
    nested = (await hook.post("batch", json={"cmd": {"inner": "batch?cmd[a]=user.get"}})).json()
    assert nested["result"]["result_error"]["inner"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


async def test_form_encoded_parameters_in_php_bracket_notation_are_read(hook: httpx.AsyncClient) -> None:
    answer = await hook.post(
        "crm.contact.add.json",
        data={
            "fields[NAME]": "Olga",
            "fields[PHONE][0][VALUE]": "+380 50 111 2233",
            "fields[PHONE][0][VALUE_TYPE]": "WORK",
        },
    )
    contact_id = answer.json()["result"]
    found = (
        await call(hook, "crm.duplicate.findbycomm", {"type": "PHONE", "values": ["380501112233"]})
    ).json()
    assert found["result"] == {"CONTACT": [contact_id]}
    nothing = (
        await call(hook, "crm.duplicate.findbycomm", {"type": "PHONE", "values": ["380999999999"]})
    ).json()
    assert nothing["result"] == []


async def test_system_errors_for_method_and_credentials(fake: FakeBitrix24, hook: httpx.AsyncClient) -> None:
    missing = await call(hook, "no.such.method", {})
    assert (missing.status_code, missing.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    async with httpx.AsyncClient(base_url=fake.webhook_url(1, "wrong")) as wrong:
        refused = await call(wrong, "user.get", {})
    assert (refused.status_code, refused.json()["error"]) == (401, "INVALID_CREDENTIALS")


async def test_past_the_burst_the_leaky_bucket_answers_503_query_limit_exceeded() -> None:
    portal = FakeBitrix24(webhooks={1: "k"}, rate_per_second=2, burst=BURST)
    portal.add_user(1, "Admin", "100")
    await portal.start()
    try:
        async with httpx.AsyncClient(base_url=portal.webhook_url()) as client:
            statuses = [(await client.post("user.get", json={})).status_code for _ in range(BURST + 5)]
            refused = await client.post("user.get", json={})
    finally:
        await portal.stop()
    assert statuses.count(200) >= BURST
    assert 503 in statuses
    assert refused.status_code == 503
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    assert portal.portal.rejected_for_limit >= 2


async def test_an_application_token_expires_and_is_refreshed_once(fake: FakeBitrix24) -> None:
    access, refresh = fake.issue_tokens()
    async with httpx.AsyncClient(base_url=f"{fake.url}/rest/") as app:
        ok = await app.post("user.get", json={"auth": access})
        assert ok.status_code == 200
        none = await app.post("user.get", json={})
        assert (none.status_code, none.json()["error"]) == (401, "NO_AUTH_FOUND")
        await app.post(f"{fake.url}/_fake/faults", json={"expire_tokens": True})
        expired = await app.post("user.get", json={"auth": access})
        assert (expired.status_code, expired.json()["error"]) == (401, "expired_token")
        grant = {
            "grant_type": "refresh_token",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        }
        tokens = (
            await app.get(f"{fake.url}/oauth/token/", params={**grant, "refresh_token": refresh})
        ).json()
        assert (await app.post("user.get", json={"auth": tokens["access_token"]})).status_code == 200
        reused = await app.get(f"{fake.url}/oauth/token/", params={**grant, "refresh_token": refresh})
        assert reused.json()["error"] == "invalid_grant"


async def test_tasks_and_deals_carry_their_crm_bindings(hook: httpx.AsyncClient, fake: FakeBitrix24) -> None:
    contact = fake.add_contact("Ivan", [DOC_PHONE])
    deal = (await call(hook, "crm.deal.add", {"fields": {"TITLE": "Deal", "CONTACT_ID": contact}})).json()[
        "result"
    ]
    task = await call(
        hook,
        "tasks.task.add",
        {"fields": {"TITLE": "Пропущенный звонок", "RESPONSIBLE_ID": DOC_USER, "UF_CRM_TASK": [f"D_{deal}"]}},
    )
    assert task.json()["result"]["task"]["ufCrmTask"] == [f"D_{deal}"]
    open_deals = (
        await call(hook, "crm.deal.list", {"filter": {"CONTACT_ID": contact, "CLOSED": "N"}})
    ).json()
    assert [int(d["ID"]) for d in open_deals["result"]] == [deal]
    no_user = await call(hook, "tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 999}})
    assert no_user.json()["error"] == "ERROR_CORE"


async def test_the_documented_show_answers_true_for_an_open_call_and_false_otherwise(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    registered = await call(
        hook, "telephony.externalCall.register", {"USER_ID": 1, "PHONE_NUMBER": DOC_PHONE, "TYPE": 2}
    )
    call_id = registered.json()["result"]["CALL_ID"]
    shown = await call(hook, "telephony.externalCall.show", {"CALL_ID": call_id, "USER_ID": DOC_USER})
    assert shown.json()["result"] is True
    assert fake.portal.registered[call_id]["SHOWN_TO"] == [1, DOC_USER]
    hidden = await call(hook, "telephony.externalCall.hide", {"CALL_ID": call_id, "USER_ID": [1]})
    assert hidden.json()["result"] is True
    assert fake.portal.registered[call_id]["SHOWN_TO"] == [DOC_USER]
    unknown = await call(hook, "telephony.externalCall.show", {"CALL_ID": "externalCall.nope", "USER_ID": 1})
    assert unknown.json()["result"] is False


async def test_the_documented_findbycomm_answers_ids_by_type_and_its_documented_errors(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    first = fake.add_contact("A", ["8976543"])
    second = fake.add_contact("B", ["11223355"])
    example = {"entity_type": "CONTACT", "type": "PHONE", "values": ["8976543", "11223355"]}
    answer = await call(hook, "crm.duplicate.findbycomm", example)
    assert answer.json()["result"] == {"CONTACT": [first, second]}
    no_type = await call(hook, "crm.duplicate.findbycomm", {"values": ["8976543"]})
    assert no_type.status_code == 400
    assert no_type.json() == {
        "error": "Communication type is not defined",
        "error_description": "Parameter 'type' is required.",
    }


async def test_the_documented_external_line_add_answers_its_id_and_refuses_a_second_one(
    hook: httpx.AsyncClient,
) -> None:
    example = {"NUMBER": "14151234567", "NAME": "Main External Line", "CRM_AUTO_CREATE": "Y"}
    answer = await call(hook, "telephony.externalLine.add", example)
    assert isinstance(answer.json()["result"]["ID"], int)
    again = await call(hook, "telephony.externalLine.add", example)
    assert again.json() == {"error": "ERROR_CORE", "error_description": "Line already exists"}
    lines = (await call(hook, "telephony.externalLine.get", {})).json()["result"]
    assert lines == [{"NUMBER": "14151234567", "NAME": "Main External Line"}]


async def test_the_documented_company_list_pages_by_start_with_total_and_next(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    ids = [fake.add_company(f"Company {n}", [f"+38050111{n:04d}"], assigned=DOC_USER) for n in range(51)]
    query = {
        "order": {"ID": "ASC"},
        "select": ["ID", "TITLE", "PHONE"],
        "filter": {"ASSIGNED_BY_ID": DOC_USER},
    }
    first = (await call(hook, "crm.company.list", query)).json()
    assert (first["total"], first["next"], len(first["result"])) == (51, 50, 50)
    assert set(first["result"][0]) == {"ID", "TITLE", "PHONE"}
    [phone] = first["result"][0]["PHONE"]
    assert (phone["VALUE"], phone["VALUE_TYPE"], phone["TYPE_ID"]) == ("+380501110000", "WORK", "PHONE")
    last = (await call(hook, "crm.company.list", {**query, "start": first["next"]})).json()
    assert [int(c["ID"]) for c in last["result"]] == ids[50:]
    assert "next" not in last
    assert last["total"] == 51


async def test_the_documented_lead_list_filters_by_date_modify_and_tells_closed_leads(
    hook: httpx.AsyncClient, fake: FakeBitrix24
) -> None:
    old = fake.add_lead("Old lead", ["0501110001"])
    fake.portal.leads[old]["DATE_MODIFY"] = "2026-01-01T10:00:00+03:00"
    fresh = fake.add_lead("Fresh lead", ["0501110002"], semantic="F")
    answer = (
        await call(
            hook,
            "crm.lead.list",
            {"filter": {">DATE_MODIFY": "2026-06-01T00:00:00+03:00"}, "select": ["ID", "STATUS_SEMANTIC_ID"]},
        )
    ).json()
    assert answer["result"] == [{"ID": fresh, "STATUS_SEMANTIC_ID": "F"}]
    assert answer["total"] == 1
