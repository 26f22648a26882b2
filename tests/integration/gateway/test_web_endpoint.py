"""The web form endpoint on loopback (real aiohttp server, real SQLite file): POST /v1/requests/{source}."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pbxlink.foundation.config import Secret
from pbxlink.gateway.config import GatewaySettings, Settings, WebSource
from pbxlink.gateway.intake import Intake
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.store import GatewayStore, open_store
from pbxlink.gateway.web import WebEndpoint
from pbxlink.toolkit.metrics import sample
from pbxlink.wire.codec import decode_envelope
from pbxlink.wire.model import Request

TOKEN = "form-token-1"
HMAC_KEY = "hmac-key-1"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[tuple[str, GatewayStore, Intake, Clock]]:
    sources = {
        "site": WebSource(
            token=Secret(TOKEN), origins=("https://shop.example",), rate_per_minute=60, rate_burst=3
        ),
        "partner": WebSource(hmac_secret=Secret(HMAC_KEY)),
    }
    settings = Settings(gateway=GatewaySettings(name="gw1", web=sources, max_message_bytes=4096))
    store = await open_store(tmp_path / "gateway.sqlite3")
    clock = Clock()
    intake = Intake(
        store,
        settings,
        GatewayMetrics(),
        monotonic=clock,
        clock=lambda: datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
    )
    runner = web.AppRunner(WebEndpoint(sources, intake).app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", store, intake, clock
    finally:
        await runner.cleanup()
        await store.close()


async def post(url: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
        body = await response.json(content_type=None) if response.status != 204 else {}
        return response.status, body, dict(response.headers)


async def test_json_form_with_token_is_stored_then_answered_202(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    status, body, _ = await post(
        f"{base}/v1/requests/site",
        json={
            "name": "Ольга",
            "phone": "+380 98 123 45 67",
            "subject": "Диван",
            "message": "Хочу купить",
            "product": "sofa-3",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 202
    [row] = await store.pending()
    assert row.id == body["id"]
    assert row.topic == "pbxlink/v1/crm/request"
    envelope = decode_envelope(row.payload)
    request = envelope.body
    assert isinstance(request, Request)
    assert envelope.node == "gw1"
    assert request.source == "web:site"
    assert request.channel.value == "web"
    assert request.sender.name == "Ольга"
    assert request.sender.phone == "+380 98 123 45 67"
    assert request.subject == "Диван"
    assert request.body == "Хочу купить\nproduct: sofa-3"


async def test_form_encoded_post_with_token_field_is_accepted(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    status, _, _ = await post(
        f"{base}/v1/requests/site",
        data={"token": TOKEN, "email": "visitor@example.org", "message": "перезвоните"},
    )
    assert status == 202
    [row] = await store.pending()
    request = decode_envelope(row.payload).body
    assert isinstance(request, Request)
    assert request.sender.email == "visitor@example.org"
    assert request.body == "перезвоните"


async def test_invalid_form_gets_400_listing_every_problem(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    status, body, _ = await post(
        f"{base}/v1/requests/site",
        json={"email": "not-an-address", "phone": "call me", "message": ""},
        headers={"X-Pbxlink-Token": TOKEN},
    )
    assert status == 400
    fields = {p["field"] for p in body["problems"]}
    assert fields == {"email", "phone", "message"}
    assert await store.pending() == []


async def test_missing_contact_is_a_problem(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, _, _, _ = endpoint
    status, body, _ = await post(
        f"{base}/v1/requests/site", json={"name": "x", "message": "hi"}, headers={"X-Pbxlink-Token": TOKEN}
    )
    assert status == 400
    assert body["problems"] == [
        {"field": "phone", "problem": "give a phone or an e-mail, so the request can be answered"}
    ]


async def test_wrong_or_missing_token_is_401_and_nothing_is_stored(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, _, _ = await post(
            f"{base}/v1/requests/site", json={"phone": "0981234567", "message": "x"}, headers=headers
        )
        assert status == 401
    assert await store.pending() == []


async def test_hmac_signature_of_the_raw_body_authenticates(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    raw = json.dumps({"email": "p@partner.example", "subject": "lead", "message": "from partner"}).encode()
    good = hmac.new(HMAC_KEY.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Pbxlink-Signature": f"sha256={good}"}
    assert (await post(f"{base}/v1/requests/partner", data=raw, headers=headers))[0] == 202
    tampered = raw.replace(b'partner"}', b'partner!"}')
    assert (await post(f"{base}/v1/requests/partner", data=tampered, headers=headers))[0] == 401
    assert len(await store.pending()) == 1


async def test_unknown_source_is_404(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, _, _, _ = endpoint
    status, _, _ = await post(f"{base}/v1/requests/nope", json={}, headers={"X-Pbxlink-Token": TOKEN})
    assert status == 404


async def test_rate_limit_per_source_answers_429_with_retry_after(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, intake, clock = endpoint
    form = {"phone": "0981234567", "message": "x"}
    statuses = [
        (await post(f"{base}/v1/requests/site", json=form, headers={"X-Pbxlink-Token": TOKEN}))[0]
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    status, _, headers = await post(f"{base}/v1/requests/site", json=form, headers={"X-Pbxlink-Token": TOKEN})
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    clock.t += 1.0  # 60/min: one more token after a second
    assert (await post(f"{base}/v1/requests/site", json=form, headers={"X-Pbxlink-Token": TOKEN}))[0] == 202
    # another source has its own budget
    raw = json.dumps(form).encode()
    sig = hmac.new(HMAC_KEY.encode(), raw, hashlib.sha256).hexdigest()
    assert (
        await post(
            f"{base}/v1/requests/partner",
            data=raw,
            headers={"Content-Type": "application/json", "X-Pbxlink-Signature": f"sha256={sig}"},
        )
    )[0] == 202
    assert len(await store.pending()) == 5
    assert (
        sample(intake.metrics.registry, "pbxlink_gateway_web_responses_total", source="site", status="429")
        == 2
    )


async def test_cors_preflight_and_post_only_for_the_sources_origins(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    async with aiohttp.ClientSession() as session:
        async with session.options(
            f"{base}/v1/requests/site",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
        async with session.options(
            f"{base}/v1/requests/site", headers={"Origin": "https://evil.example"}
        ) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
    status, _, headers = await post(
        f"{base}/v1/requests/site",
        data={"token": TOKEN, "phone": "0981234567", "message": "x"},
        headers={"Origin": "https://shop.example"},
    )
    assert status == 202
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example"
    status, _, _ = await post(
        f"{base}/v1/requests/site",
        data={"token": TOKEN, "phone": "0981234567", "message": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert status == 403
    assert len(await store.pending()) == 1


async def test_same_idempotency_key_is_one_request(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    headers = {"X-Pbxlink-Token": TOKEN, "Idempotency-Key": "order-form-42"}
    first = await post(
        f"{base}/v1/requests/site", json={"phone": "0981234567", "message": "x"}, headers=headers
    )
    again = await post(
        f"{base}/v1/requests/site", json={"phone": "0981234567", "message": "x"}, headers=headers
    )
    assert first[0] == again[0] == 202
    assert first[1]["id"] == again[1]["id"]
    assert again[1]["duplicate"] is True
    assert len(await store.pending()) == 1


async def test_body_over_the_cap_is_413(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    status, _, _ = await post(
        f"{base}/v1/requests/site",
        json={"phone": "0981234567", "message": "x" * 5000},
        headers={"X-Pbxlink-Token": TOKEN},
    )
    assert status == 413
    assert await store.pending() == []


async def test_invalid_utf8_is_400_and_a_dead_letter(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, intake, _ = endpoint
    status, body, _ = await post(
        f"{base}/v1/requests/site",
        data=b'{"phone": "0981234567", "message": "\xff\xfe"}',
        headers={"Content-Type": "application/json", "X-Pbxlink-Token": TOKEN},
    )
    assert status == 400
    assert body["problems"][0]["field"] == "body"
    [row] = await store.pending()
    assert row.topic == "pbxlink/v1/gateway/deadletter"
    letter = json.loads(row.payload)
    assert letter["kind"] == "invalid_utf8"
    assert letter["payload_hex"] is not None
    assert (
        sample(
            intake.metrics.registry,
            "pbxlink_gateway_dead_letters_total",
            source="web:site",
            kind="invalid_utf8",
        )
        == 1
    )


async def test_a_lone_surrogate_escape_in_json_is_a_problem_not_a_crash(endpoint) -> None:  # type: ignore[no-untyped-def]
    base, store, _, _ = endpoint
    status, body, _ = await post(
        f"{base}/v1/requests/site",
        data=b'{"phone": "0981234567", "message": "bad \\udcff escape"}',
        headers={"Content-Type": "application/json", "X-Pbxlink-Token": TOKEN},
    )
    assert status == 400
    assert body["problems"][0]["field"] == "message"
    assert await store.pending() == []
