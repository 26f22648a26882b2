"""Faults around the gateway process: the broker down, the gateway SIGKILLed with requests waiting,
then everything back. Every e-mail, Telegram message and web form reaches the CRM exactly once.

The gateway runs as its own process (`python -m pbxlink.cli gateway`), as systemd runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
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

pytestmark = pytest.mark.lab

TOKEN = "form-token"

RULES = """
[[crm.requests.rules]]
name = "all"
action = "interest"
address = "user"
user = "anna"
"""


def config(tmp: Path, broker: int, imap: Dovecot, bot: FakeBotApi, web_port: int) -> Path:
    (tmp / "imap.password").write_text(PASSWORD)
    (tmp / "bot.token").write_text(bot.token)
    (tmp / "form.token").write_text(TOKEN)
    path = tmp / "pbxlink.toml"
    path.write_text(
        f"""
[mqtt]
port = {broker}
backoff_initial = 0.2
backoff_max = 1.0
[adapter]
database = "{tmp / "crm.sqlite3"}"
http_port = 0
[gateway]
name = "gw1"
database = "{tmp / "gateway.sqlite3"}"
port = {web_port}
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
rate_per_minute = 600
rate_burst = 50
"""
        + RULES
    )
    return path


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database, timeout=10) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


async def wait_for(check: Callable[[], bool], seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


def mail(n: int) -> bytes:
    m = EmailMessage()
    m["From"] = f"client{n}@example.org"
    m["Subject"] = f"mail {n}"
    m["Message-ID"] = f"<mail-{n}@example.org>"
    m.set_content(f"message {n}")
    return m.as_bytes()


class GatewayProcess:
    def __init__(self, cfg: Path, log: Path) -> None:
        self.cfg, self.log = cfg, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pbxlink.cli", "gateway", "-c", str(self.cfg)], stdout=out, stderr=out
            )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                assert self.process.wait(timeout=30) == 0, self.log.read_text()[-3000:]
            finally:
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait(timeout=10)


async def post_form(port: int, n: int) -> int:
    url = f"http://127.0.0.1:{port}/v1/requests/site"
    form = {"phone": f"+38098123{n:04d}", "message": f"form {n}"}
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                headers = {"X-Pbxlink-Token": TOKEN, "Idempotency-Key": f"form-{n}"}
                async with session.post(url, json=form, headers=headers) as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def test_broker_down_and_gateway_killed_lose_and_duplicate_nothing(
    tmp_path: Path, mosquitto_broker: BrokerHandle, dovecot: Dovecot, telegram_api: FakeBotApi
) -> None:
    crm_db, gw_db = tmp_path / "crm.sqlite3", tmp_path / "gateway.sqlite3"
    store = await open_crm(crm_db)
    async with store.transaction():
        await SqliteCrm(store).add_employee("anna", "Анна", extension="101")
    await store.close()
    web_port = free_port()
    cfg = config(tmp_path, mosquitto_broker.port, dovecot, telegram_api, web_port)
    olga = TelegramUser(5550001, "Ольга")
    mosquitto_broker.stop()  # the broker is down from the start
    gateway = GatewayProcess(cfg, tmp_path / "gateway.log")
    gateway.start()
    try:
        for n in range(3):
            assert await post_form(web_port, n) == 202  # 202 with the broker down: stored, not sent
        dovecot.deliver(MAILBOX, mail(1))
        dovecot.deliver(MAILBOX, mail(2))
        await telegram_api.send_text(olga, "telegram 1")
        await telegram_api.send_text(olga, "telegram 2")
        await wait_for(lambda: query(gw_db, "SELECT count(*) FROM outbox") == [(7,)])
        await wait_for(lambda: all("\\Seen" in f for _, f in dovecot.flags(MAILBOX)))
        gateway.kill()  # SIGKILL with 7 requests stored and none published

        # everything comes back: the broker, the adapter, the gateway; and more traffic, with a
        # web client retrying a form it already sent (same Idempotency-Key)
        mosquitto_broker.start()
        text = cfg.read_text()
        crm_store = await open_crm(crm_db)
        adapter = CrmAdapter(adapter_settings(text), crm_store, metrics=AdapterMetrics())
        shutdown = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(adapter.run(shutdown), name="test:adapter")
            gateway.start()
            assert await post_form(web_port, 2) == 202  # a retry: the same request
            assert await post_form(web_port, 3) == 202
            dovecot.deliver(MAILBOX, mail(3))
            await telegram_api.send_text(olga, "telegram 3")
            await wait_for(lambda: query(crm_db, "SELECT count(*) FROM requests") >= [(10,)], seconds=60)
            await asyncio.sleep(1.0)  # anything extra would arrive now
            shutdown.set()
        await crm_store.close()
        gateway.stop()
        sources = query(crm_db, "SELECT source, count(*) FROM requests GROUP BY source ORDER BY source")
        assert sources == [(f"email:{MAILBOX}", 3), ("telegram:shop_bot", 3), ("web:site", 4)]
        assert query(crm_db, "SELECT count(*) FROM deals") == [(8,)]  # telegram 2 and 3 attach to 1
        assert query(gw_db, "SELECT count(*) FROM outbox") == [(0,)]
        assert query(crm_db, "SELECT count(*) FROM inbox WHERE state != 'done'") == [(0,)]
    finally:
        gateway.stop()
