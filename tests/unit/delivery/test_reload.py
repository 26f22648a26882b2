"""SIGHUP reloads: a bad config is refused whole; a good one is applied except restart-only parts."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbxlink.daemon.config import Settings, load_settings
from pbxlink.daemon.runtime import Daemon
from pbxlink.daemon.systemd import SystemdNotifier
from pbxlink.toolkit.metrics import sample


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, SystemdNotifier]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock, SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


async def test_a_bad_config_on_reload_is_refused_and_the_running_one_stays(
    tmp_path: Path,
    notify: tuple[socket.socket, SystemdNotifier],
) -> None:
    sock, notifier = notify
    config = write_config(tmp_path / "pbxlink.toml", "[mqtt]\nport = 1883\n")
    daemon = Daemon(load_settings(config), reload_settings=lambda: load_settings(config), notifier=notifier)
    before = daemon.settings
    write_config(config, '[mqtt]\nport = 70000\nbogus = 1\n[ami]\nport = "x"\n')

    assert daemon.apply_reload() is False
    assert daemon.settings is before
    assert sample(daemon.metrics.registry, "pbxlink_config_reloads_total", result="error") == 1
    messages = received(sock)
    assert messages[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[-1].startswith("READY=1\nSTATUS=")
    assert "reload refused" in messages[-1]


async def test_a_good_config_is_applied_but_restart_only_sections_keep_their_values(
    tmp_path: Path,
    notify: tuple[socket.socket, SystemdNotifier],
) -> None:
    _, notifier = notify
    config = write_config(tmp_path / "pbxlink.toml", "[mqtt]\nport = 1883\n")
    daemon = Daemon(load_settings(config), reload_settings=lambda: load_settings(config), notifier=notifier)
    old: Settings = daemon.settings
    write_config(config, '[mqtt]\nport = 1884\n[tracker]\nsettle_seconds = 9.0\n[node]\nname = "pbx9"\n')

    assert daemon.apply_reload() is True
    assert daemon.settings.mqtt.port == 1884
    assert daemon.settings.tracker == old.tracker
    assert daemon.settings.node == old.node
    assert sample(daemon.metrics.registry, "pbxlink_config_reloads_total", result="applied") == 1


def test_a_reload_without_a_config_source_does_nothing() -> None:
    daemon = Daemon(dataclasses.replace(Settings()), notifier=SystemdNotifier(None))
    assert daemon.apply_reload() is False
