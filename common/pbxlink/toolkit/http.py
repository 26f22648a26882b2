"""/metrics, /healthz and /readyz for every pbxlink process, served by aiohttp on the event loop.

``/metrics`` is prometheus_client's text exposition of the process's own ``CollectorRegistry``.
``/healthz`` answers 200 whenever the event loop runs (it is served by that loop).
``/readyz`` answers 200 only when every readiness check passes, else 503; the body lists them.
Anything else is 404, another method 405, a malformed request 400 (aiohttp's parser).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["HealthServer", "Readiness"]

log = structlog.get_logger(__name__)

_PATHS: Final = ("/metrics", "/healthz", "/readyz")


@dataclass(frozen=True, slots=True)
class Readiness:
    """The named checks behind /readyz; ready when all pass."""

    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


class HealthServer:
    """Serves /metrics, /healthz and /readyz. Use as ``async with HealthServer(...) as server``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
        *,
        host: str = "127.0.0.1",
        port: int = 9108,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._bound is not None, "the server is not started"
        return self._bound

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        app.router.add_get("/healthz", self._healthz, allow_head=False)
        app.router.add_get("/readyz", self._readyz, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    async def __aenter__(self) -> HealthServer:
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound = int(runner.addresses[0][1])  # the bound (host, port): port 0 picks a free one
        log.info("http_listening", host=self._host, port=self._bound)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._bound = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        readiness = self._readiness()
        body = {"ready": readiness.ready, "checks": dict(readiness.checks)}
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def _other(self, request: web.Request) -> web.Response:
        if request.path in _PATHS:
            return web.Response(status=405, text="only GET\n")
        return web.Response(status=404, text="not found: try /metrics, /healthz or /readyz\n")
