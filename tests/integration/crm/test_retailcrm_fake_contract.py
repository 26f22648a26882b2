"""Contract tests of the fake RetailCRM: the documented examples, sent as the API documents them.

The requests and expected answers come from the official client's fixtures
(retailcrm/api-client-php tests: TelephonyTest, TasksTest, ErrorTest) and the API rules page,
sent over real HTTP on 127.0.0.1 with form fields holding JSON. If the fake drifts from the
documented API, these fail, and so would any backend tested against it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pbxlab.fakes.retailcrm import FakeRetailCrm

KEY = "documented-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeRetailCrm]:
    crm = FakeRetailCrm(KEY, rate_limit=1000, sites=("aliexpress",), users={27: {"first_name": "John"}})
    await crm.start()
    yield crm
    await crm.stop()


@pytest.fixture
async def http(fake: FakeRetailCrm) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, headers={"X-API-KEY": KEY}) as client:
        yield client


def form(**fields: Any) -> dict[str, str]:
    """The documented encoding: structured fields are JSON text inside a urlencoded form."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}


async def test_the_documented_call_event_is_accepted(http: httpx.AsyncClient, fake: FakeRetailCrm) -> None:
    event = {"site": "aliexpress", "type": "in", "phone": "88005553125", "userIds": [27]}
    response = await http.post("/api/v5/telephony/call/event", data=form(event=event))
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert fake.state.events == [event]


async def test_the_documented_calls_upload_reports_one_processed_and_drops_a_repeated_external_id(
    http: httpx.AsyncClient, fake: FakeRetailCrm
) -> None:
    call = {
        "externalId": "test_call_external_id",
        "date": "2021-03-05 12:35:29",
        "type": "in",
        "phone": "88005553125",
        "userId": 27,
        "result": "answered",
        "duration": 60,
        "durationWaiting": 10,
        "recordUrl": "https://examle.com/test.mp3",
        "site": "aliexpress",
    }
    first = await http.post("/api/v5/telephony/calls/upload", data=form(calls=[call]))
    assert first.json() == {"success": True, "processedCallsCount": 1}
    again = await http.post("/api/v5/telephony/calls/upload", data=form(calls=[call]))
    assert again.json() == {
        "success": True,
        "processedCallsCount": 0,
        "duplicateCalls": ["test_call_external_id"],
    }
    assert len(fake.state.calls) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("result", "missed"), ("type", "hangup"), ("date", "2021-03-05T12:35:29Z"), ("phone", "")],
)
async def test_a_call_outside_the_documented_enums_and_formats_is_a_400_naming_the_field(
    http: httpx.AsyncClient, fake: FakeRetailCrm, field: str, value: str
) -> None:
    call = {"date": "2021-03-05 12:35:29", "type": "in", "phone": "88005553125", "result": "answered"}
    call[field] = value
    response = await http.post("/api/v5/telephony/calls/upload", data=form(calls=[call]))
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["errorMsg"]
    assert f"calls[0][{field}]" in body["errors"]
    assert fake.state.calls == []


async def test_a_hangup_status_outside_the_documented_enum_is_rejected(http: httpx.AsyncClient) -> None:
    event = {
        "type": "hangup",
        "phone": "88005553125",
        "hangupStatus": "no answer",
    }  # the call enum, not this one
    response = await http.post("/api/v5/telephony/call/event", data=form(event=event))
    assert response.status_code == 400
    assert "hangupStatus" in response.json()["errors"]


async def test_a_wrong_api_key_is_a_403_with_the_documented_message(fake: FakeRetailCrm) -> None:
    async with httpx.AsyncClient(base_url=fake.url, headers={"X-API-KEY": "wrong"}) as client:
        response = await client.get("/api/v5/customers")
    assert response.status_code == 403
    assert response.json() == {"success": False, "errorMsg": 'Wrong "apiKey" value.'}


async def test_the_api_key_may_come_as_the_apikey_query_parameter(fake: FakeRetailCrm) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        response = await client.get("/api/v5/customers", params={"apiKey": KEY})
    assert response.status_code == 200
    assert response.json()["pagination"]["limit"] == 20


async def test_json_instead_of_a_form_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v5/telephony/call/event", json={"event": {"type": "in", "phone": "1"}})
    assert response.status_code == 400
    assert response.json()["success"] is False


async def test_the_documented_task_create_answers_201_with_the_id(
    http: httpx.AsyncClient, fake: FakeRetailCrm
) -> None:
    task = {
        "text": "Test task #1",
        "performerId": 27,
        "customer": {"externalId": "ru1067815391", "site": "aliexpress"},
    }
    response = await http.post("/api/v5/tasks/create", data=form(task=task, site="aliexpress"))
    assert response.status_code == 201
    assert response.json() == {"success": True, "id": 1}
    listed = await http.get("/api/v5/tasks", params={"filter[performers][]": "27"})
    [stored] = listed.json()["tasks"]
    assert stored["text"] == "Test task #1"
    assert stored["performer"] == 27
    assert stored["performerType"] == "user"


async def test_a_task_without_a_performer_is_a_400_with_errors(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v5/tasks/create", data=form(task={"text": "x"}))
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"performerId"}


async def test_the_documented_manager_lookup_returns_manager_customer_and_links(
    http: httpx.AsyncClient, fake: FakeRetailCrm
) -> None:
    await http.post(
        "/api/v5/integration-modules/pbxlink/edit",
        data=form(
            integrationModule={
                "code": "pbxlink",
                "integrationCode": "pbxlink",
                "name": "pbxlink",
                "active": True,
                "integrations": {"telephony": {"additionalCodes": [{"userId": 27, "code": "12"}]}},
            }
        ),
    )
    fake.add_customer("John", ["88005553125"], manager_id=27)
    response = await http.get(
        "/api/v5/telephony/manager", params={"phone": "88005553125", "details": "1", "ignoreStatus": "1"}
    )
    body = response.json()
    assert body["success"] is True
    assert body["manager"]["id"] == 27
    assert body["manager"]["code"] == "12"
    assert body["customer"]["phones"] == [{"number": "88005553125"}]
    assert set(body["links"]) >= {"newOrderLink", "newCustomerLink", "customerLink"}


async def test_a_busy_manager_is_not_returned_unless_status_is_ignored(
    http: httpx.AsyncClient, fake: FakeRetailCrm
) -> None:
    fake.add_user(28, "Busy", status="busy")
    fake.add_customer("Jane", ["380501110001"], manager_id=28)
    respected = await http.get(
        "/api/v5/telephony/manager", params={"phone": "380501110001", "ignoreStatus": "0"}
    )
    ignored = await http.get(
        "/api/v5/telephony/manager", params={"phone": "380501110001", "ignoreStatus": "1"}
    )
    assert "manager" not in respected.json()
    assert ignored.json()["manager"]["id"] == 28


async def test_customer_search_matches_the_digits_as_typed_only(
    http: httpx.AsyncClient, fake: FakeRetailCrm
) -> None:
    """The seed's warning: a number typed as 098… is not found by 38098… (no full match)."""
    fake.add_customer("Typed by hand", ["098 123 45 67"])
    national = await http.get("/api/v5/customers", params={"filter[name]": "0981234567"})
    international = await http.get("/api/v5/customers", params={"filter[name]": "380981234567"})
    assert [c["firstName"] for c in national.json()["customers"]] == ["Typed by hand"]
    assert international.json()["customers"] == []


async def test_a_second_customer_with_the_same_external_id_is_refused(http: httpx.AsyncClient) -> None:
    customer = {"externalId": "pbx-1", "firstName": "A", "phones": [{"number": "+380501110001"}]}
    first = await http.post("/api/v5/customers/create", data=form(customer=customer))
    second = await http.post("/api/v5/customers/create", data=form(customer=customer))
    assert first.status_code == 201
    assert second.status_code == 400
    assert second.json()["errorMsg"] == "Customer already exists."


async def test_an_order_in_an_unknown_status_is_a_400_naming_status(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v5/orders/create", data=form(order={"status": "no-such-status"}))
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"status"}


async def test_past_the_rate_limit_the_answer_is_503_without_json(fake: FakeRetailCrm) -> None:
    limited = FakeRetailCrm(KEY, rate_limit=3)
    await limited.start()
    try:
        async with httpx.AsyncClient(base_url=limited.url, headers={"X-API-KEY": KEY}) as client:
            statuses = [(await client.get("/api/v5/customers")).status_code for _ in range(5)]
            last = await client.get("/api/v5/customers")
    finally:
        await limited.stop()
    assert statuses[:3] == [200, 200, 200]
    assert 503 in statuses[3:]
    if last.status_code == 503:
        with pytest.raises(ValueError):  # noqa: PT011 - the body is HTML, not JSON
            last.json()


async def test_an_unknown_user_in_additional_codes_is_refused(http: httpx.AsyncClient) -> None:
    module = {
        "code": "pbxlink",
        "integrationCode": "pbxlink",
        "name": "pbxlink",
        "integrations": {"telephony": {"additionalCodes": [{"userId": 999, "code": "101"}]}},
    }
    response = await http.post(
        "/api/v5/integration-modules/pbxlink/edit", data=form(integrationModule=module)
    )
    assert response.status_code == 400
    assert "integrations[telephony][additionalCodes][0][userId]" in response.json()["errors"]
