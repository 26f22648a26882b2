"""CRM adapter integration fixtures: a real mosquitto on a free loopback port, started and
stopped by PID (until the lab's session fixture exists), and an MQTT test client."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 10000\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    log = workdir / "mosquitto.log"
    process = subprocess.Popen([binary, "-c", str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("mosquitto did not listen within 10 s")
        time.sleep(0.05)
    yield Broker(port, process, log)
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
