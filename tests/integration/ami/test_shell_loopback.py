"""AmiShell against real TCP peers on 127.0.0.1 that misbehave on purpose.

The peers are small asyncio servers (loopback_ami.py): one that speaks AMI like Asterisk and
can be told to push garbage, oversized frames or to stop answering, one that never answers
at all, one that is not AMI. These faults cannot be provoked on demand from a real Asterisk.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).parent))

from loopback_ami import LoopbackAmi, frame  # type: ignore[import-not-found]
from panoramisk.actions import Action
from pbxlab.ports import free_port

from pbxlink.ami.framing import Frame
from pbxlink.daemon.amiclient.protocol import FramingProtocol, LinkCounters
from pbxlink.daemon.amiclient.shell import (
    AmiActionTimeout,
    AmiConnectError,
    AmiItem,
    AmiLoginError,
    AmiProtocolError,
    AmiSettings,
    AmiShell,
    ConnectionLost,
    Resynced,
)


def fast(port: int, secret: str = "pbxlink") -> AmiSettings:
    """Settings with short timers so faults show within a second."""
    return AmiSettings(
        port=port,
        secret=secret,
        ping_interval=0.3,
        ping_timeout=0.3,
        action_timeout=1.0,
        connect_timeout=1.0,
        backoff_initial=0.05,
        backoff_max=0.2,
    )


Peer = tuple[LoopbackAmi, AmiSettings]


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    server = LoopbackAmi(channels=[["Channel: PJSIP/101-00000001", "Linkedid: 1.1"]])
    port = await server.start()
    try:
        yield server, fast(port)
    finally:
        await server.stop()


async def next_item(items: AsyncIterator[AmiItem], within: float = 5.0) -> AmiItem:
    async with asyncio.timeout(within):
        return await anext(items)


async def next_frame(items: AsyncIterator[AmiItem], event: str, within: float = 5.0) -> Frame:
    async with asyncio.timeout(within):
        async for item in items:
            if isinstance(item, Frame) and item.event == event:
                return item
    raise AssertionError(f"stream ended before {event}")


async def next_marker(
    items: AsyncIterator[AmiItem], kind: type[Resynced] | type[ConnectionLost], within: float = 5.0
) -> Resynced | ConnectionLost:
    async with asyncio.timeout(within):
        async for item in items:
            if isinstance(item, kind):
                return item
    raise AssertionError(f"stream ended before {kind.__name__}")


async def test_first_login_queues_a_resync_marker_with_the_channels(peer: Peer) -> None:
    server, settings = peer
    async with AmiShell(settings) as shell:
        items = shell.frames()
        marker = await next_marker(items, Resynced)
        assert isinstance(marker, Resynced)
        assert marker.session == 1
        assert marker.asterisk_version == "22.0.0"
        assert [f.get("Channel") for f in marker.channels] == ["PJSIP/101-00000001"]
        assert shell.connected
    assert [a["action"] for a in server.actions] == [
        "Login",
        "CoreSettings",
        "CoreShowChannels",
        "BridgeList",
        "Logoff",
    ]


async def test_garbage_and_oversized_frames_are_logged_counted_and_the_stream_goes_on(
    peer: Peer,
) -> None:
    server, settings = peer
    settings = replace(settings, max_frame_bytes=64 * 1024)
    name = "Іван Петренко".encode()
    with capture_logs() as logs:
        await _garbage_then_events(server, settings, name)
    (dropped,) = [entry for entry in logs if entry["event"] == "ami_frame_dropped"]
    assert dropped["reason"] == "oversized"
    assert dropped["limit"] == 64 * 1024
    assert dropped["head"].startswith("Event: Huge")


async def _garbage_then_events(server: LoopbackAmi, settings: AmiSettings, name: bytes) -> None:
    async with AmiShell(settings) as shell:
        items = shell.frames()
        await next_marker(items, Resynced)
        await server.push(frame("Event: Before", "Uniqueid: 1.1"))
        await server.push(b"\x00\xff\xfe garbage without colon\r\n\r\n")
        await server.push(b"Event: Huge\r\nData: " + b"x" * (2 << 20) + b"\r\n\r\n")
        split = b"Event: After\r\nCallerIDName: " + name + b"\r\n\r\n"
        cut = split.index(name) + 1  # inside the first Cyrillic character
        await server.push(split[:cut])
        await asyncio.sleep(0.05)
        await server.push(split[cut:])
        seen: list[Frame] = []
        while len(seen) < 3:
            item = await next_item(items)
            if isinstance(item, Frame) and item.event != "FullyBooted":
                seen.append(item)
        before, garbage, after = seen
        assert before.event == "Before"
        assert garbage.event is None
        assert garbage.lossy
        assert after.event == "After"
        assert after.get("CallerIDName") == "Іван Петренко"
        stats = shell.stats()
        assert stats.oversized_frames == 1
        assert stats.handler_errors == 0
        assert stats.sessions == 1  # the connection survived all of it
        assert (await shell.action("Ping")).ok


async def test_failing_tee_is_counted_and_does_not_break_the_connection(peer: Peer) -> None:
    server, settings = peer

    def broken_tee(data: bytes) -> None:
        raise OSError("disk full")

    async with AmiShell(settings, tee=broken_tee) as shell:
        items = shell.frames()
        await next_marker(items, Resynced)
        await server.push(frame("Event: StillHere"))
        assert (await next_frame(items, "StillHere")).event == "StillHere"
        assert shell.stats().tee_errors > 0
        assert shell.stats().sessions == 1


async def test_hung_peer_is_detected_by_the_ping_watchdog_and_the_shell_reconnects(peer: Peer) -> None:
    server, settings = peer
    async with AmiShell(settings) as shell:
        items = shell.frames()
        await next_marker(items, Resynced)
        server.mute = True  # connected, reading, never answering again
        started = time.monotonic()
        lost = await next_marker(items, ConnectionLost, within=5)
        assert isinstance(lost, ConnectionLost)
        assert "no reply to Ping" in lost.reason
        assert time.monotonic() - started < settings.ping_interval + settings.ping_timeout + 1
        assert shell.stats().ping_timeouts == 1
        server.mute = False
        marker = await next_marker(items, Resynced, within=10)
        assert isinstance(marker, Resynced)
        assert marker.session == 2
        assert server.logins >= 2


async def test_dropped_connection_is_followed_by_lost_and_resynced_markers(peer: Peer) -> None:
    server, settings = peer
    async with AmiShell(settings) as shell:
        items = shell.frames()
        await next_marker(items, Resynced)
        server.drop_clients()
        lost = await next_marker(items, ConnectionLost)
        assert isinstance(lost, ConnectionLost)
        assert lost.session == 1
        marker = await next_marker(items, Resynced)
        assert isinstance(marker, Resynced)
        assert marker.session == 2
        assert len(marker.channels) == 1


async def test_action_timeout_leaves_no_pending_action(peer: Peer) -> None:
    server, settings = peer
    server.ignore_actions = frozenset({"status"})
    async with AmiShell(settings) as shell:
        with pytest.raises(AmiActionTimeout, match="Status"):
            await shell.action("Status", within=0.2)
        assert shell.pending_actions == 0
        assert (await shell.action("Ping")).ok


async def test_action_header_with_line_break_is_refused_before_sending(peer: Peer) -> None:
    server, settings = peer
    async with AmiShell(settings) as shell:
        with pytest.raises(ValueError, match="single line"):
            await shell.action("Setvar", {"Value": "x\r\nAction: Originate"})
    assert "setvar" not in {a["action"].lower() for a in server.actions}


async def test_wrong_secret_raises_login_error_without_logging_the_secret(peer: Peer) -> None:
    server, settings = peer
    server.login_delay_on_failure = 0.05
    bad = replace(settings, secret="s3cr3t-wrong")
    with capture_logs() as logs, pytest.raises(AmiLoginError) as caught:
        async with AmiShell(bad):
            pass
    assert str(caught.value).startswith("AMI login failed for user 'pbxlink' at 127.0.0.1:")
    assert caught.value.reason == "Authentication failed"
    assert "s3cr3t-wrong" not in repr(logs)
    assert "s3cr3t-wrong" not in repr(bad)
    assert server.accepted == 1  # refused logins are not retried


async def test_peer_that_never_answers_fails_the_first_connect_in_time() -> None:
    server = LoopbackAmi(silent=True)
    port = await server.start()
    settings = fast(port, "x")
    started = time.monotonic()
    try:
        with pytest.raises(AmiConnectError, match="Login"):
            async with AmiShell(settings, retry_first_connect=False):
                pass
    finally:
        await server.stop()
    assert time.monotonic() - started < settings.action_timeout + 1


async def test_peer_that_is_not_ami_is_a_protocol_error() -> None:
    server = LoopbackAmi(greeting=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    port = await server.start()
    try:
        with pytest.raises(AmiProtocolError, match="not an Asterisk manager interface"):
            async with AmiShell(fast(port, "x")):
                pass
    finally:
        await server.stop()


async def test_closed_port_without_retry_is_a_connect_error() -> None:
    port = free_port()
    with pytest.raises(AmiConnectError, match=f"127.0.0.1:{port}"):
        async with AmiShell(fast(port), retry_first_connect=False):
            pass


async def test_first_connect_retries_until_asterisk_comes_up() -> None:
    server = LoopbackAmi()
    port = free_port()
    settings = fast(port)

    async def start_late() -> None:
        await asyncio.sleep(0.4)
        await server.start(port)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(start_late())
        async with AmiShell(settings) as shell:
            assert shell.stats().connect_failures >= 1
            assert shell.connected
    await server.stop()


async def test_slow_consumer_pauses_reading_and_loses_nothing(peer: Peer) -> None:
    server, settings = peer
    settings = replace(settings, queue_high_water=20)
    async with AmiShell(settings) as shell:
        for n in range(200):
            await server.push(frame("Event: Numbered", f"N: {n}"))
        await asyncio.sleep(0.2)
        assert shell.stats().reading_paused
        got: list[int] = []
        items = shell.frames()
        while len(got) < 200:
            item = await next_item(items)
            if isinstance(item, Frame) and item.event == "Numbered":
                got.append(int(item.get("N") or -1))
        assert got == list(range(200))
        assert not shell.stats().reading_paused


async def test_frames_has_exactly_one_consumer_at_a_time(peer: Peer) -> None:
    server, settings = peer
    async with AmiShell(settings) as shell:
        first = shell.frames()
        await next_marker(first, Resynced)  # the queue is empty now
        async with asyncio.TaskGroup() as tasks:
            waiting = tasks.create_task(next_item(first), name="first-consumer")
            await asyncio.sleep(0.05)  # let it wait on the queue
            with pytest.raises(RuntimeError, match="one consumer"):
                await anext(shell.frames())
            await server.push(frame("Event: ForTheFirst"))
            item = await asyncio.wait_for(waiting, 5)
        assert isinstance(item, Frame)
        assert item.event == "ForTheFirst"
        # taken one after the other, iterators share the one queue
        await server.push(frame("Event: ForTheSecond"))
        assert (await next_frame(shell.frames(), "ForTheSecond")).event == "ForTheSecond"


async def test_stream_ends_after_the_shell_closes(peer: Peer) -> None:
    _, settings = peer
    async with AmiShell(settings) as shell:
        pass
    rest = [item async for item in shell.frames()]
    assert isinstance(rest[-1], Resynced | Frame)


async def test_login_refused_on_reconnect_ends_the_shell_with_the_login_error(peer: Peer) -> None:
    server, settings = peer
    server.login_delay_on_failure = 0.05
    consumed: list[AmiItem] = []

    async def run_until_refused() -> None:
        async with AmiShell(settings) as shell:
            items = shell.frames()
            await next_marker(items, Resynced)
            server.secret = "rotated"  # the admin changed the secret in manager.conf
            server.drop_clients()
            async with asyncio.timeout(5):
                async for item in items:  # cancelled when the supervisor fails
                    consumed.append(item)

    with pytest.raises(AmiLoginError, match="AMI login failed for user 'pbxlink'"):
        await run_until_refused()
    assert any(isinstance(item, ConnectionLost) for item in consumed)
    assert server.accepted == 2  # one refused login, no retry loop


async def test_snapshot_that_times_out_is_retried_and_its_partial_session_is_closed(
    peer: Peer,
) -> None:
    server, settings = peer
    server.ignore_actions = frozenset({"coreshowchannels"})

    async def answer_again_later() -> None:
        await asyncio.sleep(settings.action_timeout / 2)
        server.ignore_actions = frozenset()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(answer_again_later())
        async with AmiShell(settings) as shell:
            items = shell.frames()
            lost = await next_marker(items, ConnectionLost)
            assert isinstance(lost, ConnectionLost)
            assert lost.session == 1
            assert "AmiActionTimeout" in lost.reason
            marker = await next_marker(items, Resynced)
            assert isinstance(marker, Resynced)
            assert marker.session == 2
            assert shell.stats().connect_failures == 1


async def test_exception_while_handling_a_frame_is_counted_and_the_link_survives(
    peer: Peer,
) -> None:
    """The protocol on a real socket, with a delivery callback that fails on one frame."""
    server, settings = peer
    delivered: list[str] = []
    after = asyncio.Event()
    counters = LinkCounters()

    def deliver(frame: Frame, protocol: FramingProtocol) -> None:
        if frame.event == "Poison":
            raise KeyError("a bug in our handling")
        delivered.append(frame.event or "")
        if frame.event == "After":
            after.set()

    loop = asyncio.get_running_loop()
    protocol = FramingProtocol(max_frame_bytes=4096, deliver=deliver, counters=counters)
    await loop.create_connection(lambda: protocol, "127.0.0.1", settings.port)
    try:
        ping = Action({"Action": "Ping", "ActionID": "p1"})
        async with asyncio.timeout(5):
            await protocol.send_action(ping)  # the server has our connection now
        # one read carrying three frames: the failing one sits in the middle
        await server.push(frame("Event: Before") + frame("Event: Poison") + frame("Event: After"))
        async with asyncio.timeout(5):
            await after.wait()
        assert delivered == ["Before", "After"]
        assert counters.handler_errors == 1
        assert not protocol.closed
    finally:
        protocol.abort("test over")
