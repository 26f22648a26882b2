"""Routing from Bitrix24: the ownership directory fed from the responsibles of contacts,
companies and leads.

Each kind (contacts, then companies with `crm.company.list`, then leads with `crm.lead.list`) is
fed the same way, with its own cursor. Companies and leads are mirrored as `CO_<id>` and `L_<id>`
(the portal's own entity prefixes; contacts keep their bare id), so a number on a contact and a
company lists both as clients, in the directory's pick order (oldest client first). A lead that
is converted or closed (STATUS_SEMANTIC_ID S or F) is not a client: it is skipped, and dropped
from the mirror if it was there.

An initial full load (`crm.contact.list` with ID, NAME, LAST_NAME, ASSIGNED_BY_ID, DATE_CREATE,
DATE_MODIFY and PHONE, 50 per page), then, every `directory_seconds`, the contacts modified since
(`>=DATE_MODIFY` of the newest one seen). Each contact is mirrored with its numbers (normalized to
E.164, so a number typed 050 111 00 02 routes a call from +380501110002) and its responsible's
extension (`[crm.bitrix24.users]`, else the user's UF_PHONE_INNER). A responsible whose user is
not active — or, with `skip_not_at_work`, whose `timeman.status` is not OPENED (the working day
not started, paused or closed) — is marked blocked, so routing skips them; users' states are read
again at every sync (one `batch` of `timeman.status`), and the contacts of a user whose state
changed are published again. The adapter then publishes the retained directory entries of the
numbers that changed (`pbxlink.adapters.backends.owners`, shared with RetailCRM).

Contacts deleted in the portal are not noticed until a full load (delete `remote_sync`'s
`bitrix24.contacts` row to force one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from pbxlink.adapters.backends.bitrix24.api import Bitrix24Api, Command
from pbxlink.adapters.backends.bitrix24.settings import Bitrix24Settings
from pbxlink.adapters.backends.owners import (
    RemoteOwner,
    remove_owners,
    set_sync_cursor,
    sync_cursor,
    upsert_owners,
)
from pbxlink.adapters.backends.remote import RemoteError
from pbxlink.adapters.store import Store
from pbxlink.rules.identity import identify
from pbxlink.rules.settings import CrmSettings

log = structlog.get_logger()

FEED = "bitrix24.contacts"
PAGE = 50
SELECT = ["ID", "NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "PHONE"]
CLOSED_LEAD = ("S", "F")  # STATUS_SEMANTIC_ID: converted (success) or failed


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of CRM client the directory reads."""

    feed: str  # its cursor in remote_sync
    method: str
    prefix: str  # of the mirror's crm_id
    select: tuple[str, ...]


CONTACTS = Kind(FEED, "crm.contact.list", "", tuple(SELECT))
COMPANIES = Kind(
    "bitrix24.companies",
    "crm.company.list",
    "CO_",
    ("ID", "TITLE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "PHONE"),
)
LEADS = Kind(
    "bitrix24.leads",
    "crm.lead.list",
    "L_",
    (*SELECT, "TITLE", "STATUS_SEMANTIC_ID"),
)
KINDS = (CONTACTS, COMPANIES, LEADS)


def _date(text: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(text))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class Bitrix24Directory:
    def __init__(self, store: Store, api: Bitrix24Api, settings: Bitrix24Settings, crm: CrmSettings) -> None:
        self.store = store
        self.api = api
        self.s = settings
        self.crm = crm
        self._users: dict[str, tuple[str | None, bool]] = {}  # user id → (extension, blocked)

    async def _load_users(self) -> set[str]:
        """Users with their extension and blocked state; returns the ids whose state changed."""
        users: list[dict[str, Any]] = []
        start = 0
        while True:
            page = await self.api.call("user.get", {"start": start})
            page = page if isinstance(page, list) else []
            users.extend(page)
            if len(page) < PAGE:
                break
            start += PAGE
        at_work: dict[str, bool] = {}
        if self.s.skip_not_at_work:
            active = [str(u["ID"]) for u in users if u.get("ACTIVE") not in (False, "N", "0")]
            for first in range(0, len(active), self.s.batch_size):
                part = active[first : first + self.s.batch_size]
                answer = await self.api.batch(
                    [Command(f"t{uid}", "timeman.status", {"USER_ID": uid}) for uid in part]
                )
                for uid in part:
                    status = answer.results.get(f"t{uid}")
                    at_work[uid] = isinstance(status, dict) and status.get("STATUS") == "OPENED"
        by_user = {str(v): k for k, v in self.s.users.items()}
        fresh: dict[str, tuple[str | None, bool]] = {}
        for u in users:
            uid = str(u["ID"])
            inactive = u.get("ACTIVE") in (False, "N", "0")
            extension = by_user.get(uid) or (str(u.get("UF_PHONE_INNER") or "") or None)
            fresh[uid] = (extension, inactive or (self.s.skip_not_at_work and not at_work.get(uid, False)))
        changed = (
            {uid for uid, state in fresh.items() if self._users.get(uid) != state} if self._users else set()
        )
        self._users = fresh
        return changed

    def owner(self, contact: dict[str, Any], prefix: str = "") -> RemoteOwner:
        """One contact, company (`prefix` CO_) or lead (L_) as a mirrored client."""
        region = self.crm.phone.default_region
        numbers = {identify(str(p.get("VALUE", "")), region).e164 for p in contact.get("PHONE") or []}
        responsible = contact.get("ASSIGNED_BY_ID")
        extension, blocked = self._users.get(str(responsible), (None, False))
        return RemoteOwner(
            crm_id=f"{prefix}{contact['ID']}",
            name=" ".join(filter(None, (contact.get("NAME"), contact.get("LAST_NAME"))))
            or str(contact.get("TITLE") or "")
            or f"#{prefix}{contact['ID']}",
            created_at=_date(contact.get("DATE_CREATE")),
            numbers=tuple(sorted(n for n in numbers if n)),
            responsible=None if responsible in (None, "") else str(responsible),
            extension=extension,
            blocked=blocked,
        )

    async def _clients(self, kind: Kind, filters: dict[str, Any]) -> tuple[int, str | None]:
        """Mirror every client of `kind` matching `filters`; returns (numbers changed, newest DATE_MODIFY)."""
        start, dirty, newest = 0, 0, None
        while True:
            page = await self.api.call(
                kind.method,
                {"filter": filters, "select": list(kind.select), "order": {"ID": "ASC"}, "start": start},
            )
            page = page if isinstance(page, list) else []
            closed = [c for c in page if c.get("STATUS_SEMANTIC_ID") in CLOSED_LEAD]
            dirty += await upsert_owners(
                self.store, [self.owner(c, kind.prefix) for c in page if c not in closed]
            )
            if closed:
                dirty += await remove_owners(self.store, [f"{kind.prefix}{c['ID']}" for c in closed])
            for c in page:
                modified = c.get("DATE_MODIFY")
                if modified and (newest is None or _date(modified) > _date(newest)):
                    newest = str(modified)
            if len(page) < PAGE:
                return dirty, newest
            start += PAGE

    async def sync_once(self) -> int:
        """The full load first, then changes since; returns how many numbers changed."""
        changed_users = await self._load_users()
        dirty = 0
        for kind in KINDS:
            cursor = await sync_cursor(self.store, kind.feed)
            more, newest = await self._clients(kind, {} if cursor is None else {">=DATE_MODIFY": cursor})
            dirty += more
            for uid in sorted(changed_users):  # a manager started or ended the working day
                more, _ = await self._clients(kind, {"ASSIGNED_BY_ID": uid})
                dirty += more
            if newest is not None and newest != cursor:
                await set_sync_cursor(self.store, kind.feed, newest)
            elif cursor is None:
                await set_sync_cursor(self.store, kind.feed, "1970-01-01T00:00:00+00:00")
        return dirty

    async def run(self, shutdown: asyncio.Event, changed: Callable[[], None], interval: float) -> None:
        """Sync until shutdown, every `interval` seconds."""
        while not shutdown.is_set():
            try:
                dirty = await self.sync_once()
            except RemoteError as exc:
                log.warning("bitrix24_directory_sync_failed", error=str(exc))
            else:
                if dirty:
                    log.info("bitrix24_directory_synced", numbers_changed=dirty)
                    changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), interval)
