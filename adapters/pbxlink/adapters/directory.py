"""Ownership directory (CRM side): who is responsible for the callers of each number.

Triggers in the database mark a number dirty whenever its clients, their responsibles or an
employee change (`directory_dirty`, with a generation counter). The adapter publishes a retained
entry per dirty number (`pbxlink/v1/directory/{digits}`, the contract in
`pbxlink.routing.directory`) and clears the mark only if it did not change meanwhile.
"""

from __future__ import annotations

from datetime import datetime

from pbxlink.adapters.backends.sqlite_crm import from_iso
from pbxlink.adapters.store import Store
from pbxlink.routing.directory import encode_directory_entry
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible
from pbxlink.wire.model import DirectoryTime


async def directory_entry(store: Store, e164: str, now: datetime) -> DirectoryEntry | None:
    """The entry for one number, or None when nobody owns it any more (delete the entry)."""
    db = store.db
    async with db.execute(
        "SELECT c.id, c.name, c.created_at FROM client_phones p JOIN clients c ON c.id = p.client_id "
        "WHERE p.e164 = ? ORDER BY c.created_at, c.id",
        (e164,),
    ) as cursor:
        clients = await cursor.fetchall()
    owners = []
    for client_id, name, created_at in clients:
        async with db.execute(
            "SELECT r.employee, e.extension, e.id IS NOT NULL, coalesce(e.blocked, 0), "
            "coalesce(e.deleted, 0) FROM client_responsibles r "
            "LEFT JOIN employees e ON e.id = r.employee WHERE r.client_id = ? ORDER BY r.position",
            (client_id,),
        ) as cursor:
            responsibles = tuple(
                Responsible(r[0], r[1], bool(r[2]), bool(r[3]), bool(r[4])) for r in await cursor.fetchall()
            )
        owners.append(
            ClientOwners(str(client_id), name, DirectoryTime.of(from_iso(created_at)), responsibles)
        )
    async with db.execute(
        "SELECT id FROM employees WHERE phone_e164 = ? AND deleted = 0 ORDER BY id LIMIT 1", (e164,)
    ) as cursor:
        row = await cursor.fetchone()
    employee = None if row is None else str(row[0])
    if not owners and employee is None:
        return None
    return DirectoryEntry(
        number=e164, updated_at=DirectoryTime.of(now), clients=tuple(owners), employee=employee
    )


async def dirty_numbers(store: Store, limit: int = 500) -> list[tuple[str, int]]:
    async with store.db.execute(
        "SELECT e164, gen FROM directory_dirty ORDER BY e164 LIMIT ?", (limit,)
    ) as cursor:
        return [(r[0], int(r[1])) for r in await cursor.fetchall()]


async def directory_payload(store: Store, e164: str, now: datetime) -> bytes:
    """The retained payload for a number: the entry, or empty (deletes the retained entry)."""
    entry = await directory_entry(store, e164, now)
    return b"" if entry is None else encode_directory_entry(entry)


async def clear_dirty(store: Store, published: list[tuple[str, int]]) -> None:
    """Forget the marks of published numbers, unless they changed again meanwhile."""
    async with store.transaction() as db:
        await db.executemany("DELETE FROM directory_dirty WHERE e164 = ? AND gen = ?", published)


async def mark_all_dirty(store: Store) -> None:
    """Re-publish every number (after a restore or to repair a broker that lost retained data)."""
    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO directory_dirty SELECT DISTINCT e164, 1 FROM client_phones WHERE true "
            "ON CONFLICT (e164) DO UPDATE SET gen = gen + 1"
        )
        await db.execute(
            "INSERT INTO directory_dirty SELECT phone_e164, 1 FROM employees "
            "WHERE phone_e164 IS NOT NULL ON CONFLICT (e164) DO UPDATE SET gen = gen + 1"
        )
