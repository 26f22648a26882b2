"""An in-process RetailCRM rig: the fake RetailCRM on 127.0.0.1, a real SQLite adapter store,
the inbox, the processor and the RetailCRM backend, wired as `pbxlink adapter` wires them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pbxlab.fakes.retailcrm import FakeRetailCrm
from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy
from pbxlink.adapters.backends.retailcrm.backend import RetailCrm, describe_error
from pbxlink.adapters.config import Settings, settings_from_toml
from pbxlink.adapters.inbox import Inbox
from pbxlink.adapters.processing import Processed, Processor
from pbxlink.adapters.store import Store, open_store
from pbxlink.rules.samples import at, outcome_message

KEY = "rig-api-key"
USERS = {27: {"first_name": "Анна"}, 28: {"first_name": "Борис"}}
STATUSES = ("new", "callback", "cancel-other", "complete")

CONFIG = """
[crm]
backend = "retailcrm"
timezone = "Europe/Kyiv"
[crm.retailcrm]
url = "{url}"
site = "main"
closed_statuses = ["complete", "cancel-other"]
stale_event_seconds = 600
[crm.retailcrm.users]
"101" = 27
"102" = 28
[crm.retailcrm.sites]
"4930100300" = "reviews"

[crm.orders]
enabled = true
default_status = "new"
[[crm.orders.rules]]
name = "reviews line"
line = "4930100300"
status = "cancel-other"
[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"

[crm.tasks]
enabled = true
assignees = ["101"]
deadline_hours = 2
link_to_this_call = true
unlinked = "skip"
"""


@dataclass
class Rig:
    fake: FakeRetailCrm
    store: Store
    inbox: Inbox
    backend: RetailCrm
    processor: Processor[RetailCrm]
    client: RemoteClient
    settings: Settings

    async def deliver(self, *items: tuple[str, bytes]) -> None:
        await self.inbox.receive_many(list(items), at("2018-03-05T13:32:01Z"))

    async def outcome(self, data: dict[str, Any]) -> list[Processed]:
        await self.deliver(outcome_message(data))
        return await self.processor.run_pending()

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.fake.state.requests if r["path"] == path]

    async def inbox_state(self, message_id: str) -> tuple[str, int, str | None]:
        [row] = await self.store.db.execute_fetchall(
            "SELECT state, attempts, error FROM inbox WHERE id = ?", (message_id,)
        )
        return str(row[0]), int(row[1]), row[2]


@asynccontextmanager
async def retailcrm_rig(
    tmp_path: Path,
    *,
    config: str = CONFIG,
    policy: RemotePolicy | None = None,
    now: str = "2018-03-05T13:32:05Z",
    rate_limit: int = 1000,
) -> AsyncIterator[Rig]:
    fake = FakeRetailCrm(
        KEY, rate_limit=rate_limit, users=USERS, sites=("main", "reviews"), statuses=STATUSES
    )
    url = await fake.start()
    store = await open_store(tmp_path / "adapter.sqlite3")
    settings = settings_from_toml(config.replace("{url}", url))
    s = settings.crm.retailcrm
    client = RemoteClient(
        url,
        name="retailcrm",
        headers={"X-API-KEY": KEY},
        policy=policy or RemotePolicy(rate_per_second=1000, backoff_initial=0.05, backoff_max=0.2),
        describe_error=describe_error,
    )
    moment: datetime = at(now)
    backend = RetailCrm(store, settings.crm, s, client, clock=lambda: moment)
    inbox = Inbox(store)
    processor = Processor(inbox, backend, settings.crm, max_attempts=3, clock=lambda: moment, hooks=backend)
    try:
        await backend.register_module()
        yield Rig(fake, store, inbox, backend, processor, client, settings)
    finally:
        await client.aclose()
        await store.close()
        await fake.stop()
