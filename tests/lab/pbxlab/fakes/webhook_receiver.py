"""A webhook receiver on 127.0.0.1 that does what docs/webhook.md tells receivers to do.

It verifies `X-Pbxlink-Signature` (HMAC-SHA256 over "<t>." + body with any of its secrets, `t`
within the replay window), answers 401 to a bad or stale signature, keeps the Idempotency-Keys it
has processed (a repeat is answered 200 and not processed again), and counts everything.

Faults for tests: `fail_next` (answer 500 to the next n requests), `fail_until` (500 until a
monotonic time), `delay` (seconds before answering). Standalone:
`python -m pbxlab.fakes.webhook_receiver --secret S` prints {"url": …}; `GET /_state` shows counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pbxlink.adapters.backends.webhook import signing


@dataclass
class Received:
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)  # Idempotency-Key → envelope
    order: list[str] = field(default_factory=list)
    requests: int = 0
    repeats: int = 0
    refused_signature: int = 0
    failed: int = 0


class WebhookReceiver:
    def __init__(self, secrets: list[str], *, window: int = signing.REPLAY_WINDOW_SECONDS) -> None:
        self.secrets = [s.encode() for s in secrets]
        self.window = window
        self.received = Received()
        self.fail_next = 0
        self.fail_until = 0.0
        self.delay = 0.0
        self._runner: web.AppRunner | None = None
        self.url = ""
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_get("/_state", self.state)
        app.router.add_post("/_faults", self.faults)
        self.app = app

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def hook(self, request: web.Request) -> web.Response:
        r = self.received
        r.requests += 1
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0 or time.monotonic() < self.fail_until:
            self.fail_next = max(0, self.fail_next - 1)
            r.failed += 1
            return web.Response(status=500, text="receiver is down")
        header = request.headers.get(signing.HEADER, "")
        if not signing.verify(header, body, self.secrets, int(time.time()), self.window):
            r.refused_signature += 1
            return web.Response(status=401, text="bad signature")
        key = request.headers.get("Idempotency-Key", "")
        if key in r.processed:
            r.repeats += 1
            return web.json_response({"ok": True, "repeat": True})
        r.processed[key] = json.loads(body)
        r.order.append(key)
        return web.json_response({"ok": True})

    async def state(self, request: web.Request) -> web.Response:
        r = self.received
        return web.json_response(
            {
                "processed": r.order,
                "requests": r.requests,
                "repeats": r.repeats,
                "refused_signature": r.refused_signature,
                "failed": r.failed,
            }
        )

    async def faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.fail_next = int(body.get("fail_next", self.fail_next))
        if "fail_for" in body:
            self.fail_until = time.monotonic() + float(body["fail_for"])
        self.delay = float(body.get("delay", self.delay))
        return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description="a signature-checking webhook receiver on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", action="append", default=[])
    args = parser.parse_args()

    async def run() -> None:
        receiver = WebhookReceiver(args.secret)
        url = await receiver.start(args.port)
        print(json.dumps({"url": url}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
