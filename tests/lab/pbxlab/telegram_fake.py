"""A fake Telegram Bot API on loopback, faithful to the documented ``getUpdates`` contract.

https://core.telegram.org/bots/api — what the fake implements:

* ``https://api.telegram.org/bot<token>/METHOD``: GET query string, or POST as
  ``application/json``, ``application/x-www-form-urlencoded`` or ``multipart/form-data``;
* every answer is ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "error_code": N, "description": "...", "parameters"?: {"retry_after": s}}``
  with the HTTP status equal to ``error_code``; a wrong token is ``401 Unauthorized``, an unknown
  method ``404 Not Found``;
* ``getUpdates(offset, limit=100 (1-100), timeout=0, allowed_updates)``: "An update is considered
  confirmed as soon as getUpdates is called with an offset higher than its update_id"; a negative
  offset returns the last ``-offset`` updates and forgets the earlier ones; with no update ready
  it waits up to ``timeout`` seconds (long polling); a second concurrent getUpdates gets
  ``409 Conflict: terminated by other getUpdates request; make sure that only one bot instance
  is running``; updates unconfirmed for 24 hours are dropped (not simulated);
* ``getMe`` (``User`` with ``is_bot: true``), ``sendMessage`` (records what the bot answered);
* ``setWebhook(url, secret_token, allowed_updates)`` / ``deleteWebhook``: while a webhook is set,
  getUpdates answers ``409 Conflict: can't use getUpdates method while webhook is active; use
  deleteWebhook to delete the webhook first``, and each update is POSTed to the URL as JSON with
  the ``X-Telegram-Bot-Api-Secret-Token`` header; it stays queued until the webhook answers 2xx
  (:meth:`FakeBotApi.deliver` retries).

Tests push messages as a person would send them (:meth:`FakeBotApi.send_text`) and can make the
API fail (``fail_next``) or go away (``stop``/``start`` on the same port).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

__all__ = ["FakeBotApi", "FakeBotApiThread", "TelegramUser"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TelegramUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "ru"

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                user[key] = getattr(self, key)
        return user

    def as_private_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name is not None:
            chat["last_name"] = self.last_name
        if self.username is not None:
            chat["username"] = self.username
        return chat


@dataclass
class FakeBotApi:
    token: str = "123456789:AAH-fake-token-for-tests_0123456789"
    host: str = "127.0.0.1"
    port: int = 0
    bot_id: int = 123456789
    bot_username: str = "pbxlink_test_bot"
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)  # sendMessage calls
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # every (method, params)
    first_update_id: int = 700000001  # a restarted API continues where the old one stopped
    _next_message: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _arrived: asyncio.Condition | None = None
    _polling: bool = False
    _fail: list[tuple[int, str, int | None]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_answers: list[int] = field(default_factory=list)  # HTTP status of every delivery

    def __post_init__(self) -> None:
        self._next_update = itertools.count(self.first_update_id)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeBotApi:
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what a person does -------------------------------------------------------------------

    async def push(self, kind: str, message: dict[str, Any]) -> int:
        update_id = next(self._next_update)
        self.updates.append({"update_id": update_id, kind: message})
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        if self.webhook_url:
            await self.deliver()
        return update_id

    async def deliver(self) -> None:
        """Webhook mode: POST every queued update to the webhook, in order; those answered 2xx
        are done, the first failure stops the round (Telegram retries later)."""
        async with aiohttp.ClientSession() as session:
            while self.updates and self.webhook_url:
                update = self.updates[0]
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": self.webhook_secret} if self.webhook_secret else {}
                )
                try:
                    async with session.post(self.webhook_url, json=update, headers=headers) as response:
                        self.webhook_answers.append(response.status)
                        if not 200 <= response.status < 300:
                            return
                except aiohttp.ClientError:
                    self.webhook_answers.append(0)
                    return
                self.updates.pop(0)

    def message(self, user: TelegramUser, **content: Any) -> dict[str, Any]:
        return {
            "message_id": next(self._next_message),
            "from": user.as_user(),
            "chat": user.as_private_chat(),
            "date": int(time.time()),
            **content,
        }

    async def send_text(self, user: TelegramUser, text: str) -> int:
        """A private message from ``user`` to the bot; returns its update_id."""
        entities = (
            [{"offset": 0, "length": len(text.split(maxsplit=1)[0]), "type": "bot_command"}]
            if text.startswith("/")
            else None
        )
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        return await self.push("message", self.message(user, **content))

    async def share_contact(self, user: TelegramUser, phone: str) -> int:
        contact = {"phone_number": phone, "first_name": user.first_name, "user_id": user.id}
        return await self.push("message", self.message(user, contact=contact))

    async def send_document(self, user: TelegramUser, file_name: str, mime: str, caption: str) -> int:
        document = {
            "file_name": file_name,
            "mime_type": mime,
            "file_id": f"BQACAgIAAxkBAAI{next(self._next_message)}",
            "file_unique_id": "AgADfake",
            "file_size": 1234,
        }
        return await self.push("message", self.message(user, document=document, caption=caption))

    async def edit_text(self, user: TelegramUser, message_id: int, text: str) -> int:
        edited = self.message(user, text=text)
        edited["message_id"] = message_id
        edited["edit_date"] = int(time.time())
        return await self.push("edited_message", edited)

    def fail_next(self, code: int, description: str, retry_after: int | None = None) -> None:
        """The next call answers this error (429 with retry_after, 502, 409...)."""
        self._fail.append((code, description, retry_after))

    # -- the Bot API ----------------------------------------------------------------------------

    @staticmethod
    def _error(code: int, description: str, retry_after: int | None = None) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=code)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.body_exists:
            if request.content_type == "application/json":
                document = await request.json()
                if isinstance(document, dict):
                    params.update(document)
            else:
                params.update(dict(await request.post()))
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        if self._fail:
            return self._error(*self._fail.pop(0))
        if method.lower() == "getme":
            me = {
                "id": self.bot_id,
                "is_bot": True,
                "first_name": "pbxlink test",
                "username": self.bot_username,
            }
            return web.json_response({"ok": True, "result": me})
        if method.lower() == "sendmessage":
            self.sent.append(params)
            return web.json_response({"ok": True, "result": {"message_id": next(self._next_message)}})
        if method.lower() == "setwebhook":
            self.webhook_url = str(params.get("url") or "")
            self.webhook_secret = str(params.get("secret_token") or "")
            return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})
        if method.lower() == "deletewebhook":
            self.webhook_url = self.webhook_secret = ""
            return web.json_response({"ok": True, "result": True, "description": "Webhook was deleted"})
        if method.lower() == "getupdates":
            if self.webhook_url:
                conflict = (
                    "can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first"
                )
                return self._error(409, f"Conflict: {conflict}")
            return await self._get_updates(params)
        return self._error(404, "Not Found")

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        try:
            offset = int(params["offset"]) if "offset" in params else None
            limit = int(params.get("limit", 100))
            timeout = float(params.get("timeout", 0))
        except (TypeError, ValueError):
            return self._error(400, "Bad Request: invalid parameter")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):
            allowed = json.loads(allowed)
        limit = min(max(limit, 1), 100)
        if self._polling:
            conflict = (
                "terminated by other getUpdates request; make sure that only one bot instance is running"
            )
            return self._error(409, f"Conflict: {conflict}")
        if offset is not None and offset < 0:
            self.updates = self.updates[offset:]
        elif offset is not None:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed ones go
        self._polling = True
        try:
            ready = self._ready(allowed)
            if not ready and timeout > 0:
                assert self._arrived is not None
                async with self._arrived:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._arrived.wait_for(lambda: bool(self._ready(allowed))), timeout
                        )
                ready = self._ready(allowed)
        finally:
            self._polling = False
        return web.json_response({"ok": True, "result": ready[:limit]})

    def _ready(self, allowed: list[str] | None) -> list[dict[str, Any]]:
        if not allowed:
            return list(self.updates)
        return [u for u in self.updates if any(k in u for k in allowed)]


class FakeBotApiThread:
    """The fake on an event loop in a thread of its own, for synchronous callers (the demo)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-bot-api", daemon=True)
        self.api = FakeBotApi()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> FakeBotApi:
        self.thread.start()
        return self.call(self.api.start())

    def stop(self) -> None:
        self.call(self.api.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
