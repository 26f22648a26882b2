"""Telegram bots: the gateway's long poller against the loopback fake of the Bot API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pbxlab.ports import free_port
from pbxlab.telegram_fake import FakeBotApi, TelegramUser

from pbxlink.foundation.config import Secret
from pbxlink.gateway.config import GatewaySettings, Settings, TelegramAccount
from pbxlink.gateway.intake import DeadLetter, Intake
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.store import GatewayStore, open_store
from pbxlink.gateway.telegram import TelegramSource, update_to_request
from pbxlink.gateway.web import WebEndpoint
from pbxlink.toolkit.metrics import sample
from pbxlink.wire.codec import decode_envelope, encode
from pbxlink.wire.model import Request

OLGA = TelegramUser(5550001, "Ольга", "Иванова", "olga_i")
PETR = TelegramUser(5550002, "Пётр")


async def wait_until(predicate, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    api = await FakeBotApi().start()
    try:
        yield api
    finally:
        await api.stop()


def make_intake(store: GatewayStore, api: FakeBotApi, **gateway: object) -> tuple[Intake, TelegramSource]:
    account = TelegramAccount(token=Secret(api.token), api_url=api.url, poll_timeout_seconds=1)
    settings = Settings(gateway=GatewaySettings(name="gw1", telegram={"shop_bot": account}, **gateway))  # type: ignore[arg-type]
    intake = Intake(store, settings, GatewayMetrics())
    return intake, TelegramSource("shop_bot", account, intake)


@contextlib.asynccontextmanager
async def polling(source: TelegramSource) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(source.run(stop), name="test:telegram")
        try:
            yield stop
        finally:
            stop.set()


async def requests_of(store: GatewayStore) -> list:  # type: ignore[type-arg]
    return [decode_envelope(r.payload).body for r in await store.pending() if r.topic.endswith("crm/request")]


async def test_fake_answers_the_documented_error_shape_for_a_wrong_token(fake: FakeBotApi) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{fake.url}/botWRONG/getMe") as response:
        assert response.status == 401
        assert await response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_fake_confirms_updates_only_with_a_higher_offset(fake: FakeBotApi) -> None:
    first = await fake.send_text(OLGA, "one")
    await fake.send_text(OLGA, "two")
    base = f"{fake.url}/bot{fake.token}/getUpdates"
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as r:
            assert [u["update_id"] for u in (await r.json())["result"]] == [first, first + 1]
        async with session.get(base, params={"offset": str(first + 1)}) as r:
            assert [u["update_id"] for u in (await r.json())["result"]] == [first + 1]
        async with session.get(base) as r:  # the first one was confirmed by that call
            assert [u["update_id"] for u in (await r.json())["result"]] == [first + 1]


async def test_each_message_becomes_a_request_with_the_chat_as_contact(
    tmp_path: Path, fake: FakeBotApi
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_intake(store, fake)
        update = await fake.send_text(OLGA, "Здравствуйте, хочу заказать диван")
        await fake.share_contact(PETR, "+380981234567")
        await fake.send_document(PETR, "смета.pdf", "application/pdf", "вот смета")
        async with polling(source):
            await wait_until(lambda: _count(store, 3))
        olga, contact, document = await requests_of(store)
        assert olga.id == f"gw1:telegram:shop_bot:{update}"
        assert olga.source == "telegram:shop_bot"
        assert olga.channel.value == "messenger"
        assert olga.sender.name == "Ольга Иванова (@olga_i)"
        assert olga.sender.messenger == "telegram:5550001"
        assert olga.body == "Здравствуйте, хочу заказать диван"
        assert contact.sender.phone == "+380981234567"
        assert document.body == "вот смета\nattachments: смета.pdf (application/pdf)"
        assert document.replies_to == (contact.id,)  # one chat, one conversation
        assert olga.replies_to == ()
        assert await store.cursor("telegram:shop_bot") == {"offset": update + 3}
    finally:
        await store.close()


async def _count(store: GatewayStore, n: int) -> bool:
    return await store.backlog() >= n


async def test_offset_survives_a_restart_so_nothing_is_read_twice(tmp_path: Path, fake: FakeBotApi) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_intake(store, fake)
        await fake.send_text(OLGA, "first")
        async with polling(source):
            await wait_until(lambda: _count(store, 1))
    finally:
        await store.close()
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_intake(store, fake)
        await fake.send_text(OLGA, "second")
        async with polling(source):
            await wait_until(lambda: _count(store, 2))
            await asyncio.sleep(0.3)
        assert [r.body for r in await requests_of(store)] == ["first", "second"]
        offsets = [int(p["offset"]) for m, p in fake.calls if m == "getUpdates" and "offset" in p]
        assert offsets == sorted(offsets)
    finally:
        await store.close()


async def test_api_errors_are_retried_and_retry_after_is_respected(tmp_path: Path, fake: FakeBotApi) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_intake(store, fake)
        fake.fail_next(502, "Bad Gateway")
        fake.fail_next(429, "Too Many Requests: retry after 1", retry_after=1)
        await fake.send_text(OLGA, "after the errors")
        async with polling(source):
            await wait_until(lambda: _count(store, 1))
        assert [r.body for r in await requests_of(store)] == ["after the errors"]
        assert (
            sample(intake.metrics.registry, "pbxlink_gateway_source_errors_total", source="telegram:shop_bot")
            == 2
        )
    finally:
        await store.close()


async def test_api_going_away_and_coming_back_loses_nothing(tmp_path: Path) -> None:
    api = await FakeBotApi().start()
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        _, source = make_intake(store, api)
        async with polling(source):
            await api.send_text(OLGA, "before")
            await wait_until(lambda: _count(store, 1))
            port, pending, last = api.port, api.updates, await store.backlog()
            await api.stop()
            await asyncio.sleep(1.0)
            api = FakeBotApi(port=port, updates=pending, first_update_id=700000001 + last)
            await api.start()
            await api.send_text(OLGA, "after")
            await wait_until(lambda: _count(store, 2))
        assert [r.body for r in await requests_of(store)] == ["before", "after"]
    finally:
        await store.close()
        await api.stop()


async def test_a_flooding_chat_gets_dead_letters_and_others_go_on(tmp_path: Path, fake: FakeBotApi) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_intake(store, fake, flood_per_minute=1.0, flood_burst=3)
        for i in range(6):
            await fake.send_text(PETR, f"spam {i}")
        await fake.send_text(OLGA, "a real question")
        async with polling(source):
            await wait_until(lambda: _count(store, 7))
        rows = await store.pending()
        assert sum(r.topic.endswith("deadletter") for r in rows) == 3
        assert [r.body for r in await requests_of(store)] == ["spam 0", "spam 1", "spam 2", "a real question"]
        assert (
            sample(
                intake.metrics.registry,
                "pbxlink_gateway_dead_letters_total",
                source="telegram:shop_bot",
                kind="flood",
            )
            == 3
        )
    finally:
        await store.close()


def test_an_update_that_is_not_a_message_is_skipped_and_one_without_sender_is_dead() -> None:
    edited = {
        "update_id": 5,
        "edited_message": {"message_id": 1, "chat": {"id": 1, "type": "private"}, "date": 0, "text": "x"},
    }
    assert update_to_request(edited, gateway="g", bot="b", max_body_chars=100) is None
    no_from = {
        "update_id": 6,
        "message": {"message_id": 2, "chat": {"id": 1, "type": "private"}, "date": 0, "text": "x"},
    }
    dead = update_to_request(no_from, gateway="g", bot="b", max_body_chars=100)
    assert isinstance(dead, DeadLetter)
    assert dead.kind == "no_sender"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"update_id": st.integers(1, 2**40)},
        optional={
            "message": st.fixed_dictionaries(
                {},
                optional={
                    "message_id": _json,
                    "from": st.dictionaries(
                        st.sampled_from(["id", "first_name", "last_name", "username"]), _json
                    ),
                    "chat": st.dictionaries(st.sampled_from(["id", "type"]), _json),
                    "date": _json,
                    "text": _json,
                    "caption": _json,
                    "contact": st.dictionaries(st.sampled_from(["phone_number", "user_id"]), _json),
                    "document": _json,
                },
            )
        },
    )
)
def test_any_update_shape_gives_a_request_a_dead_letter_or_a_skip(update: dict[str, Any]) -> None:
    account = TelegramAccount(token=Secret("t"), api_url="http://127.0.0.1:1")
    settings_ = Settings(gateway=GatewaySettings(name="gw1", telegram={"bot": account}))
    source = TelegramSource("bot", account, Intake(None, settings_, GatewayMetrics()))  # type: ignore[arg-type]
    made = source.convert(update)
    assert made is None or isinstance(made, DeadLetter | Request)
    if isinstance(made, Request):
        encode(made)  # and it can be published


async def test_webhook_mode_registers_the_webhook_and_stores_each_update_before_answering_200(
    tmp_path: Path, fake: FakeBotApi
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    web_port = free_port()
    account = TelegramAccount(
        token=Secret(fake.token),
        api_url=fake.url,
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{web_port}/v1/telegram/shop_bot",
        webhook_secret=Secret("hook-secret"),
    )
    settings = Settings(gateway=GatewaySettings(name="gw1", telegram={"shop_bot": account}))
    intake = Intake(store, settings, GatewayMetrics())
    source = TelegramSource("shop_bot", account, intake)
    runner = web.AppRunner(WebEndpoint({}, intake, {"shop_bot": source}).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", web_port).start()
    try:
        async with polling(source):
            await wait_until(lambda: _webhook_set(fake))
            assert fake.webhook_secret == "hook-secret"
            await fake.send_text(OLGA, "через вебхук")
            await fake.send_text(OLGA, "и ещё")
            await wait_until(lambda: _count(store, 2))
            # getUpdates is refused while the webhook is active, as Telegram does
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{fake.url}/bot{fake.token}/getUpdates") as r,
            ):
                assert r.status == 409
            # an update posted without the secret is refused and not stored
            async with (
                aiohttp.ClientSession() as session,
                session.post(account.webhook_url, json={"update_id": 1, "message": {}}) as r,
            ):
                assert r.status == 401
        first, second = await requests_of(store)
        assert first.body == "через вебхук"
        assert second.replies_to == (first.id,)
        assert fake.webhook_answers == [200, 200]
        assert fake.updates == []
    finally:
        await runner.cleanup()
        await store.close()


async def _webhook_set(fake: FakeBotApi) -> bool:
    return bool(fake.webhook_url)


async def test_a_message_that_cannot_be_encoded_is_a_dead_letter_and_the_bot_goes_on(
    tmp_path: Path, fake: FakeBotApi
) -> None:
    store = await open_store(tmp_path / "gw.sqlite3")
    try:
        intake, source = make_intake(store, fake)
        await fake.send_text(OLGA, "bad \udcff surrogate")  # JSON can carry it as an escape
        await fake.send_text(PETR, "fine")
        async with polling(source):
            await wait_until(lambda: _count(store, 2))
        assert [r.body for r in await requests_of(store)] == ["fine"]
        metric = "pbxlink_gateway_dead_letters_total"
        assert sample(intake.metrics.registry, metric, source="telegram:shop_bot", kind="invalid_utf8") == 1
    finally:
        await store.close()
