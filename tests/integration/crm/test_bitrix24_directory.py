"""Routing from Bitrix24: the ownership directory fed from the contacts' responsibles (full load,
then contacts modified since, users' working days from timeman.status), against the fake portal
over real HTTP and a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from pbxlab.bitrix24_rig import Rig, bitrix24_rig

from pbxlink.adapters.backends.bitrix24.directory import Bitrix24Directory
from pbxlink.adapters.backends.owners import owner_entry
from pbxlink.rules.samples import at

NOW = at("2026-12-03T08:00:00Z")


def feed(rig: Rig) -> Bitrix24Directory:
    return Bitrix24Directory(rig.store, rig.backend.api, rig.backend.s, rig.settings.crm)


async def dirty(rig: Rig) -> set[str]:
    rows = await rig.store.db.execute_fetchall("SELECT e164 FROM directory_dirty")
    return {str(r[0]) for r in rows}


async def responsible(rig: Rig, e164: str) -> tuple[str | None, bool]:
    entry = await owner_entry(rig.store, e164, NOW)
    assert entry is not None
    [client] = entry.clients
    [who] = client.responsibles
    return who.extension, who.blocked


async def test_the_full_load_maps_each_contacts_numbers_to_its_responsibles_inner_number(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        rig.fake.add_contact("ФОП Петренко", ["050 111 00 02", "+380671112233"], assigned=7)
        await feed(rig).sync_once()
        assert await dirty(rig) == {"+380501110002", "+380671112233"}
        assert await responsible(rig, "+380501110002") == ("101", False)


async def test_a_manager_not_at_work_is_blocked_and_published_again_when_the_day_starts(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        rig.fake.add_contact("Client", ["0501110002"], assigned=8)
        directory = feed(rig)
        await directory.sync_once()
        await rig.store.db.execute("DELETE FROM directory_dirty")
        rig.fake.portal.users[8]["TIMEMAN_STATUS"] = "CLOSED"
        assert await directory.sync_once() == 1
        assert await responsible(rig, "+380501110002") == ("102", True)
        rig.fake.portal.users[8]["TIMEMAN_STATUS"] = "OPENED"
        assert await directory.sync_once() == 1
        assert await responsible(rig, "+380501110002") == ("102", False)


async def test_a_contact_reassigned_in_the_portal_is_picked_up_by_the_next_sync(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        contact = rig.fake.add_contact("Client", ["0501110002"], assigned=7)
        directory = feed(rig)
        await directory.sync_once()
        rig.fake.portal.contacts[contact]["ASSIGNED_BY_ID"] = 8
        rig.fake.portal.contacts[contact]["DATE_MODIFY"] = "2099-01-01T00:00:00+00:00"
        await rig.store.db.execute("DELETE FROM directory_dirty")
        await directory.sync_once()
        assert await dirty(rig) == {"+380501110002"}
        assert await responsible(rig, "+380501110002") == ("102", False)
        before = len(rig.fake.portal.requests)
        assert await directory.sync_once() == 0  # nothing changed since: nothing published
        # user.get, the timeman batch, one page each of contacts, companies and leads
        assert len(rig.fake.portal.requests) - before <= 5


async def test_a_number_only_on_a_company_routes_to_the_companys_responsible(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        rig.fake.add_company("ТОВ Ромашка", ["044 222 33 44"], assigned=8)
        await feed(rig).sync_once()
        assert await dirty(rig) == {"+380442223344"}
        assert await responsible(rig, "+380442223344") == ("102", False)


async def test_a_number_only_on_a_lead_routes_to_the_leads_responsible(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        rig.fake.add_lead("Заявка с сайта", ["0671112233"], assigned=7)
        await feed(rig).sync_once()
        assert await responsible(rig, "+380671112233") == ("101", False)


async def test_converted_and_failed_leads_are_not_clients_and_a_lead_closed_later_is_dropped(
    tmp_path: Path,
) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        rig.fake.add_lead("Converted", ["0501110001"], assigned=7, semantic="S")
        rig.fake.add_lead("Junk", ["0501110002"], assigned=7, semantic="F")
        lead = rig.fake.add_lead("In work", ["0501110003"], assigned=7)
        directory = feed(rig)
        await directory.sync_once()
        assert await dirty(rig) == {"+380501110003"}
        assert await owner_entry(rig.store, "+380501110001", NOW) is None
        rig.fake.portal.leads[lead]["STATUS_SEMANTIC_ID"] = "F"
        rig.fake.portal.leads[lead]["DATE_MODIFY"] = "2099-01-01T00:00:00+00:00"
        await rig.store.db.execute("DELETE FROM directory_dirty")
        assert await directory.sync_once() == 1
        assert await owner_entry(rig.store, "+380501110003", NOW) is None


async def test_a_company_reassigned_after_the_initial_load_arrives_with_the_next_poll(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        company = rig.fake.add_company("ТОВ Ромашка", ["0442223344"], assigned=7)
        directory = feed(rig)
        await directory.sync_once()
        assert await responsible(rig, "+380442223344") == ("101", False)
        rig.fake.portal.companies[company]["ASSIGNED_BY_ID"] = 8
        rig.fake.portal.companies[company]["DATE_MODIFY"] = "2099-01-01T00:00:00+00:00"
        await rig.store.db.execute("DELETE FROM directory_dirty")
        await directory.sync_once()
        assert await dirty(rig) == {"+380442223344"}
        assert await responsible(rig, "+380442223344") == ("102", False)


async def test_a_number_on_a_contact_and_a_company_lists_both_oldest_first(tmp_path: Path) -> None:
    async with bitrix24_rig(tmp_path) as rig:
        company = rig.fake.add_company("ТОВ Ромашка", ["0442223344"], assigned=8)
        rig.fake.portal.companies[company]["DATE_CREATE"] = "2025-01-01T00:00:00+00:00"
        contact = rig.fake.add_contact("Петренко", ["+380442223344"], assigned=7)
        await feed(rig).sync_once()
        entry = await owner_entry(rig.store, "+380442223344", NOW)
        assert entry is not None
        assert [c.client_id for c in entry.clients] == [f"CO_{company}", str(contact)]
        assert [c.responsibles[0].extension for c in entry.clients] == ["102", "101"]
