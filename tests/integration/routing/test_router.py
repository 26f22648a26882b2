"""Router: the run-time assembly the daemon uses (SQLite directory, presence, AGI, decisions)."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

from pbxlink.ami.framing import Frame
from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.daemon.agi.probe import ask
from pbxlink.daemon.agi.router import DIRECTORY_FILE, Router
from pbxlink.daemon.config import Settings, StateSettings, load_settings
from pbxlink.routing.directory import directory_topic, encode_directory_entry, parse_directory_message
from pbxlink.routing.model import ClientOwners, DirectoryEntry, Responsible
from pbxlink.routing.settings import AgiSettings
from pbxlink.wire.model import DirectoryTime

NUMBER = "+380981234567"


def ami_frame(headers: dict[str, str]) -> Frame:
    """An AMI frame as Asterisk writes it: ``Key: value`` lines, CRLF."""
    return Frame("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode())


def settings_for(tmp_path: Path) -> Settings:
    base = load_settings(None)
    return dataclasses.replace(
        base,
        state=StateSettings(directory=tmp_path),
        agi=AgiSettings(port=0, deadline_ms=300),
    )


async def seed(tmp_path: Path) -> None:
    entry = DirectoryEntry(
        NUMBER,
        DirectoryTime.parse("2026-11-22T10:00:00Z"),
        (
            ClientOwners(
                "c1", "Client", DirectoryTime.parse("2025-01-01T00:00:00Z"), (Responsible("ivan", "101"),)
            ),
        ),
    )
    async with DirectoryStore(tmp_path / DIRECTORY_FILE) as store:
        await store.apply([parse_directory_message(directory_topic(NUMBER), encode_directory_entry(entry))])


async def test_router_routes_from_the_persisted_directory_and_live_presence(
    tmp_path: Path,
) -> None:
    await seed(tmp_path)
    async with Router(settings_for(tmp_path)) as router:
        await router.wait_ready()
        port = router.server.port
        first = await ask(port, caller="0981234567", uniqueid="17.2", linkedid="17.1")
        router.on_ami_frame(
            ami_frame({"Event": "DeviceStateChange", "Device": "PJSIP/101", "State": "INUSE"})
        )
        busy = await ask(port, caller="0981234567", uniqueid="18.2", linkedid="18.1")
        router.on_ami_snapshot(
            [
                ami_frame({"Event": "DeviceStateChange", "Device": "PJSIP/101", "State": "NOT_INUSE"}),
                ami_frame({"Event": "DeviceStateChange", "Device": "PJSIP/102"}),  # unreadable: counted
                ami_frame({"Event": "DeviceStateListComplete", "ListItems": "2"}),
            ]
        )
        again = await ask(port, caller="+380981234567", uniqueid="19.2", linkedid="19.1")
        routing = router.routing_for(["nope", "18.1"])
        assert router.presence_problems == 1
    assert first.variables["PBXLINK_ROUTE"] == "PJSIP/101"
    assert (busy.variables["PBXLINK_ROUTE"], busy.variables["PBXLINK_ROUTE_REASON"]) == ("", "owner_busy")
    assert again.variables["PBXLINK_ROUTE"] == "PJSIP/101"
    assert routing is not None
    assert (routing.reason, routing.owner, routing.caller_e164) == ("owner_busy", "101", NUMBER)


async def test_router_with_agi_disabled_does_not_listen(tmp_path: Path) -> None:
    settings = dataclasses.replace(settings_for(tmp_path), agi=AgiSettings(enabled=False, port=0))
    async with Router(settings) as router:
        await router.wait_ready()
        assert router.server.port == 0
        assert len(router.store.index) == 0


async def test_router_takes_the_loaded_directory_out_of_the_cyclic_gc(tmp_path: Path) -> None:
    """After the load, everything alive (the directory above all) is frozen: a full collection
    no longer walks a million-number dict (15-70 ms stalls in bench/bench_routing.py)."""
    await seed(tmp_path)
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        async with Router(settings_for(tmp_path)) as router:
            await router.wait_ready()
            assert gc.get_freeze_count() > 0
            assert router.store.lookup(NUMBER) is not None
            reply = await ask(router.server.port, caller="0981234567", uniqueid="20.2", linkedid="20.1")
        assert reply.variables["PBXLINK_ROUTE"] == "PJSIP/101"
    finally:
        gc.unfreeze()  # the rest of the test session keeps an ordinary GC
