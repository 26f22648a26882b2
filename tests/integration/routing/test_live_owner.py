"""Routing's live owner look-up in RetailCRM (`[live_owner]`), against the fake RetailCRM over
real HTTP: the manager RetailCRM names now wins over the mirrored directory; a manager who is not
free is skipped unless `ignore_status`; a slow CRM leaves the decision to the directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from pbxlab.fakes.retailcrm import FakeRetailCrm

from pbxlink.daemon.agi.live_owner import LiveOwners, LiveOwnerSettings, live_owner_problems
from pbxlink.daemon.agi.service import RoutingService
from pbxlink.foundation.config import Secret
from pbxlink.routing.directory import DirectoryIndex
from pbxlink.routing.model import RouteRequest, RoutingEntry
from pbxlink.routing.policy import routing_policy
from pbxlink.routing.presence import PresenceTracker
from pbxlink.routing.settings import RoutingSettings
from pbxlink.wire.model import Responsible

KEY = "live-key"
LINE = "4930100200"


class Directory(DirectoryIndex):
    """The in-memory directory index routing uses, already loaded."""

    async def wait_loaded(self) -> None:
        return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeRetailCrm]:
    crm = FakeRetailCrm(KEY, rate_limit=1000, users={27: {"first_name": "Anna"}})
    crm.add_user(28, "Boris", status="busy")
    await crm.start()
    async with httpx.AsyncClient(base_url=crm.url, headers={"X-API-KEY": KEY}) as http:
        module = {
            "code": "pbxlink",
            "integrationCode": "pbxlink",
            "name": "pbxlink",
            "integrations": {
                "telephony": {
                    "additionalCodes": [{"userId": 27, "code": "101"}, {"userId": 28, "code": "102"}]
                }
            },
        }
        answer = await http.post(
            "/api/v5/integration-modules/pbxlink/edit", data={"integrationModule": json.dumps(module)}
        )
        assert answer.status_code == 201
    crm.add_customer("Free manager's", ["050 111 00 01"], manager_id=27)
    crm.add_customer("Busy manager's", ["0501110002"], manager_id=28)
    yield crm
    await crm.stop()


def owned_by(extension: str) -> RoutingEntry:
    owner = (Responsible(employee=extension, extension=extension),)
    return RoutingEntry(employee=None, first=owner, newest=owner, clients=1)


async def resolve(fake: FakeRetailCrm, caller: str, directory: Directory, **settings: object) -> str:
    live = LiveOwners(LiveOwnerSettings(enabled=True, url=fake.url, api_key=Secret(KEY), **settings))  # type: ignore[arg-type]
    service = RoutingService(directory, PresenceTracker(), routing_policy(RoutingSettings(), "UA"), live=live)
    try:
        decision = await service.resolve(RouteRequest(caller=caller, line=LINE, uniqueid="1.1"))
    finally:
        await live.aclose()
    return f"{decision.reason} {decision.target}"


async def test_retailcrms_free_manager_wins_over_an_empty_directory(fake: FakeRetailCrm) -> None:
    assert await resolve(fake, "+380501110001", Directory()) == "owner PJSIP/101"


async def test_a_manager_who_is_not_free_is_skipped_unless_status_is_ignored(fake: FakeRetailCrm) -> None:
    directory = Directory()
    directory.put("380501110002", owned_by("102"))  # the mirror says 102 owns the number
    assert await resolve(fake, "0501110002", directory) == "no_responsible None"
    assert await resolve(fake, "0501110002", directory, ignore_status=True) == "owner PJSIP/102"


async def test_a_slow_retailcrm_leaves_the_decision_to_the_directory(fake: FakeRetailCrm) -> None:
    directory = Directory()
    directory.put("380501110002", owned_by("102"))
    fake.faults.delay = 1.0
    assert await resolve(fake, "0501110002", directory, timeout_ms=100) == "owner PJSIP/102"


async def test_answers_are_cached(fake: FakeRetailCrm) -> None:
    live = LiveOwners(LiveOwnerSettings(enabled=True, url=fake.url, api_key=Secret(KEY)))
    try:
        first = await live.lookup("+380501110001")
        again = await live.lookup("+380501110001")
    finally:
        await live.aclose()
    assert first == again == owned_by("101")
    asked = [r for r in fake.state.requests if r["path"] == "/api/v5/telephony/manager"]
    assert len(asked) == 2  # the first look-up asks in both written forms at once; the repeat asks nothing


def test_a_timeout_at_or_above_the_agi_deadline_is_a_config_problem() -> None:
    s = LiveOwnerSettings(enabled=True, url="https://x.retailcrm.ru", api_key=Secret("k"), timeout_ms=300)
    assert [p.path for p in live_owner_problems(s, 300)] == ["live_owner.timeout_ms"]
