"""Fault (e): the state directory full or read-only. A clear error; nothing pretends delivery.

These mount a small tmpfs (root needed: the lab runs as root anyway) so that the disk is really
full or really read-only, as SQLite sees it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mqtt_support import until

from pbxlink.daemon.envelope import Envelope, build_envelope
from pbxlink.daemon.metrics import DaemonMetrics
from pbxlink.daemon.outbox import Outbox, OutboxError, OutboxWriteError
from pbxlink.daemon.pipeline import OutboxWriter
from pbxlink.toolkit.metrics import sample
from pbxlink.wire.samples import sample_outcome

pytestmark = pytest.mark.lab  # needs root for mount(8)


def outcome(n: int) -> Envelope:
    padded = sample_outcome(f"pbx1:1.{n}", recordings=("x" * 2000,))
    return build_envelope(padded, node="pbx1", now=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("these tests mount a tmpfs and need root (deselect with -m 'not lab')")
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no block left."""
    filler = directory / "filler"
    with filler.open("wb") as fh:
        chunk = b"\0" * 65536
        with pytest.raises(OSError, match="No space left") as caught:  # noqa: PT012
            while True:
                fh.write(chunk)
                fh.flush()
    assert caught.value.errno == errno.ENOSPC
    return filler


def remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


async def test_a_full_disk_is_an_error_the_batch_waits_in_memory_and_commits_later(
    small_disk: Path,
) -> None:
    metrics = DaemonMetrics()
    commits = 0

    def committed() -> None:
        nonlocal commits
        commits += 1

    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        await outbox.add([outcome(0)], now=1.0, event_ttl=None)
        filler = fill(small_disk)
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=60, on_commit=committed)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(writer.run(), name="outbox-writer")
            writer.submit([outcome(i) for i in range(1, 40)])
            await until(lambda: sample(metrics.registry, "pbxlink_outbox_write_errors_total") >= 2)
            assert not writer.writable
            assert "disk is full" in (writer.last_error or "")
            assert writer.backlog == 39
            assert commits == 0  # the publisher was never told there is something to send
            assert [m.message_id for m in await outbox.pending(limit=100)] == ["pbx1:1.0"]

            filler.unlink()
            await until(lambda: writer.backlog == 0)
            writer.stop()
        assert writer.writable
        assert commits == 1
        pending = await outbox.pending(limit=100)
        assert [m.message_id for m in pending] == [f"pbx1:1.{i}" for i in range(40)]


async def test_a_write_on_a_full_disk_raises_a_clear_error_and_commits_nothing(
    small_disk: Path,
) -> None:
    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        fill(small_disk)
        with pytest.raises(OutboxWriteError, match="the disk is full"):
            await outbox.add([outcome(i) for i in range(50)], now=1.0, event_ttl=None)
    # Reopen after freeing space: none of the 50 is there, half-written or otherwise.
    (small_disk / "filler").unlink()
    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        assert await outbox.pending(limit=100) == []


async def test_a_read_only_state_directory_is_a_clear_error_at_open(small_disk: Path) -> None:
    remount(small_disk, "ro")
    with pytest.raises(OutboxError) as caught:
        await Outbox.open(small_disk / "outbox.sqlite")
    message = str(caught.value)
    assert "outbox.sqlite" in message
    assert "is not writable (read-only file system or permissions)" in message


async def test_an_existing_outbox_on_a_read_only_mount_is_refused_with_a_clear_error(
    small_disk: Path,
) -> None:
    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        await outbox.add([outcome(0)], now=1.0, event_ttl=None)
    remount(small_disk, "ro")
    with pytest.raises(OutboxError, match="is not writable"):
        await Outbox.open(small_disk / "outbox.sqlite")
    remount(small_disk, "rw")
    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        assert [m.message_id for m in await outbox.pending(limit=5)] == ["pbx1:1.0"]


async def test_a_full_backlog_pushes_back_until_the_disk_accepts_writes_again(
    small_disk: Path,
) -> None:
    metrics = DaemonMetrics()
    async with await Outbox.open(small_disk / "outbox.sqlite") as outbox:
        filler = fill(small_disk)
        writer = OutboxWriter(outbox, metrics=metrics, event_ttl=60, on_commit=lambda: None, max_backlog=10)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(writer.run(), name="outbox-writer")
            writer.submit([outcome(i) for i in range(5)])
            await asyncio.wait_for(writer.wait_for_room(), 1)  # below the limit: no waiting
            writer.submit([outcome(i) for i in range(5, 12)])
            room = tasks.create_task(writer.wait_for_room(), name="ami-reader-waiting")
            await asyncio.sleep(1.0)
            assert not room.done()  # the AMI reader would be parked here
            filler.unlink()
            await asyncio.wait_for(room, 20)
            await until(lambda: writer.backlog == 0)
            writer.stop()
        assert len(await outbox.pending(limit=100)) == 12
