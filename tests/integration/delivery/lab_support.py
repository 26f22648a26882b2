"""Delivery fault-test support: the daemon as a real process, an AMI TCP proxy, calls.

* :class:`DaemonProcess` runs ``pbxlink run`` with a generated TOML config (JSON log lines to a
  file), and can SIGTERM, SIGKILL and restart it by PID.
* :class:`AmiProxy` sits between the daemon and Asterisk's AMI on loopback: it forwards bytes
  both ways, can sever every connection (fault c) and can inject bytes into the
  Asterisk → daemon direction at a frame boundary (fault f).
* :class:`CallLoad` places internal calls 101 → 102 with SIPp (102 is a SIPp phone that answers).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbxlab import Call, LabInstance, Phone
from pbxlab.ports import free_port
from pbxlab.sipp import PortBlock, Sipp, SippProcess

PBXLINK = Path(sys.executable).with_name("pbxlink")


@dataclass
class DaemonConfig:
    ami_port: int
    mqtt_port: int
    state_dir: Path
    secret_file: Path
    http_port: int
    node: str = "pbx1"
    max_frame_bytes: int = 65536
    agi_port: int | None = None  # None: routing (FastAGI) off
    cel_backend: str = "none"  # "sqlite" / "csv": read Asterisk's CEL back after a gap
    cel_path: Path | None = None
    final_on_linkedid_end: bool = True
    settle_seconds: float = 1.0

    def toml(self) -> str:
        return (
            f'[node]\nname = "{self.node}"\n'
            f'[ami]\nhost = "127.0.0.1"\nport = {self.ami_port}\nusername = "pbxlink"\n'
            f'secret_file = "{self.secret_file}"\nbackoff_initial = 0.2\nbackoff_max = 2.0\n'
            f"ping_interval = 2.0\nping_timeout = 2.0\nmax_frame_bytes = {self.max_frame_bytes}\n"
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_port}\n'
            "backoff_initial = 0.2\nbackoff_max = 2.0\n"
            f'[state]\ndirectory = "{self.state_dir}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            + (
                "[agi]\nenabled = false\n"
                if self.agi_port is None
                else f'[agi]\nenabled = true\nhost = "127.0.0.1"\nport = {self.agi_port}\n'
            )
            + '[log]\nformat = "json"\n'
            + f"[tracker]\nsettle_seconds = {self.settle_seconds}\n"
            + f'[cel]\nbackend = "{self.cel_backend}"\n'
            + f"final_on_linkedid_end = {str(self.final_on_linkedid_end).lower()}\n"
            + (f'path = "{self.cel_path}"\n' if self.cel_path is not None else "")
        )


class DaemonProcess:
    """``pbxlink run`` as a child process, by PID."""

    def __init__(self, workdir: Path, config: DaemonConfig) -> None:
        self.workdir = workdir
        self.config = config
        self.config_file = workdir / "pbxlink.toml"
        self.log_file = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def write_config(self) -> None:
        self.config_file.write_text(self.config.toml())

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        assert self.process is None or self.process.poll() is not None
        self.write_config()
        self.starts += 1
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PBXLINK), "run", "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})},
            )

    def wait_ready(self, within: float = 30.0) -> None:
        """Until /readyz answers 200 (AMI, MQTT, outbox all fine)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited {self.process.returncode}:\n{self.log_tail()}")
            if self.readyz()[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"the daemon was not ready within {within} s:\n{self.log_tail()}")

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.config.http_port}/readyz", timeout=2
            ) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, {}

    def metrics(self) -> dict[str, float]:
        """The /metrics samples without histogram buckets: ``name{labels}`` → value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.config.http_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "_bucket{" not in line:
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def terminate(self, within: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(within)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_file.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def log_tail(self, n: int = 40) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])


def new_daemon(
    workdir: Path, lab: LabInstance, mqtt_port: int, *, ami_port: int | None = None
) -> DaemonProcess:
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    secret = workdir / "ami-secret"
    secret.write_text(lab.ami_secret)
    config = DaemonConfig(
        ami_port=ami_port or lab.ami_port,
        mqtt_port=mqtt_port,
        state_dir=state,
        secret_file=secret,
        http_port=free_port(),
    )
    return DaemonProcess(workdir, config)


class AmiProxy:
    """A loopback TCP proxy in a thread: sever connections, inject bytes at frame boundaries."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._peer: dict[socket.socket, socket.socket] = {}
        self._tail: dict[socket.socket, bytes] = {}  # last bytes sent to each client
        self._injections: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = False
        self.connections = 0
        self.refusing = False
        self._thread = threading.Thread(target=self._loop, name="ami-proxy", daemon=True)
        self._thread.start()

    def go_down(self) -> int:
        """Cut every connection and refuse new ones until :meth:`come_back` (an AMI outage)."""
        self.refusing = True
        return self.sever()

    def come_back(self) -> None:
        self.refusing = False

    def sever(self) -> int:
        """Reset every open connection (both sides); return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for client, upstream in pairs:
                for sock in (client, upstream):
                    with contextlib.suppress(OSError, KeyError, ValueError):
                        self._selector.unregister(sock)
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                        sock.close()
                    self._peer.pop(sock, None)
                    self._tail.pop(sock, None)
        return len(pairs)

    def inject(self, data: bytes) -> None:
        """Send ``data`` to the daemon at the next frame boundary of the Asterisk stream."""
        with self._lock:
            self._injections.append(data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sever()
        self._listener.close()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                    continue
                with self._lock:
                    self._forward(sock)
            with self._lock:
                self._flush_injections()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.refusing:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self.connections += 1
            for sock in (client, upstream):
                sock.setblocking(True)
                sock.settimeout(5)
                self._selector.register(sock, selectors.EVENT_READ, None)
            self._pairs.append((client, upstream))
            self._peer[client] = upstream
            self._peer[upstream] = client
            self._tail[client] = b"\r\n\r\n"

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peer.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        try:
            peer.sendall(data)
        except OSError:
            self._drop(sock)
            return
        if peer in self._tail:  # bytes towards the daemon: remember where frames end
            self._tail[peer] = (self._tail[peer] + data)[-4:]

    def _flush_injections(self) -> None:
        if not self._injections:
            return
        clients = [c for c, tail in self._tail.items() if tail.endswith((b"\n\r\n", b"\n\n"))]
        if not clients:
            return
        for data in self._injections:
            for client in clients:
                with contextlib.suppress(OSError):
                    client.sendall(data)
        self._injections = []

    def _drop(self, sock: socket.socket) -> None:
        for pair in list(self._pairs):
            if sock in pair:
                self._pairs.remove(pair)
                for s in pair:
                    with contextlib.suppress(OSError, KeyError, ValueError):
                        self._selector.unregister(s)
                    with contextlib.suppress(OSError):
                        s.close()
                    self._peer.pop(s, None)
                    self._tail.pop(s, None)


class CallLoad:
    """Internal calls 101 → 102: a SIPp phone for 102 that answers, and SIPp callers."""

    def __init__(self, lab: LabInstance, workdir: Path, *, ring_ms: int = 300) -> None:
        workdir.mkdir(exist_ok=True)
        self.sipp = Sipp(
            lab.sip_port,
            PortBlock(lab.sipp_local_base, 20, lab.sipp_media_base, 400),
            workdir,
            trace_messages=False,
        )
        self.phone = self.sipp.phone(
            "102", lab.agent_ports["102"], Phone.answers(ring_ms=ring_ms, talk_ms=600_000)
        )
        self.callers: list[SippProcess] = []
        time.sleep(0.3)
        if not self.phone.alive():
            raise AssertionError(f"SIPp phone 102 did not start:\n{self.phone.errors()}")

    def place(self, count: int, *, rate: float, hold_ms: int) -> SippProcess:
        caller = self.sipp.call(
            Call(
                "102", "101", "Agent 101", hold_ms=hold_ms, count=count, rate=rate, max_concurrent=count + 5
            ),
            trace_messages=False,
        )
        self.callers.append(caller)
        return caller

    def close(self) -> None:
        for caller in self.callers:
            caller.stop()
        self.phone.stop()
