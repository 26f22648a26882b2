"""Telegram bots: Bot API long polling (``getUpdates``) → requests, the update offset persisted.

Each message to the bot becomes a request: the chat is the contact (``telegram:<chat id>``), the
person's name from ``from``, the text (or a photo's/document's caption), attachments listed, and a
phone number when the person shared their own contact. The request id is
``<gateway>:telegram:<bot>:<update_id>``, and the next offset (``update_id + 1``) is committed in the
same transaction as the requests: only the following ``getUpdates`` call confirms them to Telegram,
so a crash in between makes Telegram send them again and the id makes the copy harmless.

Bot API documentation: https://core.telegram.org/bots/api#getupdates (offset, timeout,
``{"ok": false, "error_code", "description", "parameters": {"retry_after"}}``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp
import msgspec
import structlog

from pbxlink.gateway.config import TelegramAccount
from pbxlink.gateway.intake import DeadLetter, Intake
from pbxlink.gateway.shutdown import unless_stopped
from pbxlink.toolkit.reconnect import Backoff, Reconnect
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import Request, RequestChannel, Sender

__all__ = ["BotApiError", "TelegramSource", "update_to_request"]

log = structlog.get_logger("pbxlink.gateway.telegram")

_MESSAGE_KINDS: Final = ("message", "business_message")
_CHAT_HISTORY: Final = 20  # a message names this many earlier requests of its chat


class BotApiError(Exception):
    """``{"ok": false}`` from the Bot API (or a reply that is not its JSON)."""

    def __init__(self, code: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(f"Bot API error {code}: {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        # 401/404 (bad token) will not heal by waiting; 409 (another poller), 429 and 5xx may.
        return self.code in (409, 429) or self.code >= 500


def _name(user: Mapping[str, Any]) -> str | None:
    parts = [str(user.get(k) or "").strip() for k in ("first_name", "last_name")]
    name = " ".join(p for p in parts if p)
    username = user.get("username")
    if username:
        name = f"{name} (@{username})" if name else f"@{username}"
    return name or None


def _attachments(message: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    document = message.get("document")
    if isinstance(document, Mapping):
        found.append(f"{document.get('file_name') or 'document'} ({document.get('mime_type', '?')})")
    if message.get("photo"):
        found.append("photo")
    for kind in ("voice", "audio", "video", "sticker", "location"):
        if message.get(kind):
            found.append(kind)
    return found


def update_to_request(
    update: Mapping[str, Any], *, gateway: str, bot: str, max_body_chars: int
) -> Request | DeadLetter | None:
    """One update → a request, a dead letter (no sender, nothing to read), or None (not a message
    to the bot: an edit, a callback, a member update; those are skipped)."""
    update_id = update.get("update_id")
    source = f"telegram:{bot}"
    message = next((update[k] for k in _MESSAGE_KINDS if isinstance(update.get(k), Mapping)), None)
    if not isinstance(update_id, int) or message is None:
        return None
    request_id = f"{gateway}:telegram:{bot}:{update_id}"
    raw = json.dumps(update, ensure_ascii=False).encode("utf-8", "backslashreplace")
    chat = message.get("chat")
    user = message.get("from")
    if not isinstance(chat, Mapping) or "id" not in chat or not isinstance(user, Mapping):
        return DeadLetter(request_id, source, "no_sender", "message without chat or from", raw)
    text = str(message.get("text") or message.get("caption") or "").strip()
    phone: str | None = None
    contact = message.get("contact")
    if isinstance(contact, Mapping) and contact.get("user_id") == user.get("id"):
        phone = str(contact.get("phone_number") or "") or None  # the person shared their own number
        text = text or f"contact shared: {phone}"
    files = _attachments(message)
    if files:
        text = "\n".join([text, "attachments: " + ", ".join(files)]).strip()
    if not text:
        return DeadLetter(request_id, source, "empty", "message with nothing to read", raw)
    date = message.get("date")
    received = Instant.from_epoch(float(date)) if isinstance(date, int) else None
    return Request(
        id=request_id,
        channel=RequestChannel.MESSENGER,
        source=source,
        received_at=received or Instant.from_epoch(0),
        sender=Sender(name=_name(user), phone=phone, messenger=f"telegram:{chat['id']}"),
        subject="",
        body=text[:max_body_chars],
    )


class BotApi:
    """The two Bot API calls the gateway makes, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, account: TelegramAccount) -> None:
        assert account.token is not None
        self.session = session
        self.base = f"{account.api_url.rstrip('/')}/bot{account.token.reveal()}"

    async def call(self, method: str, params: Mapping[str, Any], *, seconds: float) -> Any:
        async with self.session.post(
            f"{self.base}/{method}", json=dict(params), timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            try:
                document = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                raise BotApiError(response.status, "reply is not JSON") from None
        if not isinstance(document, dict) or not document.get("ok"):
            doc = document if isinstance(document, dict) else {}
            retry = (doc.get("parameters") or {}).get("retry_after")
            raise BotApiError(
                int(doc.get("error_code") or response.status),
                str(doc.get("description") or "no description"),
                float(retry) if isinstance(retry, int | float) else None,
            )
        return document.get("result")

    async def get_updates(self, offset: int | None, poll_seconds: int) -> list[Mapping[str, Any]]:
        params: dict[str, Any] = {"timeout": poll_seconds, "allowed_updates": ["message", "business_message"]}
        if offset is not None:
            params["offset"] = offset
        result = await self.call("getUpdates", params, seconds=poll_seconds + 15)
        if not isinstance(result, list):
            raise BotApiError(502, "getUpdates result is not a list")
        return [u for u in result if isinstance(u, Mapping)]


class TelegramSource:
    def __init__(self, name: str, account: TelegramAccount, intake: Intake) -> None:
        self.name = name
        self.account = account
        self.intake = intake
        self.source = f"telegram:{name}"
        self.policy = Reconnect(
            Backoff(1.0, 60.0), transient=(aiohttp.ClientError, TimeoutError, BotApiError)
        )

    async def batch(self, updates: Sequence[Mapping[str, Any]]) -> int | None:
        """Store one getUpdates answer; return the next offset (None when it was empty)."""
        ids: list[int] = [u["update_id"] for u in updates if isinstance(u.get("update_id"), int)]
        if not ids:
            return None
        offset = max(ids) + 1
        await self.store_updates(updates, cursor=(self.source, {"offset": offset}))
        return offset

    async def store_updates(
        self, updates: Sequence[Mapping[str, Any]], *, cursor: tuple[str, Mapping[str, Any]] | None
    ) -> None:
        """Requests and dead letters of these updates, stored in one transaction (with the cursor)."""
        gateway = self.intake.settings.gateway
        requests: list[Request] = []
        dead: list[DeadLetter] = []
        for update in updates:
            made = self.convert(update)
            if made is None:
                log.info(
                    "gateway_telegram_update_skipped", source=self.source, update_id=update.get("update_id")
                )
            elif isinstance(made, DeadLetter):
                dead.append(made)
            elif made.sender.messenger and self.intake.flooding(self.source, made.sender.messenger):
                reason = f"flood from {made.sender.messenger}: over {gateway.flood_per_minute}/min"
                dead.append(
                    DeadLetter(
                        made.id,
                        self.source,
                        "flood",
                        reason,
                        json.dumps(dict(update), ensure_ascii=False).encode("utf-8", "backslashreplace"),
                    )
                )
            else:
                requests.append(made)
        linked, threads = await self._conversations(requests)
        await self.intake.accept(linked, dead, cursor=cursor, threads=threads)

    def convert(self, update: Mapping[str, Any]) -> Request | DeadLetter | None:
        gateway = self.intake.settings.gateway
        try:
            return update_to_request(
                update, gateway=gateway.name, bot=self.name, max_body_chars=gateway.max_body_chars
            )
        except Exception as exc:  # noqa: BLE001 - one odd update must not stall the bot: it is a dead letter
            raw = json.dumps(update, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace")
            reason = f"unreadable update: {type(exc).__name__}: {exc}"
            return DeadLetter(
                f"{gateway.name}:telegram:{self.name}:{update.get('update_id')}",
                self.source,
                "malformed",
                reason,
                raw,
            )

    async def _conversations(self, requests: list[Request]) -> tuple[list[Request], list[tuple[str, str]]]:
        """A chat is one conversation: each message names the chat's earlier requests (newest
        first), so the adapter attaches it to the open interest they made."""
        linked: list[Request] = []
        threads: list[tuple[str, str]] = []
        earlier: dict[str, list[str]] = {}
        for request in requests:
            prefix = f"{self.source}/chat/{request.sender.messenger}/"
            if prefix not in earlier:
                earlier[prefix] = list(await self.intake.store.recent_of_conversation(prefix))
            linked.append(msgspec.structs.replace(request, replies_to=tuple(earlier[prefix][:_CHAT_HISTORY])))
            earlier[prefix].insert(0, request.id)
            threads.append((f"{prefix}{request.id}", request.id))
        return linked, threads

    async def run(self, stop: asyncio.Event) -> None:
        if self.account.mode == "webhook":
            await self._keep_webhook(stop)
            return
        # a webhook left over from webhook mode would make getUpdates answer 409
        await self._call_until_done("deleteWebhook", {}, stop)
        await self._poll(stop)

    async def _call_until_done(self, method: str, params: Mapping[str, Any], stop: asyncio.Event) -> bool:
        """One Bot API call, retried with backoff until it succeeds (True) or stop is set (False);
        a refusal that waiting cannot heal (a wrong token) is raised."""
        async with aiohttp.ClientSession() as session:
            api = BotApi(session, self.account)
            while not stop.is_set():
                try:
                    await unless_stopped(
                        api.call(method, params, seconds=30), stop, name=f"gateway:{self.source}:{method}"
                    )
                except self.policy.transient as exc:
                    if isinstance(exc, BotApiError) and not exc.transient:
                        log.error("gateway_telegram_refused", source=self.source, call=method, error=str(exc))
                        raise
                    self.intake.metrics.source_errors.labels(self.source).inc()
                    delay = self.policy.failed()
                    log.warning(
                        "gateway_telegram_retry",
                        source=self.source,
                        call=method,
                        error=str(exc),
                        retry_in=delay,
                    )
                    if not await self.policy.wait(delay, stop):
                        return False
                    continue
                self.policy.succeeded()
                return not stop.is_set()
        return False

    async def _keep_webhook(self, stop: asyncio.Event) -> None:
        """Webhook mode: register the webhook with its secret; updates then arrive on the web
        endpoint (``POST /v1/telegram/<name>``, :mod:`pbxlink.gateway.web`)."""
        assert self.account.webhook_secret is not None
        params = {
            "url": self.account.webhook_url,
            "secret_token": self.account.webhook_secret.reveal(),
            "allowed_updates": ["message", "business_message"],
        }
        if await self._call_until_done("setWebhook", params, stop):
            self.intake.metrics.source_up.labels(self.source).set(1)
            log.info("gateway_telegram_webhook_set", source=self.source, url=self.account.webhook_url)
            await stop.wait()

    async def _poll(self, stop: asyncio.Event) -> None:
        state = await self.intake.store.cursor(self.source)
        offset: int | None = int(state["offset"]) if state else None
        metrics = self.intake.metrics
        async with aiohttp.ClientSession() as session:
            api = BotApi(session, self.account)
            while not stop.is_set():
                try:
                    updates = await unless_stopped(
                        api.get_updates(offset, self.account.poll_timeout_seconds),
                        stop,
                        name=f"gateway:{self.source}:getUpdates",
                    )
                    if updates is None:
                        break
                    metrics.source_up.labels(self.source).set(1)
                    self.policy.succeeded()
                    offset = await self.batch(updates) or offset
                except self.policy.transient as exc:
                    if isinstance(exc, BotApiError) and not exc.transient:
                        metrics.source_up.labels(self.source).set(0)
                        log.error("gateway_telegram_refused", source=self.source, error=str(exc))
                        raise
                    metrics.source_up.labels(self.source).set(0)
                    metrics.source_errors.labels(self.source).inc()
                    delay = self.policy.failed()
                    if isinstance(exc, BotApiError) and exc.retry_after:
                        delay = max(delay, exc.retry_after)
                    log.warning(
                        "gateway_telegram_retry", source=self.source, error=str(exc), retry_in=round(delay, 2)
                    )
                    if not await self.policy.wait(delay, stop):
                        break
