"""The outbox keeps messages durably, in order, until they are acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pbxlink.daemon.envelope import Envelope, build_envelope
from pbxlink.daemon.outbox import MessageStatus, Outbox, OutboxError
from pbxlink.wire.samples import sample_event, sample_outcome

NOW = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)


def outcome(linkedid: str, *, answered: bool = True) -> Envelope:
    return build_envelope(sample_outcome(f"pbx1:{linkedid}", answered=answered), node="pbx1", now=NOW)


def event(linkedid: str, seq: int) -> Envelope:
    return build_envelope(sample_event(f"pbx1:{linkedid}", seq), node="pbx1", now=NOW)


async def test_pending_messages_come_back_in_commit_order_until_marked_sent(
    tmp_path: Path,
) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        await outbox.add([event("1.1", 1), outcome("1.1")], now=100.0, event_ttl=60)
        await outbox.add([outcome("2.2", answered=False)], now=101.0, event_ttl=60)

        pending = await outbox.pending(limit=10)
        assert [m.message_id for m in pending] == ["pbx1:1.1:1", "pbx1:1.1", "pbx1:2.2"]
        assert pending[1].topic == "pbxlink/v1/pbx1/call/outcome"
        assert pending[0].topic == "pbxlink/v1/pbx1/call/event"
        assert pending[2].answered is False

        await outbox.mark_sent([pending[0].seq, pending[1].seq], now=102.0)
        rest = await outbox.pending(limit=10)
        assert [m.message_id for m in rest] == ["pbx1:2.2"]
        assert await outbox.status_of("pbx1:1.1") is MessageStatus.SENT


async def test_pending_pages_after_a_sequence_number(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        await outbox.add([outcome(f"{i}.0") for i in range(5)], now=1.0, event_ttl=None)
        first = await outbox.pending(limit=2)
        second = await outbox.pending(limit=2, after_seq=first[-1].seq)
        assert [m.message_id for m in first + second] == [f"pbx1:{i}.0" for i in range(4)]


async def test_a_message_id_already_in_the_outbox_is_not_added_twice(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        assert await outbox.add([outcome("1.1")], now=1.0, event_ttl=None) == 1
        await outbox.mark_sent([(await outbox.pending(limit=1))[0].seq], now=2.0)
        assert await outbox.add([outcome("1.1"), outcome("3.3")], now=3.0, event_ttl=None) == 1
        assert [m.message_id for m in await outbox.pending(limit=10)] == ["pbx1:3.3"]


async def test_live_events_carry_an_expiry_and_outcomes_do_not(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        await outbox.add([event("1.1", 1), outcome("1.1")], now=100.0, event_ttl=30)
        ev, out = await outbox.pending(limit=10)
        assert ev.expires_at == 130.0
        assert out.expires_at is None
        await outbox.mark_expired([ev.seq], now=200.0)
        assert await outbox.status_of(ev.message_id) is MessageStatus.EXPIRED


async def test_prune_deletes_only_finished_rows_older_than_the_cutoff(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        await outbox.add([outcome("1.1"), outcome("2.2"), outcome("3.3")], now=1.0, event_ttl=None)
        one, two, _three = await outbox.pending(limit=10)
        await outbox.mark_sent([one.seq], now=10.0)
        await outbox.mark_sent([two.seq], now=50.0)

        assert await outbox.prune(done_before=20.0) == 1
        assert await outbox.status_of("pbx1:1.1") is None
        assert await outbox.status_of("pbx1:2.2") is MessageStatus.SENT
        assert await outbox.status_of("pbx1:3.3") is MessageStatus.PENDING  # never pruned


async def test_stats_count_pending_by_kind_and_the_oldest(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        empty = await outbox.stats()
        assert (empty.pending_outcomes, empty.pending_events) == (0, 0)
        assert empty.oldest_pending_created_at is None
        await outbox.add([event("1.1", 1)], now=5.0, event_ttl=60)
        await outbox.add([outcome("1.1"), outcome("2.2")], now=7.0, event_ttl=60)
        stats = await outbox.stats()
        assert (stats.pending_outcomes, stats.pending_events) == (2, 1)
        assert stats.oldest_pending_created_at == 5.0


async def test_tracker_state_is_replaced_by_name(tmp_path: Path) -> None:
    async with await Outbox.open(tmp_path / "o.sqlite") as outbox:
        assert await outbox.load_tracker_state("calls") is None
        await outbox.save_tracker_state("calls", b"one", now=1.0)
        await outbox.save_tracker_state("calls", b"two", now=2.0)
        assert await outbox.load_tracker_state("calls") == b"two"


async def test_missing_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match=r"state directory .* does not exist"):
        await Outbox.open(tmp_path / "nope" / "o.sqlite")


WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from pbxlink.daemon.envelope import build_envelope
from pbxlink.daemon.outbox import Outbox
from pbxlink.wire.samples import sample_outcome

async def main() -> None:
    outbox = await Outbox.open(Path(sys.argv[1]))
    now = datetime.now(UTC)
    for i in range(50):
        env = build_envelope(sample_outcome(f"pbx1:{i}.0"), node="pbx1", now=now)
        await outbox.add([env], now=float(i), event_ttl=None)
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _run_writer_and_kill_it(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_committed_rows_survive_the_writer_being_killed(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    proc = _run_writer_and_kill_it(path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "committed"
    async with await Outbox.open(path) as outbox:
        pending = await outbox.pending(limit=100)
    assert [m.message_id for m in pending] == [f"pbx1:{i}.0" for i in range(50)]
    assert json.loads(pending[0].payload)["id"] == "pbx1:0.0"
