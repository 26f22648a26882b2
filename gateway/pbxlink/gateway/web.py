"""Web forms: ``POST /v1/requests/{source}`` (JSON or form-encoded) → a request for the CRM.

* authentication per source: a token (``Authorization: Bearer <token>``, ``X-Pbxlink-Token`` or a
  ``token`` form field) or an HMAC-SHA256 of the raw body (``X-Pbxlink-Signature: sha256=<hex>``);
* validation: ``400 {"problems": [{"field", "problem"}, ...]}`` listing every problem at once;
* ``202 {"id": ...}`` only once the request is committed to the gateway's database;
* a per-source rate limit (``429`` with ``Retry-After``), a size cap (``413``);
* CORS for site forms: only the source's ``origins`` get ``Access-Control-Allow-Origin``, and a
  browser POST from another origin is refused (``403``);
* ``Idempotency-Key`` (header or field): a retried POST with the same key is the same request.

Fields: ``name``, ``phone``, ``email``, ``subject``, ``message`` (or ``body``/``text``); other fields
(``product=…``) are appended to the text as ``key: value`` lines so nothing the visitor typed is lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from pbxlink.gateway.config import WebSource
from pbxlink.gateway.intake import DeadLetter, Intake
from pbxlink.gateway.limits import RateLimiter
from pbxlink.gateway.telegram import TelegramSource
from pbxlink.wire.model import Request, RequestChannel, Sender

__all__ = ["FormProblem", "WebEndpoint", "read_form"]

log = structlog.get_logger("pbxlink.gateway.web")

_KNOWN: Final = frozenset({"name", "phone", "email", "subject", "message", "body", "text", "token"})
_PHONE: Final = re.compile(r"^\+?[\d\s().-]{5,25}$")
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEY: Final = re.compile(r"^[\x21-\x7e]{1,200}$")
_ALLOW_HEADERS: Final = "Content-Type, Authorization, X-Pbxlink-Token, X-Pbxlink-Signature, Idempotency-Key"
_MAX_FIELD: Final = 10000


@dataclass(frozen=True, slots=True)
class FormProblem:
    field: str
    problem: str


@dataclass(frozen=True, slots=True)
class Form:
    name: str | None
    phone: str | None
    email: str | None
    subject: str
    text: str
    token: str | None
    idempotency_key: str | None


def _fields(content_type: str, body: bytes) -> tuple[dict[str, str], list[FormProblem]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, [FormProblem("body", f"not UTF-8 (byte {exc.start})")]
    if content_type == "application/json":
        try:
            document = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            return {}, [FormProblem("body", f"not JSON: {exc.msg} at {exc.pos}")]
        if not isinstance(document, dict):
            return {}, [FormProblem("body", "must be a JSON object")]
        fields: dict[str, str] = {}
        problems: list[FormProblem] = []
        for key, value in document.items():
            if value is None:
                continue
            if isinstance(value, bool | dict | list):
                problems.append(FormProblem(key, "must be a string or a number"))
                continue
            fields[key] = str(value)
        return fields, problems
    if content_type in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            return {}, [FormProblem("body", f"not form-encoded: {exc}")]
        return dict(pairs), []
    return {}, [FormProblem("Content-Type", "use application/json or application/x-www-form-urlencoded")]


def read_form(content_type: str, body: bytes, idempotency_header: str | None) -> Form | list[FormProblem]:
    """The fields of a posted form, or every problem with it (pure)."""
    fields, problems = _fields(content_type, body)
    if problems:
        return problems

    def take(*keys: str) -> str | None:
        for key in keys:
            value = fields.get(key, "").strip()
            if value:
                return value
        return None

    name, phone, email = take("name"), take("phone"), take("email")
    subject, text = take("subject") or "", take("message", "body", "text") or ""
    key = idempotency_header or take("idempotency_key")
    extra = [
        f"{k}: {v.strip()}" for k, v in fields.items() if k not in _KNOWN | {"idempotency_key"} and v.strip()
    ]
    if extra:
        text = "\n".join([text, *extra]) if text else "\n".join(extra)
    if phone is None and email is None:
        problems.append(FormProblem("phone", "give a phone or an e-mail, so the request can be answered"))
    if phone is not None and (not _PHONE.match(phone) or sum(c.isdigit() for c in phone) < 5):
        problems.append(FormProblem("phone", f"{phone[:40]!r} is not a phone number"))
    if email is not None and not _EMAIL.match(email):
        problems.append(FormProblem("email", f"{email[:60]!r} is not an e-mail address"))
    if not subject and not text:
        problems.append(FormProblem("message", "empty: give a message or a subject"))
    for field_name, value in (("name", name), ("subject", subject), ("message", text)):
        if value is not None and len(value) > _MAX_FIELD:
            problems.append(FormProblem(field_name, f"longer than {_MAX_FIELD} characters"))
        if value is not None and any(ord(c) < 32 and c not in "\n\r\t" for c in value):
            problems.append(FormProblem(field_name, "contains control characters"))
        if value is not None and any("\ud800" <= c <= "\udfff" for c in value):
            problems.append(FormProblem(field_name, "not valid Unicode (a lone surrogate escape)"))
    if key is not None and not _KEY.match(key):
        problems.append(FormProblem("Idempotency-Key", "1-200 printable ASCII characters"))
    if problems:
        return problems
    return Form(name, phone, email, subject, text, fields.get("token"), key)


def _authorized(source: WebSource, request: web.Request, body: bytes, form_token: str | None) -> bool:
    if source.hmac_secret is not None:
        given = request.headers.get("X-Pbxlink-Signature", "")
        digest = hmac.new(source.hmac_secret.reveal().encode(), body, hashlib.sha256).hexdigest()
        if given.startswith("sha256=") and hmac.compare_digest(given[7:].lower(), digest):
            return True
    if source.token is not None:
        auth = request.headers.get("Authorization", "")
        offered = [
            auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            request.headers.get("X-Pbxlink-Token", ""),
            form_token or "",
        ]
        expected = source.token.reveal()
        return any(o and hmac.compare_digest(o.encode(), expected.encode()) for o in offered)
    return False


class WebEndpoint:
    """The aiohttp routes of the web sources. ``app()`` is served by the gateway on ``gateway.port``."""

    def __init__(
        self,
        sources: Mapping[str, WebSource],
        intake: Intake,
        telegram: Mapping[str, TelegramSource] | None = None,
    ) -> None:
        self.sources = sources
        self.intake = intake
        self.bots = {n: b for n, b in (telegram or {}).items() if b.account.mode == "webhook"}
        self.max_bytes = intake.settings.gateway.max_message_bytes
        self.limits = {name: RateLimiter(s.rate_per_minute, s.rate_burst) for name, s in sources.items()}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_route("OPTIONS", "/v1/requests/{source}", self.preflight)
        app.router.add_post("/v1/requests/{source}", self.post)
        app.router.add_post("/v1/telegram/{bot}", self.telegram_update)
        return app

    async def telegram_update(self, request: web.Request) -> web.Response:
        """A Telegram bot's webhook: 200 only once the update is stored (Telegram sends it again
        otherwise), 401 without the bot's secret token."""
        name = request.match_info["bot"]
        bot = self.bots.get(name)
        if bot is None:
            return self._answer(
                f"telegram:{name}", 404, {"error": f"no Telegram bot {name!r} in webhook mode"}
            )
        secret = bot.account.webhook_secret
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if secret is None or not hmac.compare_digest(given.encode(), secret.reveal().encode()):
            log.warning("gateway_telegram_webhook_unauthorized", source=bot.source, remote=request.remote)
            return self._answer(bot.source, 401, {"error": "wrong secret token"})
        try:
            update = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            update = None
        except web.HTTPRequestEntityTooLarge:
            return self._answer(bot.source, 413, {"error": f"over {self.max_bytes} bytes"})
        if not isinstance(update, dict):
            return self._answer(bot.source, 400, {"error": "an Update object (JSON) is expected"})
        await bot.store_updates([update], cursor=None)
        return self._answer(bot.source, 200, {})

    def _cors(self, source: WebSource, request: web.Request) -> dict[str, str] | None:
        """CORS headers for an allowed Origin, {} without an Origin, None for a foreign one."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        if origin.rstrip("/") not in {o.rstrip("/") for o in source.origins}:
            return None
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def _answer(
        self, name: str, status: int, body: object, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        self.intake.metrics.web_responses.labels(name, str(status)).inc()
        return web.json_response(body, status=status, headers=dict(headers or {}))

    async def preflight(self, request: web.Request) -> web.Response:
        name = request.match_info["source"]
        source = self.sources.get(name)
        if source is None:
            return self._answer(name, 404, {"error": f"no web source {name!r}"})
        cors = self._cors(source, request)
        if not cors:
            return self._answer(name, 403, {"error": "origin not allowed"})
        cors.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
        self.intake.metrics.web_responses.labels(name, "204").inc()
        return web.Response(status=204, headers=cors)

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["source"]
        source = self.sources.get(name)
        if source is None:
            return self._answer(name, 404, {"error": f"no web source {name!r}"})
        cors = self._cors(source, request)
        if cors is None:
            log.warning("gateway_web_origin_refused", source=name, origin=request.headers.get("Origin"))
            return self._answer(name, 403, {"error": "origin not allowed"})
        limiter = self.limits[name]
        if not limiter.allow("", self.intake.monotonic()):
            retry = max(1, round(limiter.retry_after("")))
            log.warning("gateway_web_rate_limited", source=name, retry_after=retry)
            return self._answer(
                name, 429, {"error": "too many requests"}, {**cors, "Retry-After": str(retry)}
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(name, 413, {"error": f"over {self.max_bytes} bytes"}, cors)
        form = read_form(
            request.content_type if request.body_exists else "", body, request.headers.get("Idempotency-Key")
        )
        token = form.token if isinstance(form, Form) else _token_field(request.content_type, body)
        if not _authorized(source, request, body, token):
            log.warning("gateway_web_unauthorized", source=name, remote=request.remote)
            return self._answer(name, 401, {"error": "token or signature missing or wrong"}, cors)
        if not isinstance(form, Form):
            problems = [{"field": p.field, "problem": p.problem} for p in form]
            log.info("gateway_web_invalid", source=name, problems=problems)
            if any(p.field == "body" and p.problem.startswith("not UTF-8") for p in form):
                letter = DeadLetter(
                    f"{self.intake.settings.gateway.name}:web:{name}:bad:{uuid.uuid4().hex}",
                    f"web:{name}",
                    "invalid_utf8",
                    form[0].problem,
                    body,
                )
                await self.intake.accept((), (letter,))
            return self._answer(name, 400, {"problems": problems}, cors)
        gateway = self.intake.settings.gateway.name
        key = form.idempotency_key or uuid.uuid4().hex
        request_id = f"{gateway}:web:{name}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"
        record = Request(
            id=request_id,
            channel=RequestChannel.WEB,
            source=f"web:{name}",
            received_at=self.intake.now(),
            sender=Sender(name=form.name, phone=form.phone, email=form.email),
            subject=form.subject,
            body=form.text[: self.intake.settings.gateway.max_body_chars],
        )
        [new] = await self.intake.accept((record,))
        return self._answer(name, 202, {"id": request_id, "duplicate": not new}, cors)


def _token_field(content_type: str, body: bytes) -> str | None:
    """The ``token`` field of a form that failed validation (so a bad form with a good token gets
    400 and its problems, a bad token 401)."""
    if content_type != "application/x-www-form-urlencoded":
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        value = document.get("token") if isinstance(document, dict) else None
        return value if isinstance(value, str) else None
    try:
        return dict(parse_qsl(body.decode("utf-8"))).get("token")
    except (ValueError, UnicodeDecodeError):
        return None
