"""AmiShell and the recorder against the real lab Asterisk 22 (fixture ``asterisk_lab``).

Calls are placed by SIPp through the lab driver (pbxlab); the driver's own blocking calls
run in a worker thread so the shell's event loop keeps reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pbxlab import Call, Phone
from pbxlab.context import ScenarioContext
from pbxlab.session import LabSession
from structlog.testing import capture_logs

from pbxlink.ami.framing import AmiFramer, Frame
from pbxlink.daemon.amiclient.record import TranscriptItems, iter_transcript, record
from pbxlink.daemon.amiclient.shell import (
    AmiItem,
    AmiLoginError,
    AmiSettings,
    AmiShell,
    ConnectionLost,
    Resynced,
)

ROUTING_DID = "4930100200"
CALLER = "0981234567"
CALLER_NAME = "Іван Петренко"


@pytest.fixture
def settings(asterisk_lab: LabSession) -> AmiSettings:
    return AmiSettings(
        host=asterisk_lab.host,
        port=asterisk_lab.ami_port,
        username=asterisk_lab.ami_user,
        secret=asterisk_lab.ami_secret,
        ping_interval=1.0,
        ping_timeout=2.0,
        action_timeout=5.0,
        backoff_initial=0.1,
        backoff_max=1.0,
    )


@pytest.fixture
def call_context(asterisk_lab: LabSession, tmp_path: Path) -> Iterator[ScenarioContext]:
    assert asterisk_lab.driver.ami.wait_idle(timeout=15), "channels left from an earlier test"
    ctx = ScenarioContext(asterisk_lab.driver, tmp_path)
    try:
        yield ctx
    finally:
        ctx.finish_calls(timeout=30)
        asterisk_lab.driver.ami.wait_idle(timeout=15)
        ctx.close()


async def until(
    items: AsyncIterator[AmiItem],
    match: type[Resynced] | type[ConnectionLost] | str,
    within: float = 15.0,
) -> AmiItem:
    async with asyncio.timeout(within):
        async for item in items:
            if isinstance(match, str):
                if isinstance(item, Frame) and item.event == match:
                    return item
            elif isinstance(item, match):
                return item
    raise AssertionError(f"stream ended before {match}")


async def test_login_to_the_lab_reports_asterisk_22(settings: AmiSettings) -> None:
    async with AmiShell(settings) as shell:
        marker = await until(shell.frames(), Resynced)
        assert isinstance(marker, Resynced)
        assert marker.session == 1
        assert marker.asterisk_version.startswith("22.")
        assert marker.banner.startswith("Asterisk Call Manager/")
        assert shell.asterisk_version == marker.asterisk_version
        core = await shell.action("CoreSettings")
        assert core.response.get("AsteriskVersion") == marker.asterisk_version
        version = await shell.action("Command", {"Command": "core show version"})
        assert any(v.startswith("Asterisk 22.") for v in version.response.get_all("Output"))


async def test_wrong_secret_on_the_lab_is_a_clear_login_error(settings: AmiSettings) -> None:
    bad = replace(settings, secret="not-the-secret")
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(AmiLoginError) as caught:
        async with AmiShell(bad):
            pass
    assert str(caught.value) == (
        f"AMI login failed for user {settings.username!r} at {settings.host}:{settings.port}: "
        "Authentication failed"
    )
    assert time.monotonic() - started < 5  # refused once, not retried in a loop
    assert "not-the-secret" not in repr(logs)


async def test_reconnect_during_a_live_call_resyncs_the_channels_already_up(
    settings: AmiSettings, call_context: ScenarioContext
) -> None:
    async with AmiShell(settings) as shell:
        items = shell.frames()
        first = await until(items, Resynced)
        assert isinstance(first, Resynced)
        assert first.channels == ()
        await asyncio.to_thread(call_context.phones, a101=Phone.answers(ring_ms=500, talk_ms=60000))
        await asyncio.to_thread(call_context.call, Call(ROUTING_DID, CALLER, CALLER_NAME, hold_ms=9000))
        trunk = await until(items, "Newchannel")
        assert isinstance(trunk, Frame)
        assert trunk.get("CallerIDName") == CALLER_NAME
        linkedid = trunk.get("Linkedid")
        agent_in_bridge = None
        while agent_in_bridge is None:
            enter = await until(items, "BridgeEnter")
            assert isinstance(enter, Frame)
            if (enter.get("Channel") or "").startswith("PJSIP/101-"):
                agent_in_bridge = enter

        shell.abort_connection()  # cut the TCP connection mid-call

        lost = await until(items, ConnectionLost)
        assert isinstance(lost, ConnectionLost)
        assert lost.reason == "aborted by pbxlink"
        again = await until(items, Resynced)
        assert isinstance(again, Resynced)
        assert again.session == 2
        by_channel = {f.get("Channel"): f for f in again.channels}
        assert trunk.get("Channel") in by_channel
        assert agent_in_bridge.get("Channel") in by_channel
        caller_leg = by_channel[trunk.get("Channel")]
        assert caller_leg.get("Linkedid") == linkedid
        assert caller_leg.get("CallerIDName") == CALLER_NAME
        assert caller_leg.get("BridgeId") == agent_in_bridge.get("BridgeUniqueid")
        assert agent_in_bridge.get("BridgeUniqueid") in {b.get("BridgeUniqueid") for b in again.bridges}
        # the stream goes on after the resync: the same call ends on the new session
        while True:
            hangup = await until(items, "Hangup", within=30)
            assert isinstance(hangup, Frame)
            if hangup.get("Channel") == trunk.get("Channel"):
                break
        assert shell.stats().sessions == 2


async def test_record_writes_the_raw_session_that_the_framer_reads_back(
    settings: AmiSettings, tmp_path: Path
) -> None:
    out = tmp_path / "session.ami.gz"
    summary = await record(settings, out, 1.5, asyncio.Event())
    assert summary.ended_by == "duration"
    assert summary.bytes_written > 0
    framer = AmiFramer()
    frames = [f for chunk in iter_transcript(out) for f in framer.feed(chunk)]
    assert framer.banner is not None
    assert framer.banner.startswith("Asterisk Call Manager/")
    assert framer.take_problems() == []
    assert framer.pending_bytes == 0
    assert frames[0].response == "Success"
    assert frames[0].get("ActionID") == "pbxlink/login/1"
    core = next(f for f in frames if f.get("ActionID") == "pbxlink/resync/1/CoreSettings")
    assert (core.get("AsteriskVersion") or "").startswith("22.")
    assert frames[-1].response == "Goodbye"
    assert sum(len(c) for c in iter_transcript(out)) == summary.bytes_written
    assert b"Secret" not in b"".join(iter_transcript(out))


async def test_asterisk_restart_is_ridden_out_with_backoff_and_a_new_resync(
    settings: AmiSettings, asterisk_lab: LabSession
) -> None:
    async with AmiShell(settings) as shell:
        items = shell.frames()
        await until(items, Resynced)
        await asyncio.to_thread(asterisk_lab.stop_asterisk)
        lost = await until(items, ConnectionLost)
        assert isinstance(lost, ConnectionLost)
        await asyncio.sleep(1.0)  # connection refused meanwhile: the shell backs off
        assert not shell.connected
        await asyncio.to_thread(asterisk_lab.start_asterisk)
        again = await until(items, Resynced, within=30)
        assert isinstance(again, Resynced)
        assert again.session == 2
        assert again.asterisk_version.startswith("22.")
        assert shell.stats().connect_failures >= 1
        assert (await shell.action("Ping")).ok


async def test_replaying_a_recording_yields_what_the_live_shell_queued(
    settings: AmiSettings, call_context: ScenarioContext, tmp_path: Path
) -> None:
    """Recorded while a call is already up: the marker carries it, live and in replay."""
    await asyncio.to_thread(call_context.phones, a101=Phone.answers(ring_ms=300, talk_ms=60000))
    await asyncio.to_thread(call_context.call, Call(ROUTING_DID, CALLER, CALLER_NAME, hold_ms=6000))
    await asyncio.to_thread(call_context.wait_bridged, "101")
    out = tmp_path / "mid-call.ami"
    live: list[AmiItem] = []
    with out.open("wb") as file:
        async with AmiShell(settings, tee=file.write) as shell:
            items = shell.frames()
            async with asyncio.timeout(30):
                async for item in items:
                    live.append(item)
                    if (
                        isinstance(item, Frame)
                        and item.event == "Hangup"
                        and (item.get("CallerIDName") == CALLER_NAME)
                    ):
                        break
    replay = TranscriptItems()
    replayed = [item for chunk in iter_transcript(out) for item in replay.feed(chunk)]
    (marker,) = [item for item in live if isinstance(item, Resynced)]
    assert any(f.get("CallerIDName") == CALLER_NAME for f in marker.channels)
    assert any((f.get("Channel") or "").startswith("PJSIP/101-") for f in marker.channels)
    assert len(marker.bridges) >= 1
    (rebuilt,) = [item for item in replayed if isinstance(item, Resynced)]
    assert replace(rebuilt, taken_at=0.0) == replace(marker, taken_at=0.0)
    assert abs(rebuilt.taken_at - marker.taken_at) < 5
    # every live item is in the replay, in the same order (the replay may run on past the
    # point where the test stopped reading: the Logoff reply is dropped, late events kept)
    assert [i for i in replayed if not isinstance(i, Resynced)][: len(live) - 1] == [
        i for i in live if not isinstance(i, Resynced)
    ]
    # Replay puts the marker right after the BridgeListComplete bytes. The live shell queues it
    # when the snapshot action's coroutine wakes, so events that came in the same read, just after
    # the snapshot's end, can be queued ahead of it (seen once in CI with CEL over AMI on). The
    # marker is never earlier live than in replay, and only events sit in between.
    at_replay, at_live = replayed.index(rebuilt), live.index(marker)
    assert at_replay <= at_live
    assert all(isinstance(item, Frame) and item.event is not None for item in live[at_replay:at_live])
