"""Routing from RetailCRM: the ownership directory fed from the customers' managers.

An initial full load (`GET /api/v5/customers`, 100 per page), then changes since
(`GET /api/v5/customers/history`: from the moment the load began, then by `sinceId`), every
`directory_seconds`. Each changed customer is read again (`filter[ids][]`) and mirrored with its
numbers (normalized to E.164, so a number typed 050 111 00 02 routes a call from +380501110002)
and its manager's extension (`[crm.retailcrm.users]`); a manager whose RetailCRM user is not
active is marked blocked, so routing skips them. The adapter then publishes the retained
directory entries of the numbers that changed (`pbxlink.adapters.backends.owners`).

The manager's current status (free/busy) changes by the minute and is not mirrored: that is what
the live `GET /api/v5/telephony/manager` with `ignoreStatus` is for (not built yet).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from pbxlink.adapters.backends.owners import (
    RemoteOwner,
    remove_owners,
    set_sync_cursor,
    sync_cursor,
    upsert_owners,
)
from pbxlink.adapters.backends.remote import RemoteClient, RemoteError
from pbxlink.adapters.backends.retailcrm import payloads
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.adapters.store import Store
from pbxlink.rules.identity import identify
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()

FEED = "retailcrm.customers"
PAGE = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RetailCrmDirectory:
    def __init__(
        self,
        store: Store,
        client: RemoteClient,
        settings: RetailCrmSettings,
        crm: CrmSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.client = client
        self.s = settings
        self.crm = crm
        self.clock = clock
        self._active: dict[int, bool] = {}

    async def _load_users(self) -> None:
        page, active = 1, {}
        while True:
            answer = await self.client.get("/api/v5/users", {"limit": PAGE, "page": page})
            for user in answer.get("users") or []:
                active[int(user["id"])] = bool(user.get("active", True))
            if page >= int((answer.get("pagination") or {}).get("totalPageCount", 1)):
                break
            page += 1
        self._active = active

    def owner(self, customer: dict[str, Any]) -> RemoteOwner:
        region = self.crm.phone.default_region
        numbers = {identify(str(p.get("number", "")), region).e164 for p in customer.get("phones") or []}
        manager = customer.get("managerId")
        return RemoteOwner(
            crm_id=str(customer["id"]),
            name=" ".join(filter(None, (customer.get("firstName"), customer.get("lastName"))))
            or f"#{customer['id']}",
            created_at=payloads.from_local(customer.get("createdAt") or "1970-01-01 00:00:00", self.crm.zone),
            numbers=tuple(sorted(n for n in numbers if n)),
            responsible=None if manager is None else str(manager),
            extension=self.s.extension_of(manager),
            blocked=manager is not None and not self._active.get(int(manager), True),
        )

    async def full_load(self) -> int:
        """Every customer, page by page; returns how many numbers changed."""
        start = payloads.local(self.clock(), self.crm.zone)
        await self._load_users()
        page, dirty = 1, 0
        while True:
            answer = await self.client.get("/api/v5/customers", {"limit": PAGE, "page": page})
            dirty += await upsert_owners(self.store, [self.owner(c) for c in answer.get("customers") or []])
            if page >= int((answer.get("pagination") or {}).get("totalPageCount", 1)):
                break
            page += 1
        await set_sync_cursor(self.store, FEED, f"date:{start}")
        return dirty

    async def changes(self, cursor: str) -> int:
        """Customers changed since the cursor, read again and mirrored; returns numbers changed."""
        dirty = 0
        while True:
            if cursor.startswith("date:"):
                params: dict[str, Any] = {"filter[startDate]": cursor[5:], "limit": PAGE}
            else:
                params = {"filter[sinceId]": cursor[3:], "limit": PAGE}
            answer = await self.client.get("/api/v5/customers/history", params)
            history = answer.get("history") or []
            if not history:
                return dirty
            changed = sorted({int(h["customer"]["id"]) for h in history if h.get("customer")})
            if changed:
                await self._load_users()
                dirty += await self._refresh(changed)
            cursor = f"id:{max(int(h['id']) for h in history)}"
            await set_sync_cursor(self.store, FEED, cursor)
            if len(history) < PAGE:
                return dirty

    async def _refresh(self, ids: list[int]) -> int:
        dirty = 0
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            params = [("limit", PAGE), *(("filter[ids][]", i) for i in chunk)]
            answer = await self.client.get("/api/v5/customers", params)
            found = answer.get("customers") or []
            dirty += await upsert_owners(self.store, [self.owner(c) for c in found])
            gone = {str(i) for i in chunk} - {str(c["id"]) for c in found}
            if gone:
                dirty += await remove_owners(self.store, sorted(gone))
        return dirty

    async def sync_once(self) -> int:
        cursor = await sync_cursor(self.store, FEED)
        if cursor is None:
            return await self.full_load()
        return await self.changes(cursor)

    async def run(self, shutdown: asyncio.Event, changed: Callable[[], None], interval: float) -> None:
        """Sync until shutdown: the full load first, then changes every `interval` seconds."""
        while not shutdown.is_set():
            try:
                dirty = await self.sync_once()
            except RemoteError as exc:
                log.warning("retailcrm_directory_sync_failed", error=str(exc))
            else:
                if dirty:
                    log.info("retailcrm_directory_synced", numbers_changed=dirty)
                    changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), interval)
