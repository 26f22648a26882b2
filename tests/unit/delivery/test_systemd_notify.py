"""The sd_notify protocol against a real AF_UNIX datagram socket, as systemd listens."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbxlink.daemon.systemd import SystemdNotifier, keep_watchdog_fed


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_status_and_stopping_arrive_as_single_datagrams(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.ready("AMI up, MQTT up, outbox 0")
    assert notifier.status("MQTT down, outbox 3")
    assert notifier.stopping()
    assert _drain(sock) == [
        "READY=1\nSTATUS=AMI up, MQTT up, outbox 0",
        "STATUS=MQTT down, outbox 3",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier.from_environment({"NOTIFY_SOCKET": path}).reloading()
    (message,) = _drain(sock)
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= before + 5_000_000


def test_abstract_socket_addresses_start_with_a_nul_byte() -> None:
    name = f"pbxlink-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.notify("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify("READY=1") is False


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_interval is None
    mine = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval == 15.0


async def test_watchdog_pings_from_the_loop_at_half_the_interval(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    )  # 0.2 s: ping every 0.1 s
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(keep_watchdog_fed(notifier), name="watchdog")
        try:
            while len(arrivals) < 4:
                data = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
                assert data == b"WATCHDOG=1"
                arrivals.append(loop.time())
        finally:
            task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.09 for gap in gaps), gaps


async def test_watchdog_is_withheld_while_unhealthy(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    healthy = False
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(keep_watchdog_fed(notifier, healthy=lambda: healthy), name="watchdog")
        await asyncio.sleep(0.3)
        assert _drain(sock) == []
        healthy = True
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 100), 5)
        task.cancel()
    assert data == b"WATCHDOG=1"
