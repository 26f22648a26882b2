"""Record a raw AMI session: every byte read from the socket, unchanged.

The file starts with Asterisk's banner line, then the login response and every
frame after it, each ending with a blank line, exactly as Asterisk sent them
(the format of `pbxlink record --out FILE`).  The recorder logs in with
`Events: on`; what it sends is not recorded.  A path ending in .gz is written
gzip-compressed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class AmiRecorder:
    """Write every byte of one AMI session to `path` until stop()."""

    def __init__(self, host: str, port: int, user: str, secret: str, path: Path) -> None:
        self.host, self.port, self.user, self.secret = host, port, user, secret
        self.path = path
        self.bytes_written = 0
        self._sock: socket.socket | None = None
        self._out: gzip.GzipFile | io.BufferedWriter | None = None
        self._thread: threading.Thread | None = None
        self._head = b""
        self._logged_in = threading.Event()
        self._login_failed = False
        self._lock = threading.Lock()

    def start(self, timeout: float = 5.0) -> AmiRecorder:
        """Connect, log in and return once the login response is recorded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = (
            gzip.open(self.path, "wb", compresslevel=9)  # noqa: SIM115 - closed in stop()
            if self.path.suffix == ".gz"
            else self.path.open("wb")
        )
        self._sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read_loop, name="pbxlab-ami-recorder", daemon=True)
        self._thread.start()
        login = f"Action: Login\r\nUsername: {self.user}\r\nSecret: {self.secret}\r\nEvents: on\r\n\r\n"
        self._sock.sendall(login.encode())
        if not self._logged_in.wait(timeout) or self._login_failed:
            self.stop(logoff=False)
            raise ConnectionError(f"AMI recorder could not log in to {self.host}:{self.port}")
        return self

    def _read_loop(self) -> None:
        sock, out = self._sock, self._out
        if sock is None or out is None:
            return
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                out.write(chunk)
                self.bytes_written += len(chunk)
            if not self._logged_in.is_set():
                self._head += chunk
                if b"Response: Success" in self._head:
                    self._logged_in.set()
                elif b"Response: Error" in self._head:
                    self._login_failed = True
                    self._logged_in.set()

    def stop(self, *, logoff: bool = True, timeout: float = 2.0) -> int:
        """Log off (the Goodbye response is recorded too), close; returns bytes written."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if logoff:
                with contextlib.suppress(OSError):
                    sock.sendall(b"Action: Logoff\r\n\r\n")
                if self._thread is not None:
                    self._thread.join(timeout)  # Asterisk closes after Goodbye
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout)
        out, self._out = self._out, None
        if out is not None:
            with self._lock:
                out.close()
        return self.bytes_written


def record_for(host: str, port: int, user: str, secret: str, path: Path, seconds: float) -> int:
    """Record `seconds` of AMI into `path`; returns bytes written."""
    rec = AmiRecorder(host, port, user, secret, path).start()
    try:
        time.sleep(seconds)
    finally:
        written = rec.stop()
    return written


class PbxlinkRecorder:
    """The same recording made by pbxlink's own `pbxlink record --out FILE`.

    Runs `python -m pbxlink.cli record` (the pbxlink package must be
    importable by `python`) and stops it with SIGTERM.  Its file also holds
    the replies to pbxlink's resync actions (CoreSettings, CoreShowChannels,
    ...), which the lab's own recorder does not send.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        secret: str,
        path: Path,
        python: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.host, self.port, self.user, self.secret = host, port, user, secret
        self.path = path
        self.python = python or sys.executable
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"pbxlab-{path.name}.record.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._secret_file: Path | None = None
        self._log: io.BufferedWriter | None = None

    def start(self, timeout: float = 10.0) -> PbxlinkRecorder:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="pbxlab-secret-")
        os.write(fd, self.secret.encode() + b"\n")
        os.close(fd)
        self._secret_file = Path(name)
        self.path.unlink(missing_ok=True)
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "pbxlink.cli",
                "record",
                "--out",
                str(self.path),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--username",
                self.user,
                "--secret-file",
                name,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        # it flushes once a second: wait until the login response is on disk
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConnectionError(f"pbxlink record exited with {self._proc.returncode}")
            if self.path.exists() and b"Response: Success" in _head_bytes(self.path):
                return self
            time.sleep(0.1)
        self.stop()
        raise ConnectionError("pbxlink record did not log in in time")

    def stop(self, timeout: float = 10.0) -> int:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._secret_file is not None:
            self._secret_file.unlink(missing_ok=True)
            self._secret_file = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.path.stat().st_size if self.path.exists() else 0


def _head_bytes(path: Path, size: int = 4096) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(size)
        except (EOFError, OSError):
            return b""  # not flushed far enough yet
    with path.open("rb") as f:
        return f.read(size)
