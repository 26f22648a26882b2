"""An in-process Bitrix24 rig: the fake portal on 127.0.0.1, a real SQLite adapter store, the
inbox, the processor and the Bitrix24 backend, wired as `pbxlink adapter` wires them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pbxlab.fakes.bitrix24 import FakeBitrix24
from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, open_client
from pbxlink.adapters.backends.bitrix24.backend import Bitrix24
from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy
from pbxlink.adapters.config import Settings, settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processed, Processor
from pbxlink.adapters.store import Store, open_store
from pbxlink.rules.samples import at, outcome_message

TOKEN = "rig-webhook-token"
USERS = {7: ("Анна", "101"), 8: ("Борис", "102"), 9: ("Office", "100")}

# Seeds 001 (RO App tasks) and 003 (Megaplan clients and deals) on Bitrix24.
CONFIG = """
[crm]
backend = "bitrix24"
timezone = "Europe/Kyiv"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
stale_event_seconds = 600
[crm.bitrix24.lines]
"4930100200" = "Berlin office"

[crm.clients]
repeat_calls = "if_no_open_deal"
[crm.clients.answered]
create = "client_and_deal"
[crm.clients.missed]
create = "client"
[crm.clients.outgoing]
create = "client"

[crm.tasks]
enabled = true
assignees = ["101", "102"]
mode = "one_each"
deadline_hours = 2
"""

TELEPHONY_ONLY = """
[crm]
backend = "bitrix24"
timezone = "Europe/Kyiv"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
stale_event_seconds = 600
"""


@dataclass
class Rig:
    fake: FakeBitrix24
    store: Store
    inbox: Inbox
    backend: Bitrix24
    processor: Processor[Bitrix24]
    client: RemoteClient
    settings: Settings

    async def deliver(self, *items: tuple[str, bytes]) -> None:
        await self.inbox.receive_many(list(items), at("2018-03-05T13:32:01Z"))

    async def outcome(self, data: dict[str, Any]) -> list[Processed]:
        await self.deliver(outcome_message(data))
        return await self.processor.run_pending()

    def commands(self, method: str) -> int:
        return self.fake.portal.commands.count(method.lower())

    async def inbox_state(self, message_id: str) -> tuple[str, int, str | None]:
        [row] = await self.store.db.execute_fetchall(
            "SELECT state, attempts, error FROM inbox WHERE id = ?", (message_id,)
        )
        return str(row[0]), int(row[1]), row[2]


@asynccontextmanager
async def bitrix24_rig(
    tmp_path: Path,
    *,
    config: str = CONFIG,
    policy: RemotePolicy | None = None,
    now: str = "2018-03-05T13:32:05Z",
    rate_per_second: float = 1000,
    burst: int = 10_000,
) -> AsyncIterator[Rig]:
    fake = FakeBitrix24(webhooks={1: TOKEN}, rate_per_second=rate_per_second, burst=burst)
    for user_id, (name, inner) in USERS.items():
        fake.add_user(user_id, name, inner)
    await fake.start()
    secret = tmp_path / "bitrix24-webhook"
    secret.write_text(fake.webhook_url() + "\n")
    store = await open_store(tmp_path / "adapter.sqlite3")
    settings = settings_from_toml(config.replace("{secret}", str(secret)))
    s = settings.crm.bitrix24
    client = open_client(s)
    if policy is not None or rate_per_second >= 100:
        await client.aclose()
        client = RemoteClient(
            s.webhook_url.reveal() if s.webhook_url else "",
            name="bitrix24",
            policy=policy or RemotePolicy(rate_per_second=1000, backoff_initial=0.05, backoff_max=0.2),
            describe_error=client.describe_error,
        )
    moment: datetime = at(now)
    backend = Bitrix24(store, settings.crm, s, Bitrix24Api(client, s), clock=lambda: moment)
    inbox = Inbox(store)
    processor = Processor(inbox, backend, settings.crm, max_attempts=3, clock=lambda: moment, hooks=backend)
    try:
        await backend.register_lines()
        yield Rig(fake, store, inbox, backend, processor, client, replace(settings))
    finally:
        await client.aclose()
        await store.close()
        await fake.stop()
