"""End to end: e-mail (dovecot), Telegram (fake Bot API) and a web form → `pbxlink gateway` →
mosquitto → the CRM adapter → the embedded CRM, with the seed's processing rules (1C:CRM, A7).

One config file serves the gateway and the adapter, as in production. What each rule should make
of each message is written down from the seed's wording, not from the gateway's output.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pbxlab.dovecot import TEST_MAILBOX as MAILBOX
from pbxlab.dovecot import TEST_PASSWORD as PASSWORD
from pbxlab.dovecot import Dovecot
from pbxlab.mosquitto import BrokerHandle
from pbxlab.ports import free_port
from pbxlab.telegram_fake import FakeBotApi, TelegramUser

from pbxlink.adapters.backends.sqlite_crm import SqliteCrm
from pbxlink.adapters.config import settings_from_toml as adapter_settings
from pbxlink.adapters.consumer import CrmAdapter
from pbxlink.adapters.metrics import AdapterMetrics
from pbxlink.adapters.store import open_store as open_crm
from pbxlink.gateway.config import settings_from_toml as gateway_settings
from pbxlink.gateway.service import Gateway, serve

pytestmark = pytest.mark.lab

FORM_TOKEN = "site-form-token"

RULES = """
[crm.requests]
potential_client_name = "Потенциальный клиент ({contact})"

[[crm.requests.rules]]            # any source: spam is rejected with a reason
name = "spam"
keywords = "казино;выигрыш"
action = "reject"
reject_reason = "спам"

[[crm.requests.rules]]            # repairs by mail or Telegram: a support ticket for the whole role
name = "repairs"
sources = ["email:service@shop.example", "telegram:shop_bot"]
keywords = "ремонт;сломался;не работает"
action = "support"
address = "role"
role = "service"
known_client_to_owner = false

[[crm.requests.rules]]            # other mail: an interest, round robin between two sellers
name = "mail-sales"
sources = ["email:service@shop.example"]
action = "interest"
address = "queue"
queue = ["anna", "boris"]

[[crm.requests.rules]]            # the site's form and the bot: vera gets an interest, unless known
name = "site"
sources = ["web:site", "telegram:shop_bot"]
action = "interest"
address = "user"
user = "vera"
"""


def config_text(tmp: Path, broker: int, imap: Dovecot, bot: FakeBotApi) -> str:
    (tmp / "imap.password").write_text(PASSWORD + "\n")
    (tmp / "bot.token").write_text(bot.token + "\n")
    (tmp / "form.token").write_text(FORM_TOKEN + "\n")
    return (
        f"""
[mqtt]
port = {broker}
[adapter]
database = "{tmp / "crm.sqlite3"}"
http_port = 0
[gateway]
name = "gw1"
database = "{tmp / "gateway.sqlite3"}"
port = {free_port()}
metrics_port = {free_port()}
[gateway.email.service]
host = "127.0.0.1"
port = {imap.port}
ca_file = "{imap.ca_file}"
username = "{MAILBOX}"
password_file = "{tmp / "imap.password"}"
poll_seconds = 1
[gateway.telegram.shop_bot]
token_file = "{tmp / "bot.token"}"
api_url = "{bot.url}"
poll_timeout_seconds = 1
[gateway.web.site]
token_file = "{tmp / "form.token"}"
origins = ["https://shop.example"]
"""
        + RULES
    )


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database, timeout=10) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


async def wait_for(check: Callable[[], bool], seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


def mail(sender: str, subject: str, body: str, message_id: str, reply_to: str | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = MAILBOX
    m["Subject"] = subject
    m["Message-ID"] = f"<{message_id}>"
    if reply_to:
        m["In-Reply-To"] = f"<{reply_to}>"
        m["References"] = f"<{reply_to}>"
    m.set_content(body)
    return m.as_bytes()


@dataclass
class Lab:
    tmp: Path
    crm: Path
    broker: BrokerHandle
    imap: Dovecot
    bot: FakeBotApi
    gateway: Gateway | None = None

    def outcomes(self) -> list[tuple[Any, ...]]:
        return query(self.crm, "SELECT id, rule, outcome FROM requests ORDER BY created_at, rowid")

    async def form(self, fields: dict[str, str]) -> int:
        assert self.gateway is not None
        url = f"http://127.0.0.1:{self.gateway.web_port}/v1/requests/site"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=fields, headers={"Authorization": f"Bearer {FORM_TOKEN}"}) as response,
        ):
            return response.status


async def seed_crm(database: Path) -> None:
    store = await open_crm(database)
    crm = SqliteCrm(store)
    async with store.transaction() as db:
        await crm.add_employee("anna", "Анна", extension="101", roles=("sales",))
        await crm.add_employee("boris", "Борис", extension="102", roles=("sales", "service"))
        await crm.add_employee("vera", "Вера", extension="103", roles=("service",))
        await crm.add_employee("dmitry", "Дмитрий", extension="104", roles=("sales",))
        # known clients: one by phone (responsible dmitry), one by e-mail (responsible anna)
        await crm.add_client(
            "ТОВ Меблі",
            ("0671112233",),
            region="UA",
            responsibles=("dmitry",),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        client = await crm.add_client(
            "Олена Коваль",
            ("0503334455",),
            region="UA",
            responsibles=("anna",),
            created_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
        await db.execute(
            "INSERT INTO client_emails (client_id, email) VALUES (?, ?)",
            (int(client), "olena@client.example"),
        )
    await store.close()


@pytest.fixture
async def lab(
    tmp_path: Path, mosquitto_broker: BrokerHandle, dovecot: Dovecot, telegram_api: FakeBotApi
) -> AsyncIterator[Lab]:
    crm = tmp_path / "crm.sqlite3"
    await seed_crm(crm)
    text = config_text(tmp_path, mosquitto_broker.port, dovecot, telegram_api)
    (tmp_path / "pbxlink.toml").write_text(text)
    adapter_store = await open_crm(crm)
    adapter = CrmAdapter(adapter_settings(text), adapter_store, metrics=AdapterMetrics())
    shutdown = asyncio.Event()
    lab = Lab(tmp_path, crm, mosquitto_broker, dovecot, telegram_api)
    started = asyncio.Event()

    def on_start(gateway: Gateway) -> None:
        lab.gateway = gateway
        started.set()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(adapter.run(shutdown), name="test:adapter")
        tasks.create_task(
            serve(gateway_settings(text), shutdown=shutdown, started=on_start), name="test:gateway"
        )
        await asyncio.wait_for(adapter.ready.wait(), 15)
        await asyncio.wait_for(started.wait(), 15)
        try:
            yield lab
        finally:
            shutdown.set()
    await adapter_store.close()


async def test_email_telegram_and_web_requests_are_processed_by_the_seed_rules(lab: Lab) -> None:
    olga, petr = TelegramUser(5550001, "Ольга"), TelegramUser(5550002, "Пётр", username="petr")
    # e-mail
    lab.imap.deliver(
        MAILBOX, mail("Иван Петров <ivan@client.example>", "Сломался холодильник", "Не морозит", "r1@client")
    )
    lab.imap.deliver(MAILBOX, mail("Марія <maria@client.example>", "Диван", "Хочу купити диван", "s1@client"))
    lab.imap.deliver(MAILBOX, mail("Степан <stepan@client.example>", "Шафа", "Цікавить шафа", "s2@client"))
    lab.imap.deliver(
        MAILBOX, mail("Олена Коваль <olena@client.example>", "Стіл", "Потрібен стіл", "s3@client")
    )
    lab.imap.deliver(MAILBOX, mail("promo@spam.example", "Большой выигрыш", "Казино ждёт", "x1@spam"))
    # Telegram
    await lab.bot.send_text(olga, "Добрый день, интересует кухня")
    await lab.bot.send_text(petr, "У меня не работает кофемашина")
    # web form: a known client's phone, and a new visitor
    assert (
        await lab.form({"name": "Менеджер", "phone": "+380671112233", "message": "Потрібен рахунок"}) == 202
    )
    assert await lab.form({"name": "Гість", "email": "guest@example.org", "message": "Передзвоніть"}) == 202
    await wait_for(lambda: len(lab.outcomes()) == 9)
    # the replies: in the e-mail thread of "Диван", in Ольга's chat — both linked to their open interest
    lab.imap.deliver(
        MAILBOX,
        mail("Марія <maria@client.example>", "Re: Диван", "А синій є?", "s1-reply@client", "s1@client"),
    )
    await lab.bot.send_text(olga, "И ещё вопрос по кухне")
    # Пётр writes again about another repair: a ticket again (a ticket is not an interest), but
    # for the client his chat already is, not a new potential client
    await lab.bot.send_text(petr, "И кофемолка тоже не работает")
    await wait_for(lambda: len(lab.outcomes()) == 12)

    by_source = query(
        lab.crm,
        "SELECT r.source, r.rule, r.outcome, coalesce(d.responsible, ''), coalesce(t.assignees, ''), "
        "coalesce(c.name, ''), coalesce(c.potential, 0) "
        "FROM requests r LEFT JOIN deals d ON d.id = r.deal_id LEFT JOIN tickets t ON t.id = r.ticket_id "
        "LEFT JOIN clients c ON c.id = r.client_id ORDER BY r.created_at, r.rowid",
    )
    email, bot, web = f"email:{MAILBOX}", "telegram:shop_bot", "web:site"
    expected = {
        # source, rule, outcome, deal responsible, ticket assignees, client, potential
        (email, "repairs", "support", "", "boris,vera", "Иван Петров", 1),
        (email, "mail-sales", "interest", "anna", "", "Марія", 1),  # queue: anna first …
        (email, "mail-sales", "interest", "boris", "", "Степан", 1),  # … then boris
        (email, "mail-sales", "interest", "anna", "", "Олена Коваль", 0),  # known client: her responsible
        (email, "spam", "rejected", "", "", "", 0),
        (bot, "site", "interest", "vera", "", "Ольга", 1),
        (bot, "repairs", "support", "", "boris,vera", "Пётр (@petr)", 1),
        (web, "site", "interest", "dmitry", "", "ТОВ Меблі", 0),  # known by phone: dmitry, not vera
        (web, "site", "interest", "vera", "", "Гість", 1),
        (email, "mail-sales", "attached", "anna", "", "Марія", 1),  # the reply: no new interest
        (bot, "site", "attached", "vera", "", "Ольга", 1),
        (bot, "repairs", "support", "", "boris,vera", "Пётр (@petr)", 1),
    }
    assert set(by_source) == expected
    assert len(by_source) == len(expected) + 1  # Пётр's two tickets are two equal rows
    assert query(lab.crm, "SELECT count(*) FROM clients WHERE name = 'Пётр (@petr)'") == [(1,)]
    assert query(lab.crm, "SELECT count(*) FROM deals") == [(6,)]
    assert query(lab.crm, "SELECT count(*) FROM tickets") == [(3,)]
    [(reason,)] = query(lab.crm, "SELECT reason FROM requests WHERE outcome = 'rejected'")
    assert "спам" in reason
    # every request was pruned from the gateway once the broker had it
    assert lab.gateway is not None
    metrics_url = f"http://127.0.0.1:{lab.gateway.metrics_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{metrics_url}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{metrics_url}/metrics") as response:
            text = await response.text()
    assert 'pbxlink_gateway_requests_total{channel="messenger",source="telegram:shop_bot"} 4.0' in text
    assert 'pbxlink_gateway_requests_total{channel="web",source="web:site"} 2.0' in text
    await wait_for(lambda: query(lab.tmp / "gateway.sqlite3", "SELECT count(*) FROM outbox") == [(0,)])
