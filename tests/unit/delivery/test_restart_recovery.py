"""A daemon restart in the middle of real recorded AMI sessions loses and duplicates nothing.

The first part of a recording goes through the pipeline into an outbox (as `pbxlink run` does,
journal included); then everything in memory is thrown away, as a crash would. A new pipeline is
rebuilt from the outbox's AMI journal and gets the rest of the recording. The outbox must then
hold exactly the outcomes `pbxlink replay` computes for the whole recording, each once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pbxlink.ami.decode import AmiDecoder
from pbxlink.ami.events import Cel
from pbxlink.ami.framing import AmiFramer, Frame
from pbxlink.calls.tracker import CallTracker, CallTrackerSettings
from pbxlink.daemon.envelope import MessageKind
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import (
    JournalEntry,
    JournalKind,
    Outbox,
    pack_frames,
    unpack_frames,
)
from pbxlink.daemon.pipeline import CallPipeline, OutboxWriter
from pbxlink.daemon.replay import read_chunks, replay_outcomes

_DATA = Path(__file__).parents[2] / "data" / "ami"
RECORDINGS = sorted([*_DATA.glob("*.ami"), *_DATA.glob("*.ami.gz")])


def frames_of(recording: Path) -> list[Frame]:
    framer = AmiFramer()
    return [frame for chunk in read_chunks(recording) for frame in framer.feed(chunk)]


async def run_part(path: Path, frames: list[Frame], *, restore: bool, finish: bool) -> None:
    """One daemon life: open the outbox, (restore,) feed frames, commit, drop everything."""
    metrics = DaemonMetrics()
    async with await Outbox.open(path) as outbox:
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=300, on_commit=lambda: None)
        pipeline = CallPipeline(CallTracker(CallTrackerSettings()), writer, node="pbx1", metrics=metrics)
        if restore:
            pipeline.replay_journal(await outbox.journal())
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(writer.run(), name="outbox-writer")
            for frame in frames:
                pipeline.feed(frame)
                await asyncio.sleep(0)  # let the writer commit while frames arrive, as in the daemon
            if finish:
                pipeline.tick(float("inf"))
            writer.stop()


async def outcomes_in(path: Path) -> dict[str, object]:
    async with await Outbox.open(path) as outbox:
        rows = await outbox.pending(limit=100_000)
    found: dict[str, object] = {}
    for row in rows:
        if row.kind is MessageKind.OUTCOME:
            assert row.message_id not in found
            found[row.message_id] = json.loads(row.payload)["data"]
    return found


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.name.split(".")[0])
async def test_a_restart_mid_recording_yields_every_outcome_once(
    recording: Path,
    cut: float,
    tmp_path: Path,
) -> None:
    frames = frames_of(recording)
    at = int(len(frames) * cut)
    path = tmp_path / "outbox.sqlite"
    await run_part(path, frames[:at], restore=False, finish=False)
    await run_part(path, frames[at:], restore=True, finish=True)

    expected = {o["id"]: o for o in replay_outcomes(read_chunks(recording))}
    assert await outcomes_in(path) == expected


async def test_the_journal_is_emptied_when_no_call_is_left(tmp_path: Path) -> None:
    recording = _DATA / "internal_answered.ami"
    path = tmp_path / "outbox.sqlite"
    await run_part(path, frames_of(recording), restore=False, finish=True)
    async with await Outbox.open(path) as outbox:
        (only,) = await outbox.journal()
    assert only.kind is JournalKind.CLOCK
    assert only.at is not None
    assert only.at > 1.7e9  # the AMI time of the recording


async def test_journal_entries_round_trip_in_order_and_reset_in_the_same_commit(
    tmp_path: Path,
) -> None:
    snapshot = pack_frames([b"Event: CoreShowChannel\r\nChannel: PJSIP/101-1", b"", b"x" * 70000])
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        await outbox.add(
            [],
            now=1.0,
            event_ttl=None,
            journal=[
                JournalEntry(JournalKind.FRAME, b"Event: Newchannel"),
                JournalEntry(JournalKind.RESYNC, snapshot, at=5.5),
            ],
        )
        entries = await outbox.journal()
        assert [e.kind for e in entries] == [JournalKind.FRAME, JournalKind.RESYNC]
        assert unpack_frames(entries[1].data) == [
            b"Event: CoreShowChannel\r\nChannel: PJSIP/101-1",
            b"",
            b"x" * 70000,
        ]
        assert entries[1].at == 5.5
        await outbox.add(
            [],
            now=2.0,
            event_ttl=None,
            reset_journal=True,
            journal=[JournalEntry(JournalKind.FRAME, b"Event: Hangup")],
        )
        assert [e.data for e in await outbox.journal()] == [b"Event: Hangup"]


async def run_life(
    path: Path, frames: list[Frame], records: list[Cel], later: list[Frame], *, finish: bool
) -> None:
    """One daemon life: ``frames``, then a CEL backfill of an AMI gap, then ``later`` frames."""
    metrics = DaemonMetrics()
    async with await Outbox.open(path) as outbox:
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=300, on_commit=lambda: None)
        pipeline = CallPipeline(CallTracker(CallTrackerSettings()), writer, node="pbx1", metrics=metrics)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(writer.run(), name="outbox-writer")
            for frame in frames:
                pipeline.feed(frame)
                await asyncio.sleep(0)
            pipeline.backfill(records, until=records[-1].time or 0.0)
            for frame in later:
                pipeline.feed(frame)
                await asyncio.sleep(0)
            if finish:
                pipeline.tick(float("inf"))
            writer.stop()


def _split(recording: Path) -> tuple[list[Frame], list[Cel], list[Frame]]:
    """AMI up for the first third, down for the second (its CEL records stand in), up again."""
    frames = frames_of(recording)
    cel_decoder = AmiDecoder(["CEL"], cel_types=None)
    stamped = [(f, float(f.value("Timestamp") or 0)) for f in frames]
    times = [t for _, t in stamped if t]
    cut1, cut2 = times[0] + (times[-1] - times[0]) / 3, times[0] + 2 * (times[-1] - times[0]) / 3
    before = [f for f, t in stamped if t <= cut1]
    gap = [cel_decoder.decode(f) for f, t in stamped if cut1 < t <= cut2 and f.event == "CEL"]
    after = [f for f, t in stamped if t > cut2]
    return before, [r for r in gap if isinstance(r, Cel)], after


@pytest.mark.parametrize("name", ["inbound_answered", "queue_local_member_answered", "blind_transfer_ami"])
async def test_a_restart_right_after_a_cel_backfill_rebuilds_the_backfilled_calls(
    name: str, tmp_path: Path
) -> None:
    """The CEL records folded in are journaled (kind 'cel'): a crash after the backfill and a
    restart give the very outcomes of a daemon that did not crash."""
    before, gap, after = _split(_DATA / f"{name}.ami")
    assert gap
    steady = tmp_path / "steady.sqlite"
    await run_life(steady, before, gap, after, finish=True)  # no crash
    crashed = tmp_path / "crashed.sqlite"
    await run_life(crashed, before, gap, [], finish=False)  # crash right after the backfill
    async with await Outbox.open(crashed) as outbox:
        assert JournalKind.CEL in {e.kind for e in await outbox.journal()}
    await run_part(crashed, after, restore=True, finish=True)
    outcomes = await outcomes_in(crashed)
    assert outcomes == await outcomes_in(steady)
    assert len(outcomes) == 1
    assert all(o["reconstructed"] for o in outcomes.values())  # type: ignore[index]
