"""A tiny FastAGI server standing in for pbxlink's router in lab scenarios.

It answers agi://127.0.0.1:<agi_port>/route like pbxlink does: it sets
PBXLINK_ROUTE (a dial string or empty), PBXLINK_ROUTE_REASON and
PBXLINK_ROUTE_OWNER, chosen from a caller-number map, else a default.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StubRoute:
    """What the stub answers for one caller."""

    target: str  # dial string, e.g. "PJSIP/101"; "" = no route
    reason: str = "owner"
    owner: str = ""


@dataclass(slots=True)
class AgiRequest:
    """One request the stub served (for the ground truth)."""

    caller: str
    request: str
    uniqueid: str
    route: StubRoute
    env: dict[str, str] = field(default_factory=dict)


class _Handler(socketserver.StreamRequestHandler):
    server: RouteStub

    def _set(self, name: str, value: str) -> None:
        self.wfile.write(f'SET VARIABLE {name} "{value}"\n'.encode())
        self.wfile.flush()
        self.rfile.readline()  # "200 result=1"

    def handle(self) -> None:
        env: dict[str, str] = {}
        while True:
            line = self.rfile.readline()
            if not line or line in (b"\n", b"\r\n"):
                break
            key, _, value = line.decode("utf-8", "replace").strip().partition(":")
            env[key.strip()] = value.strip()
        caller = env.get("agi_callerid", "")
        route = self.server.routes.get(caller, self.server.default)
        with self.server.lock:
            self.server.requests.append(
                AgiRequest(caller, env.get("agi_request", ""), env.get("agi_uniqueid", ""), route, env)
            )
        self._set("PBXLINK_ROUTE", route.target)
        self._set("PBXLINK_ROUTE_REASON", route.reason)
        self._set("PBXLINK_ROUTE_OWNER", route.owner)
        # closing the connection ends AGI(); the dialplan goes on


class RouteStub(socketserver.ThreadingTCPServer):
    """FastAGI stub on 127.0.0.1:port; start() serves in a thread, stop() ends it."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self,
        port: int,
        default: StubRoute | None = None,
        routes: dict[str, StubRoute] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.default = default or StubRoute("", "unknown_caller", "")
        self.routes = dict(routes or {})
        self.requests: list[AgiRequest] = []
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> RouteStub:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="pbxlab-route-stub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(2)
