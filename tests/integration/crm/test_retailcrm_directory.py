"""Routing from RetailCRM: the ownership directory fed from the customers' managers (initial full
load, then changes since), against the fake RetailCRM over real HTTP and a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from pbxlab.retailcrm_rig import KEY, Rig, retailcrm_rig

from pbxlink.adapters.backends.owners import owner_entry, owner_payload
from pbxlink.adapters.backends.retailcrm.directory import RetailCrmDirectory
from pbxlink.routing.directory import parse_directory_entry
from pbxlink.rules.samples import at

NOW = at("2026-12-03T08:00:00Z")


def feed(rig: Rig) -> RetailCrmDirectory:
    return RetailCrmDirectory(rig.store, rig.client, rig.backend.s, rig.settings.crm)


async def dirty(rig: Rig) -> set[str]:
    rows = await rig.store.db.execute_fetchall("SELECT e164 FROM directory_dirty")
    return {str(r[0]) for r in rows}


async def test_the_full_load_maps_every_customers_numbers_to_their_managers_extension(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        rig.fake.add_customer("ФОП Петренко", ["050 111 00 02", "+380671112233"], manager_id=27)
        rig.fake.add_customer("Без менеджера", ["0501110003"])
        await feed(rig).sync_once()
        assert await dirty(rig) == {"+380501110002", "+380671112233", "+380501110003"}
        entry = await owner_entry(rig.store, "+380501110002", NOW)
        assert entry is not None
        [client] = entry.clients
        assert client.name == "ФОП Петренко"
        [responsible] = client.responsibles
        assert (responsible.employee, responsible.extension, responsible.is_employee) == ("101", "101", True)
        unowned = await owner_entry(rig.store, "+380501110003", NOW)
        assert unowned is not None
        assert unowned.clients[0].responsibles == ()


async def test_the_payload_is_the_routing_directory_contract(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        rig.fake.add_customer("ФОП Петренко", ["050 111 00 02"], manager_id=27)
        await feed(rig).sync_once()
        payload = await owner_payload(rig.store, "+380501110002", NOW)
        entry = parse_directory_entry(json.loads(payload), "pbxlink/v1/directory/380501110002")
        assert entry.clients[0].responsibles[0].extension == "101"
        assert await owner_payload(rig.store, "+380000000000", NOW) == b""  # nobody: delete


async def test_a_manager_changed_in_retailcrm_reaches_the_directory_with_the_next_sync(
    tmp_path: Path,
) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        customer = rig.fake.add_customer("ФОП Петренко", ["050 111 00 02"], manager_id=27)
        directory = feed(rig)
        await directory.sync_once()
        await rig.store.db.execute("DELETE FROM directory_dirty")
        async with httpx.AsyncClient(base_url=rig.fake.url, headers={"X-API-KEY": KEY}) as http:
            answer = await http.post(
                f"/api/v5/customers/{customer['id']}/edit",
                data={"by": "id", "customer": json.dumps({"managerId": 28})},
            )
            assert answer.status_code == 200
            new = await http.post(
                "/api/v5/customers/create",
                data={
                    "customer": json.dumps(
                        {"firstName": "Новий", "phones": [{"number": "0931112233"}], "managerId": 27}
                    )
                },
            )
            assert new.status_code == 201
        await directory.sync_once()
        assert await dirty(rig) == {"+380501110002", "+380931112233"}
        entry = await owner_entry(rig.store, "+380501110002", NOW)
        assert entry is not None
        assert entry.clients[0].responsibles[0].extension == "102"
        await rig.store.db.execute("DELETE FROM directory_dirty")
        await directory.sync_once()  # nothing changed since: nothing to publish
        assert await dirty(rig) == set()


async def test_a_manager_whose_retailcrm_user_is_not_active_is_marked_blocked(tmp_path: Path) -> None:
    async with retailcrm_rig(tmp_path) as rig:
        rig.fake.add_user(30, "Звільнена", active=False)
        rig.fake.add_customer("Клієнт", ["0501110004"], manager_id=30)
        await feed(rig).sync_once()
        entry = await owner_entry(rig.store, "+380501110004", NOW)
        assert entry is not None
        [responsible] = entry.clients[0].responsibles
        assert responsible.blocked
        assert not responsible.is_employee  # user 30 has no extension in [crm.retailcrm.users]
