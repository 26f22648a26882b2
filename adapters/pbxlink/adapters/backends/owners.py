"""The ownership directory fed from a remote CRM (generic: RetailCRM first, Bitrix24 next).

Routing rings a caller's responsible manager first; it reads the retained directory entries the
adapter publishes (`pbxlink/v1/directory/{digits}`, contract in `pbxlink.routing.directory`).
With the embedded CRM they come from its tables. With a remote CRM, a feed (e.g.
`backends.retailcrm.directory`) mirrors the CRM's clients, their numbers (E.164) and
responsible managers into `remote_owners` here, and marks each number whose owners changed in
`directory_dirty`; the adapter's publisher then publishes `owner_payload` for it, the same way
as for the embedded CRM. `remote_sync` keeps each feed's cursor (the "changes since" point).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pbxlink.adapters.store import Store
from pbxlink.routing.directory import encode_directory_entry
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible
from pbxlink.wire.model import DirectoryTime


@dataclass(frozen=True, slots=True)
class RemoteOwner:
    """One remote client: its numbers (E.164) and responsible manager (an extension, if mapped)."""

    crm_id: str
    name: str
    created_at: datetime
    numbers: tuple[str, ...]
    responsible: str | None  # the CRM's user id, as text
    extension: str | None  # the manager's extension (None: not a pbxlink employee)
    blocked: bool = False


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _mark_dirty(store: Store, numbers: set[str]) -> None:
    await store.db.executemany(
        "INSERT INTO directory_dirty VALUES (?, 1) ON CONFLICT (e164) DO UPDATE SET gen = gen + 1",
        [(n,) for n in sorted(numbers)],
    )


async def upsert_owners(store: Store, owners: list[RemoteOwner]) -> int:
    """Mirror these clients (one transaction); returns how many numbers became dirty."""
    dirty: set[str] = set()
    async with store.transaction() as db:
        for owner in owners:
            rows = await db.execute_fetchall(
                "SELECT name, responsible, extension, blocked, numbers FROM remote_owners WHERE crm_id = ?",
                (owner.crm_id,),
            )
            old = next(iter(rows), None)
            old_numbers = set(json.loads(old[4])) if old else set()
            changed = old is None or (old[0], old[1], old[2], bool(old[3])) != (
                owner.name,
                owner.responsible,
                owner.extension,
                owner.blocked,
            )
            new_numbers = set(owner.numbers)
            dirty |= old_numbers ^ new_numbers
            if changed:
                dirty |= new_numbers
            await db.execute(
                "INSERT INTO remote_owners "
                "(crm_id, name, created_at, responsible, extension, blocked, numbers) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (crm_id) DO UPDATE SET name = excluded.name, "
                "responsible = excluded.responsible, extension = excluded.extension, "
                "blocked = excluded.blocked, numbers = excluded.numbers",
                (
                    owner.crm_id,
                    owner.name,
                    _iso(owner.created_at),
                    owner.responsible,
                    owner.extension,
                    int(owner.blocked),
                    json.dumps(sorted(new_numbers)),
                ),
            )
            await db.execute("DELETE FROM remote_owner_numbers WHERE crm_id = ?", (owner.crm_id,))
            await db.executemany(
                "INSERT OR IGNORE INTO remote_owner_numbers (e164, crm_id) VALUES (?, ?)",
                [(n, owner.crm_id) for n in new_numbers],
            )
        await _mark_dirty(store, dirty)
    return len(dirty)


async def remove_owners(store: Store, crm_ids: list[str]) -> int:
    dirty: set[str] = set()
    async with store.transaction() as db:
        for crm_id in crm_ids:
            rows = await db.execute_fetchall("SELECT numbers FROM remote_owners WHERE crm_id = ?", (crm_id,))
            for row in rows:
                dirty |= set(json.loads(row[0]))
            await db.execute("DELETE FROM remote_owners WHERE crm_id = ?", (crm_id,))
        await _mark_dirty(store, dirty)
    return len(dirty)


async def owner_entry(store: Store, e164: str, now: datetime) -> DirectoryEntry | None:
    rows = await store.db.execute_fetchall(
        "SELECT o.crm_id, o.name, o.created_at, o.responsible, o.extension, o.blocked "
        "FROM remote_owner_numbers n JOIN remote_owners o USING (crm_id) WHERE n.e164 = ? "
        "ORDER BY o.created_at, o.crm_id",
        (e164,),
    )
    clients = []
    for crm_id, name, created_at, responsible, extension, blocked in rows:
        responsibles: tuple[Responsible, ...] = ()
        if responsible is not None:
            employee = extension if extension is not None else f"crm-user:{responsible}"
            responsibles = (Responsible(employee, extension, extension is not None, bool(blocked), False),)
        clients.append(ClientOwners(str(crm_id), name, DirectoryTime.parse(created_at), responsibles))
    if not clients:
        return None
    return DirectoryEntry(
        number=e164, updated_at=DirectoryTime.of(now), clients=tuple(clients), employee=None
    )


async def owner_payload(store: Store, e164: str, now: datetime) -> bytes:
    """The retained directory payload of a number from the mirror (empty: delete the entry)."""
    entry = await owner_entry(store, e164, now)
    return b"" if entry is None else encode_directory_entry(entry)


async def sync_cursor(store: Store, feed: str) -> str | None:
    rows = await store.db.execute_fetchall("SELECT cursor FROM remote_sync WHERE feed = ?", (feed,))
    return next((str(r[0]) for r in rows), None)


async def set_sync_cursor(store: Store, feed: str, cursor: str) -> None:
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO remote_sync (feed, cursor) VALUES (?, ?) "
            "ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor",
            (feed, cursor),
        )
