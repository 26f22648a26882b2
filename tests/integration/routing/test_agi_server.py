"""The FastAGI server on real TCP (127.0.0.1): answers, deadline, and every kind of bad peer.

A ticker task runs during each test; a blocked event loop would show as a large gap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbxlink.daemon.agi.directory_store import DirectoryStore
from pbxlink.daemon.agi.probe import agi_environment, ask
from pbxlink.daemon.agi.probe import main as probe_main
from pbxlink.daemon.agi.server import FastAgiServer
from pbxlink.daemon.agi.service import RoutingDecisions, RoutingService
from pbxlink.routing.directory import directory_topic, encode_directory_entry, parse_directory_message
from pbxlink.routing.model import (
    ClientOwners,
    DirectoryEntry,
    Responsible,
    RouteRequest,
    RoutingDecision,
    RoutingPolicy,
)
from pbxlink.routing.presence import PresenceTracker
from pbxlink.wire.model import DirectoryTime


@dataclass
class Ticker:
    """Ticks every 10 ms; `max_gap` shows whether anything blocked the event loop."""

    ticks: int = 0
    max_gap: float = 0.0
    last: float = 0.0

    def worst(self) -> float:
        """Largest gap between ticks so far, counting the one still open."""
        return max(self.max_gap, asyncio.get_running_loop().time() - self.last)


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    state = Ticker()
    loop = asyncio.get_running_loop()

    async def run() -> None:
        state.last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            state.max_gap = max(state.max_gap, now - state.last)
            state.ticks += 1
            state.last = now

    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(run(), name="ticker")
        await asyncio.sleep(0.02)  # let it tick
        yield state
        task.cancel()


NO_BLOCK = 0.5  # s: a loop that ever stalls this long is blocked (a ticker ticks every 10 ms)
KNOWN = "0981234567"


def owned_by(number: str, extension: str) -> bytes:
    entry = DirectoryEntry(
        number,
        DirectoryTime.parse("2026-11-22T10:00:00Z"),
        (
            ClientOwners(
                "c1",
                "Client",
                DirectoryTime.parse("2025-01-01T00:00:00Z"),
                (Responsible("ivan", extension),),
            ),
        ),
    )
    return encode_directory_entry(entry)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DirectoryStore]:
    async with DirectoryStore(tmp_path / "directory.sqlite3") as opened:
        await opened.apply(
            [parse_directory_message(directory_topic("+380981234567"), owned_by("+380981234567", "101"))]
        )
        yield opened


@pytest.fixture
def decisions() -> RoutingDecisions:
    return RoutingDecisions()


@pytest.fixture
async def server(store: DirectoryStore, decisions: RoutingDecisions) -> AsyncIterator[FastAgiServer]:
    await store.load()
    service = RoutingService(store, PresenceTracker(), RoutingPolicy(default_region="UA"))
    async with FastAgiServer(
        service.resolve,
        port=0,
        deadline_ms=300,
        io_timeout_ms=500,
        max_sessions=64,
        on_decision=decisions.record,
    ) as running:
        yield running


async def test_known_caller_gets_the_route_variables_and_the_decision_is_kept(
    server: FastAgiServer,
    decisions: RoutingDecisions,
    ticker: Ticker,
) -> None:
    session = await ask(server.port, caller=KNOWN, uniqueid="1700.7", linkedid="1700.1")
    assert session.variables == {
        "PBXLINK_ROUTE": "PJSIP/101",
        "PBXLINK_ROUTE_REASON": "owner",
        "PBXLINK_ROUTE_OWNER": "101",
    }
    assert session.closed_by_server
    by_channel, by_call = decisions.get("1700.7"), decisions.get("1700.1")
    assert by_channel is not None
    assert by_channel is by_call
    assert (by_channel.target, by_channel.caller_e164, by_channel.line) == (
        "PJSIP/101",
        "+380981234567",
        "4930100200",
    )
    assert by_channel.decided_in_ms is not None
    assert by_channel.decided_in_ms > 0
    assert server.counters.routed == 1
    assert ticker.worst() < NO_BLOCK


async def test_unknown_caller_gets_an_empty_route(server: FastAgiServer) -> None:
    session = await ask(server.port, caller="0990000000")
    assert session.variables == {
        "PBXLINK_ROUTE": "",
        "PBXLINK_ROUTE_REASON": "unknown_caller",
        "PBXLINK_ROUTE_OWNER": "",
    }


async def test_port_scans_and_early_closes_are_dropped_without_blocking(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    for _ in range(200):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
    # half a request, then gone (Asterisk hanging up during setup)
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_network_scr")
        await writer.drain()
        writer.close()
    await asyncio.sleep(0.2)
    assert server.counters.early_close == 250
    assert (await ask(server.port, caller=KNOWN)).variables["PBXLINK_ROUTE"] == "PJSIP/101"
    assert ticker.worst() < NO_BLOCK
    assert server.counters.active == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello\n\n",
        b"GET / HTTP/1.0\nHost: x\n\n",
        b"agi_network: yes\n\x00\xff\xfe binary\n\n",
        b"agi_channel: PJSIP/x\n\n",  # no request / script
    ],
)
async def test_garbage_requests_are_rejected_and_closed(
    server: FastAgiServer,
    garbage: bytes,
    ticker: Ticker,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(garbage)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, no command sent
    writer.close()
    assert server.counters.bad_request == 1
    assert ticker.worst() < NO_BLOCK


async def test_random_bytes_without_end_are_cut_at_the_size_limit(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(os.urandom(64 * 1024).replace(b"\n", b"x"))
    try:
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 2)
    except ConnectionError:
        rest = b""  # reset by the server's close: also a close
    assert rest == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert server.counters.oversize == 1
    assert ticker.worst() < NO_BLOCK


async def test_slow_client_is_cut_at_the_deadline(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def trickle() -> None:  # slowloris: one byte every 20 ms, never finishing
        for byte in b"agi_network: yes\nagi_network_script: route\nagi_request: agi://x/route\n":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.TaskGroup() as tasks:
        trickling = tasks.create_task(trickle(), name="slowloris")
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the server closed on us
        closed_after = loop.time() - started
        trickling.cancel()
    writer.close()
    assert 0.3 <= closed_after < 1.0  # deadline_ms=300
    assert server.counters.slow_request == 1
    assert (await ask(server.port, caller=KNOWN)).variables["PBXLINK_ROUTE"] == "PJSIP/101"
    assert ticker.worst() < NO_BLOCK


async def test_flood_beyond_max_sessions_is_shed_and_real_requests_still_answer(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
    await asyncio.sleep(0.1)
    assert server.counters.over_limit >= 300 - server.max_sessions
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.5)  # idle sessions end at their deadline
    assert server.counters.active == 0
    answers = await asyncio.gather(*(ask(server.port, caller=KNOWN, uniqueid=f"1.{i}") for i in range(40)))
    assert {a.variables["PBXLINK_ROUTE"] for a in answers} == {"PJSIP/101"}
    assert ticker.worst() < NO_BLOCK


async def test_client_that_never_acknowledges_is_dropped_after_the_io_timeout(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(agi_environment(server.port, caller=KNOWN, line="4930100200"))
    await writer.drain()
    first = await asyncio.wait_for(reader.readline(), 1)
    assert first.startswith(b"SET VARIABLE PBXLINK_ROUTE")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # never answered: server gives up
    writer.close()
    assert server.counters.answer_failed == 1
    assert ticker.worst() < NO_BLOCK


async def test_caller_hangup_during_the_answer_ends_the_session(
    server: FastAgiServer,
) -> None:
    session = await ask(server.port, caller=KNOWN, reply=b"HANGUP\n")
    assert session.closed_by_server
    assert len(session.commands) == 1
    assert server.counters.answered == 1


async def test_unknown_script_gets_no_answer(server: FastAgiServer) -> None:
    session = await ask(server.port, caller=KNOWN, script="other")
    assert session.commands == []
    assert server.counters.unknown_script == 1


async def test_directory_not_loaded_in_time_falls_through_at_the_deadline(
    tmp_path: Path,
    ticker: Ticker,
) -> None:
    async with DirectoryStore(tmp_path / "never-loaded.sqlite3") as unloaded:
        service = RoutingService(unloaded, PresenceTracker(), RoutingPolicy())
        async with FastAgiServer(service.resolve, port=0, deadline_ms=150) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            session = await ask(server.port, caller=KNOWN)
            elapsed = loop.time() - started
    assert session.variables == {
        "PBXLINK_ROUTE": "",
        "PBXLINK_ROUTE_REASON": "deadline",
        "PBXLINK_ROUTE_OWNER": "",
    }
    assert 0.15 <= elapsed < 1.0
    assert server.counters.deadline == 1
    assert ticker.worst() < NO_BLOCK


async def test_a_failing_resolver_falls_through_with_reason_error() -> None:
    async def broken(request: RouteRequest) -> RoutingDecision:
        raise RuntimeError("directory exploded")

    async with FastAgiServer(broken, port=0) as server:
        session = await ask(server.port, caller=KNOWN)
    assert session.variables["PBXLINK_ROUTE_REASON"] == "error"
    assert session.variables["PBXLINK_ROUTE"] == ""
    assert server.counters.errors == 1


async def test_five_hundred_concurrent_sessions_all_answer(
    server: FastAgiServer,
    ticker: Ticker,
) -> None:
    server.max_sessions = 1000
    answers = await asyncio.gather(*(ask(server.port, caller=KNOWN, uniqueid=f"2.{i}") for i in range(500)))
    reasons = {a.variables.get("PBXLINK_ROUTE_REASON") for a in answers}
    assert reasons <= {"owner", "deadline"}
    assert server.counters.answered == 500
    assert ticker.worst() < NO_BLOCK


async def test_route_probe_command_prints_what_the_server_routes(
    server: FastAgiServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(
        caller=KNOWN, line="4930100200", host="127.0.0.1", port=server.port, path="route"
    )
    assert await asyncio.to_thread(probe_main, args) == 0
    out = capsys.readouterr().out
    assert "PBXLINK_ROUTE=PJSIP/101\n" in out
    assert "PBXLINK_ROUTE_REASON=owner\n" in out


def test_route_probe_command_fails_when_nothing_listens() -> None:
    args = argparse.Namespace(caller=KNOWN, line="4930100200", host="127.0.0.1", port=1, path="route")
    assert probe_main(args) == 1
