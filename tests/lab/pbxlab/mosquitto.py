"""A lab mosquitto broker on 127.0.0.1: own config, persistence dir and pid.

Never touches a system mosquitto service.  The state directory (default
/run/pbxlab/mosquitto-<name>) holds mosquitto.conf, mosquitto.pid,
mosquitto.log and data/ (persistence).  Stopping and starting again with the
same name and port keeps the persisted sessions and messages (fault tests).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pbxlab import ports
from pbxlab.instance import LAB_DIR, STATE_ROOT, LabError

_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    pid: int
    name: str
    state_dir: Path

    @property
    def log_file(self) -> Path:
        return self.state_dir / "mosquitto.log"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the one helper: pbxlab.ports)."""
    return ports.free_port()


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """A TLS-only listener: the broker's certificate, and the CA clients must be signed by."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True  # clients must present a certificate signed by ca_file

    def config(self) -> str:
        return (
            f"cafile {self.ca_file}\ncertfile {self.cert_file}\nkeyfile {self.key_file}\n"
            f"require_certificate {'true' if self.require_certificate else 'false'}\n"
        )


def _find_mosquitto() -> str | None:
    exe = shutil.which("mosquitto")
    if exe is None and Path("/usr/sbin/mosquitto").exists():
        exe = "/usr/sbin/mosquitto"
    return exe


def _mosquitto_exe() -> str:
    """mosquitto's path; as root, install it (bookworm's package) when missing."""
    exe = _find_mosquitto()
    if exe is None and os.geteuid() == 0:
        subprocess.run(
            ["bash", str(LAB_DIR / "asterisk-setup.sh"), "--host-tools"],
            capture_output=True,
            timeout=600,
            check=False,
        )
        exe = _find_mosquitto()
    if exe is None:
        raise LabError("mosquitto is not installed (tests/lab/asterisk-setup.sh installs it, as root)")
    return exe


def _pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_mosquitto(
    port: int | None = None,
    name: str = "default",
    state_dir: Path | None = None,
    *,
    autosave_interval: int = 1,
    timeout: float = 10.0,
    tls: BrokerTls | None = None,
    extra_config: str = "",
    persistence: bool = True,
) -> Broker:
    """Start a broker (or return the one already running under `name`).

    ``tls`` makes the one listener TLS-only; ``persistence=False`` keeps nothing on disk
    (benches). ``extra_config`` is appended to the generated mosquitto.conf: ``password_file``,
    ``acl_file``, ``allow_anonymous false``, limits...
    """
    state = state_dir or STATE_ROOT / f"mosquitto-{name}"
    pid_file = state / "mosquitto.pid"
    port_file = state / "port"
    if pid_file.exists() and port_file.exists():
        pid = int(pid_file.read_text())
        old_port = int(port_file.read_text())
        if _pid_alive(pid) and (port is None or port == old_port):
            return Broker("127.0.0.1", old_port, pid, name, state)
    port = port or free_port()
    (state / "data").mkdir(parents=True, exist_ok=True)
    # run as the current user: the state dir may be a private temp dir that
    # mosquitto's own user could not enter
    user = pwd.getpwuid(os.geteuid()).pw_name
    conf = state / "mosquitto.conf"
    lines = [
        "# pbxlab broker (generated)",
        f"listener {port} 127.0.0.1",
        tls.config() if tls is not None else "",
        # extra_config may say otherwise (a password_file test): then it alone decides.
        "" if "allow_anonymous" in extra_config else "allow_anonymous true",
        # QoS 1 round trips otherwise wait on Nagle + delayed ACK on the broker's side too.
        "set_tcp_nodelay true",
        "persistence true" if persistence else "persistence false",
        f"persistence_location {state / 'data'}/" if persistence else "",
        f"autosave_interval {autosave_interval}" if persistence else "",
        f"log_dest file {state / 'mosquitto.log'}",
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information",
        "connection_messages true",
        f"user {user}",
        extra_config,
    ]
    conf.write_text("\n".join(line.rstrip("\n") for line in lines if line) + "\n")
    log = state / "mosquitto.log"
    with (state / "stderr.log").open("wb") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [_mosquitto_exe(), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if proc.poll() is not None:
            tail = (state / "stderr.log").read_text(errors="replace")[-1500:]
            tail += log.read_text(errors="replace")[-1500:]
            raise LabError(f"mosquitto exited at start (code {proc.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise LabError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout} s")
        time.sleep(0.05)
    pid_file.write_text(f"{proc.pid}\n")
    port_file.write_text(f"{port}\n")
    return Broker("127.0.0.1", port, proc.pid, name, state)


def stop_mosquitto(
    broker: Broker | None = None,
    *,
    name: str = "default",
    state_dir: Path | None = None,
    kill: bool = False,
    timeout: float = 10.0,
) -> None:
    """Stop a lab broker by its pid (SIGTERM, or SIGKILL with kill=True)."""
    state = broker.state_dir if broker else (state_dir or STATE_ROOT / f"mosquitto-{name}")
    pid_file = state / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            child = _children.get(pid)
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait(timeout)
    pid_file.unlink(missing_ok=True)


class BrokerHandle:
    """A lab broker that tests can stop, kill and start again (same port and data)."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        port: int | None = None,
        *,
        tls: BrokerTls | None = None,
        extra_config: str = "",
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self._tls = tls
        self._extra = extra_config
        self._broker = start_mosquitto(port, name, state_dir, tls=tls, extra_config=extra_config)

    @property
    def host(self) -> str:
        return self._broker.host

    @property
    def port(self) -> int:
        return self._broker.port

    @property
    def pid(self) -> int:
        return self._broker.pid

    @property
    def log_file(self) -> Path:
        return self._broker.log_file

    @property
    def running(self) -> bool:
        return _pid_alive(self._broker.pid)

    def stop(self, *, kill: bool = False) -> None:
        stop_mosquitto(self._broker, kill=kill)

    def start(self) -> None:
        self._broker = start_mosquitto(
            self._broker.port, self.name, self.state_dir, tls=self._tls, extra_config=self._extra
        )

    def restart(self) -> None:
        self.stop()
        self.start()
