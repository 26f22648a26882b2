"""A small stdlib AMI client for driving the lab (not the daemon's client).

One TCP session; a reader thread splits the stream into frames and hands
every frame to the queues of current subscribers.  Actions are matched to
their responses by ActionID.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

Frame = dict[str, str]


class AmiError(RuntimeError):
    """AMI refused an action, or did not answer in time."""


def parse_frame(raw: bytes) -> tuple[Frame, list[str]]:
    """Header lines of one frame -> (first-wins dict, list of Output lines)."""
    headers: Frame = {}
    output: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if not sep:
            output.append(line)
        elif key == "Output":
            output.append(value)
        else:
            headers.setdefault(key, value)
    return headers, output


class AmiClient:
    """A blocking AMI session: actions, list actions, waiting for events."""

    _ids = itertools.count(1)

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        secret: str,
        *,
        events: str = "on",
        timeout: float = 5.0,
    ) -> None:
        self.host, self.port, self.user, self.secret = host, port, user, secret
        self.events = events
        self.timeout = timeout
        self.banner = ""
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[tuple[float, Frame, list[str]]]] = []
        self.closed = threading.Event()

    # ---- session ------------------------------------------------------------
    def connect(self) -> AmiClient:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(1024)
            if not chunk:
                sock.close()
                raise AmiError("AMI closed the connection before its banner")
            buf += chunk
        banner, _, rest = buf.partition(b"\r\n")
        self.banner = banner.decode("utf-8", "replace")
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(
            target=self._read_loop, args=(rest,), name="pbxlab-ami-reader", daemon=True
        )
        self._reader.start()
        resp = self.action("Login", Username=self.user, Secret=self.secret, Events=self.events)
        if resp.get("Response") != "Success":
            self.close()
            raise AmiError(f"AMI login as {self.user!r} failed: {resp.get('Message')}")
        return self

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.sendall(b"Action: Logoff\r\n\r\n")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
        self.closed.set()

    def __enter__(self) -> AmiClient:
        # LabSession.ami() hands out a connected client: a second connect would leak the first socket
        return self if self._sock is not None else self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read_loop(self, pending: bytes) -> None:
        buf = pending
        sock = self._sock
        while sock is not None:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.time()
            buf += chunk
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                raw, buf = buf[:end], buf[end + 4 :]
                headers, output = parse_frame(raw)
                with self._lock:
                    subscribers = list(self._subscribers)
                for q in subscribers:
                    q.put((now, headers, output))
        if sock is not None and self._sock is sock:  # the peer went away (an Asterisk crash): close our end
            self._sock = None
            sock.close()
        self.closed.set()

    # ---- subscriptions --------------------------------------------------------
    def subscribe(self) -> queue.Queue[tuple[float, Frame, list[str]]]:
        """A queue that receives (receive time, headers, output) of every later frame."""
        q: queue.Queue[tuple[float, Frame, list[str]]] = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[tuple[float, Frame, list[str]]]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def wait_event(
        self,
        match: Callable[[Frame], bool],
        *,
        timeout: float = 30.0,
        q: queue.Queue[tuple[float, Frame, list[str]]] | None = None,
    ) -> Frame:
        """The first event matching `match`.  Pass a queue subscribed before the
        action that causes the event, or the event may be missed."""
        own = q is None
        q = q if q is not None else self.subscribe()
        try:
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AmiError(f"no matching AMI event within {timeout:.1f} s")
                try:
                    _, frame, _ = q.get(timeout=left)
                except queue.Empty:
                    continue
                if "Event" in frame and match(frame):
                    return frame
        finally:
            if own:
                self.unsubscribe(q)

    # ---- actions ----------------------------------------------------------------
    def _send(self, name: str, headers: dict[str, str]) -> str:
        sock = self._sock
        if sock is None:
            raise AmiError("AMI session is closed")
        action_id = f"pbxlab-{os.getpid()}-{next(self._ids)}"
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def _exchange(
        self, name: str, headers: dict[str, str], complete_event: str | None, timeout: float
    ) -> tuple[Frame, list[str], list[Frame]]:
        q = self.subscribe()
        try:
            action_id = self._send(name, headers)
            deadline = time.monotonic() + timeout
            response: Frame | None = None
            output: list[str] = []
            events: list[Frame] = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AmiError(f"no answer to AMI action {name} within {timeout:.1f} s")
                try:
                    _, frame, out = q.get(timeout=left)
                except queue.Empty:
                    continue
                if frame.get("ActionID") != action_id:
                    continue
                if "Response" in frame and response is None:
                    response, output = frame, out
                    if complete_event is None or frame["Response"] != "Success":
                        return response, output, events
                elif "Event" in frame:
                    if frame["Event"] == complete_event and response is not None:
                        return response, output, events
                    events.append(frame)
        finally:
            self.unsubscribe(q)

    def action(self, name: str, *, timeout: float = 10.0, **headers: str) -> Frame:
        """Send an action; return its response frame (whatever it says)."""
        response, _, _ = self._exchange(name, headers, None, timeout)
        return response

    def checked(self, name: str, *, timeout: float = 10.0, **headers: str) -> Frame:
        """Like action(), but raise AmiError unless the response is Success."""
        response = self.action(name, timeout=timeout, **headers)
        if response.get("Response") != "Success":
            raise AmiError(f"AMI {name} failed: {response.get('Message')}")
        return response

    def list_action(
        self, name: str, complete_event: str, *, timeout: float = 10.0, **headers: str
    ) -> list[Frame]:
        """Run a list action; return the events between its response and `complete_event`."""
        response, _, events = self._exchange(name, headers, complete_event, timeout)
        if response.get("Response") != "Success":
            raise AmiError(f"AMI {name} failed: {response.get('Message')}")
        return events

    def command(self, cli: str, *, timeout: float = 10.0) -> str:
        """Run a CLI command over AMI; return its output text."""
        response, output, _ = self._exchange("Command", {"Command": cli}, None, timeout)
        if response.get("Response") not in ("Success", "Follows"):
            raise AmiError(f"AMI Command {cli!r} failed: {response.get('Message')}")
        return "\n".join(output)

    # ---- the actions the scenarios use ------------------------------------------
    def channels(self) -> list[Frame]:
        return self.list_action("CoreShowChannels", "CoreShowChannelsComplete")

    def channel_count(self) -> int:
        return len(self.channels())

    def core_settings(self) -> Frame:
        return self.checked("CoreSettings")

    def asterisk_version(self) -> str:
        """E.g. '22.10.1+dfsg+~cs6.17.60671434-1' (CoreSettings AsteriskVersion)."""
        return self.core_settings().get("AsteriskVersion", "")

    def getvar(self, channel: str, variable: str) -> str:
        """A channel variable or function value, e.g. CHANNEL(pjsip,call-id)."""
        return self.checked("Getvar", Channel=channel, Variable=variable).get("Value", "")

    def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        caller_id: str | None = None,
        timeout_ms: int = 30000,
        variables: dict[str, str] | None = None,
    ) -> Frame:
        """Originate asynchronously (Async: true); returns the queued response."""
        headers = {
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": str(priority),
            "Timeout": str(timeout_ms),
            "Async": "true",
        }
        if caller_id is not None:
            headers["CallerID"] = caller_id
        if variables:
            headers["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
        response, _, _ = self._exchange("Originate", headers, None, 10.0)
        if response.get("Response") != "Success":
            raise AmiError(f"AMI Originate failed: {response.get('Message')}")
        return response

    def blind_transfer(self, channel: str, exten: str, context: str = "from-agents") -> Frame:
        return self.checked("BlindTransfer", Channel=channel, Exten=exten, Context=context)

    def atxfer(self, channel: str, exten: str, context: str = "from-agents") -> Frame:
        return self.checked("Atxfer", Channel=channel, Exten=exten, Context=context)

    def wait_idle(self, timeout: float = 30.0, poll: float = 0.2) -> bool:
        """Wait until Asterisk has no channels; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.channel_count() == 0:
                return True
            time.sleep(poll)
        return False
