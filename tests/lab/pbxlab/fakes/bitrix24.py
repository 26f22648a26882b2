"""A fake Bitrix24 portal's REST API on 127.0.0.1: real HTTP, the documented shapes.

What it follows, from the official REST documentation (bitrix24/b24restdocs:
api-reference/how-to-call-rest-api/batch.md, api-reference/telephony/*.md,
api-reference/crm/duplicates/crm-duplicate-find-by-comm.md, _includes/system-errors.md,
settings/performance/limits.md):

- an inbound webhook is `/rest/<user id>/<token>/<method>` (a wrong pair: 401
  `INVALID_CREDENTIALS`); an application calls `/rest/<method>` with `auth=<access token>` in
  the query or the body (an expired token: 401 `expired_token`; none: 401 `NO_AUTH_FOUND`),
  and refreshes it at `/oauth/token/?grant_type=refresh_token&client_id&client_secret&
  refresh_token` (a used refresh token is refused);
- the method may carry `.json`; method names are case-insensitive; parameters come as JSON,
  as a urlencoded form or as the query, in PHP's bracket notation (`fields[TITLE]=…`);
- every answer is `{"result": …, "time": {start, finish, duration, processing, date_start,
  date_finish, operating_reset_at, operating}}`; errors are `{"error": CODE,
  "error_description": text}` with the documented status (400 ERROR_CORE, 404
  ERROR_METHOD_NOT_FOUND, 401 …);
- `batch`: `halt` and up to 50 `cmd[key]=method?query` commands run in order, each able to use
  `$result[key][field]…` of the ones before; the answer is `{"result": {"result": {…},
  "result_error": {…}, "result_total": …, "result_next": …, "result_time": …}}`; a batch is
  one request for the limit; nested batch is refused;
- the limit: a leaky bucket per portal, 2 requests/s drained, 50 deep; a request arriving
  with the bucket full is answered 503 `QUERY_LIMIT_EXCEEDED` (`rejected_for_limit` counts them);
- telephony.externalCall.register (a repeat with the same PHONE_NUMBER, TYPE, user,
  LINE_NUMBER and EXTERNAL_CALL_ID within 30 min returns the same CALL_ID), .finish (a call
  that is not registered or already finished: ERROR_CORE "Call is not found…"; the finished
  call goes to the statistics, `voximplant.statistic.get`), .attachRecord (only after finish;
  wav/mp3; base64 content; a second one replaces the first), .searchCrmEntities;
  telephony.externalLine.add/get; crm.duplicate.findbycomm; crm.contact.add/get/list/update;
  crm.company.list and crm.lead.list (filter with `>=DATE_MODIFY`…, select, order, `start`,
  answered with `total` and `next`; PHONE a multifield [{ID, VALUE, VALUE_TYPE, TYPE_ID}]; a
  lead's STATUS_SEMANTIC_ID P/S/F);
  crm.deal.add/get/list; tasks.task.add/list; user.get; timeman.status.

Faults for tests: `POST /_fake/faults` `{"unavailable_for": s, "fail_next": n,
"operation_limit_next": n, "delay": s, "expire_tokens": true}` (plain 502 for s seconds / for
the next n requests / 429 OPERATION_TIME_LIMIT for the next n / every answer s seconds slow /
access tokens expire now). `GET /_fake/state` shows everything that arrived. Standalone:
`python -m pbxlab.fakes.bitrix24 --port 8092 --webhook 1:TOKEN --user 7:Olena:101`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import json
import re
import secrets
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

RATE_PER_SECOND = 2.0  # the bucket drains this many requests per second
BURST = 50  # the bucket's depth
BATCH_LIMIT = 50  # commands per batch
REREGISTER_SECONDS = 30 * 60
CALL_TYPES = (1, 2, 3, 4, 5)
STATUS_CODES = ("200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423", "OTHER")
TIMEMAN_STATUSES = ("OPENED", "CLOSED", "PAUSED", "EXPIRED")


class ApiError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


def core(description: str) -> ApiError:
    return ApiError(400, "ERROR_CORE", description)


def _digits(text: Any) -> str:
    return re.sub(r"\D", "", str(text))


def _now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------- PHP-style parameters


def php_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][]=1&a[b][]=2&c=3` → {"a": {"b": ["1", "2"]}, "c": "3"}, as PHP parses a query."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"\[([^\]]*)\]", "[" + rest) if rest else [])
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                else:
                    child: Any = [] if parts[index + 1] == "" else {}
                    node.append(child)
                    node = child
                continue
            if last:
                node[part] = value
            else:
                if part not in node or not isinstance(node[part], dict | list):
                    node[part] = [] if parts[index + 1] == "" else {}
                node = node[part]
    return root


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return list(value.values())
    return value if isinstance(value, list) else [value]


def _compare(operator: str, actual: Any, wanted: Any) -> bool:
    def key(value: Any) -> tuple[int, float, str]:
        text = str(value)
        try:
            return (0, float(text), "")
        except ValueError:
            pass
        try:
            return (1, datetime.fromisoformat(text).timestamp(), "")
        except ValueError:
            return (2, 0.0, text)

    a, w = key(actual), key(wanted)
    return {">": a > w, ">=": a >= w, "<": a < w, "<=": a <= w}[operator]


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise core(f"{name} should be an integer") from None


@dataclass
class Faults:
    unavailable_until: float = 0.0
    fail_next: int = 0
    operation_limit_next: int = 0
    delay: float = 0.0


@dataclass
class Portal:
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)  # CALL_ID → open call
    statistic: list[dict[str, Any]] = field(default_factory=list)  # finished calls
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # CALL_ID → attached file
    requests: list[dict[str, Any]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # every method run, batched ones too
    rejected_for_limit: int = 0


class FakeBitrix24:
    """One portal. `start()` serves it on 127.0.0.1; `webhook_url(user, token)` is the base URL."""

    def __init__(
        self,
        *,
        webhooks: dict[int, str] | None = None,
        rate_per_second: float = RATE_PER_SECOND,
        burst: int = BURST,
        client_id: str = "local.pbxlink",
        client_secret: str = "app-secret",
    ) -> None:
        self.webhooks = dict(webhooks or {1: "webhooktoken"})
        self.rate = rate_per_second
        self.burst = burst
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_tokens: dict[str, float] = {}  # token → expires (monotonic)
        self.refresh_tokens: set[str] = set()
        self.portal = Portal()
        self.faults = Faults()
        self._level = 0.0
        self._level_at = time.monotonic()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._build_app()

    # ------------------------------------------------------------------ setup

    def add_user(
        self,
        user_id: int,
        name: str = "",
        inner: str | None = None,
        *,
        active: bool = True,
        timeman: str = "OPENED",
    ) -> None:
        self.portal.users[user_id] = {
            "ID": str(user_id),
            "ACTIVE": active,
            "NAME": name or f"User{user_id}",
            "LAST_NAME": "",
            "UF_PHONE_INNER": inner or "",
            "TIMEMAN_STATUS": timeman,
        }

    def add_contact(self, name: str, phones: list[str], *, assigned: int = 1) -> int:
        """A contact a person typed in (numbers as they wrote them)."""
        return self._add_contact(
            {
                "NAME": name,
                "PHONE": [{"VALUE": p, "VALUE_TYPE": "WORK"} for p in phones],
                "ASSIGNED_BY_ID": assigned,
            }
        )

    def add_company(self, title: str, phones: list[str], *, assigned: int = 1) -> int:
        """A company a person typed in (PHONE is the same multifield as a contact's)."""
        company_id = next(self._ids)
        self.portal.companies[company_id] = {
            "ID": company_id,
            "TITLE": title,
            "PHONE": [
                {"ID": next(self._ids), "VALUE": p, "VALUE_TYPE": "WORK", "TYPE_ID": "PHONE"} for p in phones
            ],
            "ASSIGNED_BY_ID": assigned,
            "DATE_CREATE": _now_iso(),
            "DATE_MODIFY": _now_iso(),
        }
        return company_id

    def add_lead(self, title: str, phones: list[str], *, assigned: int = 1, semantic: str = "P") -> int:
        """A lead; `semantic` is its STATUS_SEMANTIC_ID: P in work, S converted, F failed."""
        lead_id = next(self._ids)
        self.portal.leads[lead_id] = {
            "ID": lead_id,
            "TITLE": title,
            "PHONE": [
                {"ID": next(self._ids), "VALUE": p, "VALUE_TYPE": "WORK", "TYPE_ID": "PHONE"} for p in phones
            ],
            "ASSIGNED_BY_ID": assigned,
            "STATUS_ID": {"P": "NEW", "S": "CONVERTED", "F": "JUNK"}[semantic],
            "STATUS_SEMANTIC_ID": semantic,
            "DATE_CREATE": _now_iso(),
            "DATE_MODIFY": _now_iso(),
        }
        return lead_id

    def add_deal(self, title: str, contact_id: int, *, closed: bool = False, assigned: int = 1) -> int:
        return self._add_deal(
            {
                "TITLE": title,
                "CONTACT_ID": contact_id,
                "CLOSED": "Y" if closed else "N",
                "ASSIGNED_BY_ID": assigned,
            }
        )

    def issue_tokens(self) -> tuple[str, str]:
        """An installed application's first access and refresh tokens (valid one hour)."""
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access_tokens[access] = time.monotonic() + 3600
        self.refresh_tokens.add(refresh)
        return access, refresh

    def webhook_url(self, user: int | None = None, token: str | None = None) -> str:
        user = user if user is not None else next(iter(self.webhooks))
        return f"{self.url}/rest/{user}/{token or self.webhooks[user]}/"

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ plumbing

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/_fake/state", self.fake_state)
        r.add_post("/_fake/faults", self.fake_faults)
        r.add_route("*", "/oauth/token/", self.oauth_token)
        r.add_route("*", "/rest/{user:\\d+}/{token}/{method}", self.rest_webhook)
        r.add_route("*", "/rest/{method}", self.rest_app)
        return app

    def _bucket_full(self) -> bool:
        """Leaky bucket: drains `rate` per second, `burst` deep; True if this request overflows."""
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._level_at) * self.rate)
        self._level_at = now
        if self._level + 1 > self.burst:
            return True
        self._level += 1
        return False

    def _time(self, started: float) -> dict[str, Any]:
        finish = time.time()
        return {
            "start": started,
            "finish": finish,
            "duration": finish - started,
            "processing": finish - started,
            "date_start": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "date_finish": datetime.fromtimestamp(finish, UTC).isoformat(timespec="seconds"),
            "operating_reset_at": int(started) + 600,
            "operating": 0,
        }

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        return web.json_response(
            {"error": exc.error, "error_description": exc.description}, status=exc.status
        )

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params = php_params(list(request.query.items()))
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise ApiError(400, "INVALID_REQUEST", "Request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "INVALID_REQUEST", "Request body must be an object")
                params.update(body)
            else:
                form = await request.post()
                params.update(php_params([(k, str(v)) for k, v in form.items()]))
        return params

    async def rest_webhook(self, request: web.Request) -> web.StreamResponse:
        user, token = int(request.match_info["user"]), request.match_info["token"]

        def authorize(params: dict[str, Any]) -> None:
            if self.webhooks.get(user) != token:
                raise ApiError(401, "INVALID_CREDENTIALS", "Invalid request credentials")

        return await self._serve(request, authorize)

    async def rest_app(self, request: web.Request) -> web.StreamResponse:
        def authorize(params: dict[str, Any]) -> None:
            token = params.pop("auth", None)
            if not token:
                raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
            expires = self.access_tokens.get(str(token))
            if expires is None:
                raise ApiError(401, "invalid_token", "The access token provided is invalid.")
            if expires < time.monotonic():
                raise ApiError(401, "expired_token", "The access token provided has expired.")

        return await self._serve(request, authorize)

    async def _serve(self, request: web.Request, authorize: Any) -> web.StreamResponse:
        started = time.time()
        method = request.match_info["method"].lower().removesuffix(".json")
        entry: dict[str, Any] = {"method": method, "at": started}
        self.portal.requests.append(entry)
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        if time.monotonic() < self.faults.unavailable_until or self.faults.fail_next > 0:
            self.faults.fail_next = max(0, self.faults.fail_next - 1)
            entry["status"] = 502
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>")
        if self._bucket_full():
            self.portal.rejected_for_limit += 1
            entry["status"] = 503
            return self._error(ApiError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
        if self.faults.operation_limit_next > 0:
            self.faults.operation_limit_next -= 1
            entry["status"] = 429
            return self._error(
                ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
            )
        try:
            params = await self._params(request)
            authorize(params)
            result, extra = self._run(method, params, nested=False)
        except ApiError as exc:
            entry["status"] = exc.status
            return self._error(exc)
        entry["status"] = 200
        return web.json_response({"result": result, **extra, "time": self._time(started)})

    def _run(self, method: str, params: dict[str, Any], *, nested: bool) -> tuple[Any, dict[str, Any]]:
        if method == "batch":
            if nested:
                raise ApiError(400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
            return self.batch(params), {}
        handler = self.METHODS.get(method)
        if handler is None:
            raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        self.portal.commands.append(method)
        answer: tuple[Any, dict[str, Any]] = handler(self, params)
        return answer

    # ------------------------------------------------------------------ batch

    _REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")

    def _substitute(self, text: str, results: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            value: Any = results.get(match.group(1))
            for key in re.findall(r"\[([^\]]*)\]", match.group(2)):
                if isinstance(value, dict):
                    value = value.get(key)
                elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                    value = value[int(key)]
                else:
                    value = None
            return "" if value is None or isinstance(value, dict | list) else str(value)

        return self._REFERENCE.sub(replace, text)

    def _substitute_all(self, value: Any, results: dict[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self._substitute_all(v, results) for k, v in value.items()}
        if isinstance(value, list):
            return [self._substitute_all(v, results) for v in value]
        return self._substitute(value, results) if isinstance(value, str) else value

    def batch(self, params: dict[str, Any]) -> dict[str, Any]:
        commands = params.get("cmd")
        if not isinstance(commands, dict | list) or not commands:
            raise core("Commands are not set")
        items = list(commands.items()) if isinstance(commands, dict) else list(enumerate(commands))
        if len(items) > BATCH_LIMIT:
            raise core(f"Max batch length exceeded ({BATCH_LIMIT})")
        halt = str(params.get("halt", "0")) not in ("0", "false", "")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for raw_key, command in items:
            key = str(raw_key)
            started = time.time()
            method, _, query = str(command).partition("?")
            try:
                # The command's query is parsed first, then `$result[…]` in its values replaced.
                sub = self._substitute_all(
                    php_params(urllib.parse.parse_qsl(query, keep_blank_values=True)), results
                )
                result, extra = self._run(method.lower().removesuffix(".json"), sub, nested=True)
            except ApiError as exc:
                errors[key] = {"error": exc.error, "error_description": exc.description}
                if halt:
                    break
                continue
            results[key] = result
            if "total" in extra:
                totals[key] = extra["total"]
            times[key] = self._time(started)
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": [],
            "result_time": times or [],
        }

    # ------------------------------------------------------------------ users

    def _user_by(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("USER_ID") not in (None, ""):
            user = self.portal.users.get(_int(params["USER_ID"], "USER_ID"))
        elif params.get("USER_PHONE_INNER") not in (None, ""):
            inner = str(params["USER_PHONE_INNER"])
            user = next((u for u in self.portal.users.values() if u["UF_PHONE_INNER"] == inner), None)
        else:
            raise core("USER_ID or USER_PHONE_INNER should be set")
        if user is None or not user["ACTIVE"]:
            raise core("User is not found or is not active")
        return user

    def user_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        filters = params.get("FILTER") or params.get("filter") or {}
        users = [
            {k: v for k, v in u.items() if k != "TIMEMAN_STATUS"}
            for u in self.portal.users.values()
            if all(str(u.get(k.lstrip("=").upper())).lower() == str(v).lower() for k, v in filters.items())
        ]
        start = _int(params.get("start", 0), "start")
        page = users[start : start + 50]
        extra: dict[str, Any] = {"total": len(users)}
        if start + 50 < len(users):
            extra["next"] = start + 50
        return page, extra

    def timeman_status(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        user = self.portal.users.get(_int(params.get("USER_ID", 1), "USER_ID"))
        if user is None:
            raise core("User not found")
        return {"STATUS": user["TIMEMAN_STATUS"], "TIME_START": None}, {}

    # ------------------------------------------------------------------ telephony

    def line_add(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        number = str(params.get("NUMBER") or "")
        if not number:
            raise core("NUMBER should not be empty")
        if number in self.portal.lines:
            raise core("Line already exists")
        line = self.portal.lines.setdefault(number, {"NUMBER": number, "ID": next(self._ids)})
        line["NAME"] = str(params.get("NAME") or number)
        line["CRM_AUTO_CREATE"] = str(params.get("CRM_AUTO_CREATE", "Y"))
        return {"ID": line["ID"]}, {}

    def line_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return [{"NUMBER": n["NUMBER"], "NAME": n["NAME"]} for n in self.portal.lines.values()], {}

    def _find_by_phone(self, phone: str) -> list[tuple[str, dict[str, Any]]]:
        digits = _digits(phone)
        found = []
        for kind, table in (
            ("CONTACT", self.portal.contacts),
            ("COMPANY", self.portal.companies),
            ("LEAD", self.portal.leads),
        ):
            for entity in table.values():
                if any(_digits(p.get("VALUE", "")) == digits for p in entity.get("PHONE") or []):
                    found.append((kind, entity))
        return found

    def register(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        user = self._user_by(params)
        kind = _int(params.get("TYPE"), "TYPE") if params.get("TYPE") not in (None, "") else None
        if kind not in CALL_TYPES:
            raise core("Unknown TYPE")
        phone = str(params.get("PHONE_NUMBER") or "")
        if not _digits(phone):
            raise core("Unsupported phone number format")
        start = params.get("CALL_START_DATE")
        if start not in (None, ""):
            try:
                parsed = datetime.fromisoformat(str(start))
            except ValueError:
                raise core("CALL_START_DATE should be in the ISO-8601 format") from None
            if parsed.tzinfo is None:
                raise core("CALL_START_DATE should be in the ISO-8601 format")
        key = (
            phone,
            kind,
            user["ID"],
            str(params.get("LINE_NUMBER") or ""),
            str(params.get("EXTERNAL_CALL_ID") or ""),
        )
        now = time.time()
        for call in itertools.chain(self.portal.registered.values(), self.portal.statistic):
            if call["_key"] == list(key) and now - call["_registered_at"] < REREGISTER_SECONDS:
                return self._register_answer(call), {}
        entity_type = params.get("CRM_ENTITY_TYPE") or None
        entity_id = params.get("CRM_ENTITY_ID") or None
        created: list[dict[str, Any]] = []
        if entity_type is None:
            found = self._find_by_phone(phone)
            if found:
                entity_type, entity = found[0]
                entity_id = entity["ID"]
            elif str(params.get("CRM_CREATE", "0")) == "1":
                lead_id = next(self._ids)
                self.portal.leads[lead_id] = {
                    "ID": lead_id,
                    "TITLE": f"{phone} - incoming call" if kind != 1 else f"{phone} - outgoing call",
                    "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
                    "ASSIGNED_BY_ID": int(user["ID"]),
                    "SOURCE_ID": params.get("CRM_SOURCE") or "CALL",
                    "STATUS_ID": "NEW",
                    "STATUS_SEMANTIC_ID": "P",
                    "DATE_CREATE": _now_iso(),
                    "DATE_MODIFY": _now_iso(),
                }
                entity_type, entity_id = "LEAD", lead_id
                created.append({"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id})
        call_id = f"externalCall.{secrets.token_hex(16)}.{int(now)}"
        call = {
            "CALL_ID": call_id,
            "_key": list(key),
            "_registered_at": now,
            "USER_ID": int(user["ID"]),
            "PHONE_NUMBER": phone,
            "TYPE": kind,
            "LINE_NUMBER": key[3],
            "EXTERNAL_CALL_ID": key[4] or None,
            "CALL_START_DATE": start or _now_iso(),
            "SHOW": str(params.get("SHOW", "1")),
            "CRM_CREATE": str(params.get("CRM_CREATE", "0")),
            "CRM_ENTITY_TYPE": entity_type,
            "CRM_ENTITY_ID": int(entity_id) if entity_id else None,
            "CRM_CREATED_LEAD": created[0]["ENTITY_ID"] if created else None,
            "CRM_CREATED_ENTITIES": created,
            "SHOWN_TO": [int(user["ID"])] if str(params.get("SHOW", "1")) == "1" else [],
        }
        self.portal.registered[call_id] = call
        return self._register_answer(call), {}

    @staticmethod
    def _register_answer(call: dict[str, Any]) -> dict[str, Any]:
        return {
            "CALL_ID": call["CALL_ID"],
            "CRM_CREATED_LEAD": call["CRM_CREATED_LEAD"],
            "CRM_CREATED_ENTITIES": call["CRM_CREATED_ENTITIES"],
            "CRM_ENTITY_TYPE": call["CRM_ENTITY_TYPE"],
            "CRM_ENTITY_ID": call["CRM_ENTITY_ID"],
        }

    def finish(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        call_id = params.get("CALL_ID")
        if not isinstance(call_id, str) or not call_id:
            raise ApiError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        user = self._user_by(params)
        call = self.portal.registered.get(call_id)
        if call is None:
            raise core("Call is not found (call should be registered prior to finishing)")
        duration = _int(params.get("DURATION", 0), "DURATION")
        status = str(params.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
        if status not in STATUS_CODES:
            status = "OTHER"
        del self.portal.registered[call_id]
        activity = next(self._ids)
        row = {
            **call,
            "ID": len(self.portal.statistic) + 1,
            "PORTAL_USER_ID": int(user["ID"]),
            "PORTAL_NUMBER": call["LINE_NUMBER"],
            "INCOMING": str(call["TYPE"]),
            "CALL_DURATION": duration,
            "CALL_STATUS": 1 if status == "200" else 0,
            "CALL_FAILED_CODE": status,
            "CALL_FAILED_REASON": str(params.get("FAILED_REASON") or ""),
            "CALL_VOTE": params.get("VOTE"),
            "COST": float(params.get("COST") or 0),
            "COST_CURRENCY": str(params.get("COST_CURRENCY") or ""),
            "CRM_ACTIVITY_ID": activity,
            "COMMENT": None,
        }
        self.portal.statistic.append(row)
        return {
            k: v
            for k, v in row.items()
            if not k.startswith("_")
            and k
            not in (
                "SHOW",
                "CRM_CREATE",
                "TYPE",
                "USER_ID",
                "LINE_NUMBER",
                "CRM_CREATED_LEAD",
                "CRM_CREATED_ENTITIES",
                "SHOWN_TO",
            )
        }, {}

    def _card(self, params: dict[str, Any], show: bool) -> tuple[Any, dict[str, Any]]:
        """telephony.externalCall.show / .hide: true, or false for a call that is not open."""
        call = self.portal.registered.get(str(params.get("CALL_ID") or ""))
        if call is None:
            return False, {}
        users = [_int(u, "USER_ID") for u in _as_list(params.get("USER_ID"))] or [call["USER_ID"]]
        shown: list[int] = call["SHOWN_TO"]
        for user in users:
            if show and user not in shown:
                shown.append(user)
            elif not show and user in shown:
                shown.remove(user)
        return True, {}

    def show(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._card(params, True)

    def hide(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._card(params, False)

    def attach_record(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        call_id = str(params.get("CALL_ID") or "")
        filename = params.get("FILENAME")
        url = params.get("RECORD_URL")
        if not filename and not url:
            raise ApiError(
                400,
                "",
                "Required parameters are not set. Request should contain either URL or FILENAME parameter",
            )
        if not any(c["CALL_ID"] == call_id for c in self.portal.statistic):
            raise ApiError(
                400, "", "Call is not found in the statistic table. It looks like it is not finished yet."
            )
        if filename is not None and not str(filename).lower().endswith((".wav", ".mp3")):
            raise core("Wrong file extension. Only wav and mp3 are allowed")
        content = params.get("FILE_CONTENT")
        if content is None and url is None:
            return {
                "uploadUrl": f"{self.url}/rest/upload.json?token=unsupported-by-the-fake",
                "fieldName": "file",
            }, {}
        size = 0
        if content is not None:
            if not content:
                raise core("File content is empty.")
            try:
                size = len(base64.b64decode(str(content), validate=True))
            except (binascii.Error, ValueError):
                raise core("File content is not properly encoded. Base64 encoding is expected.") from None
        file_id = next(self._ids)
        self.portal.records[call_id] = {
            "FILE_ID": file_id,
            "FILENAME": filename,
            "SIZE": size,
            "RECORD_URL": url,
        }
        return {"FILE_ID": file_id}, {}

    def search_entities(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        found = []
        for kind, entity in self._find_by_phone(str(params.get("PHONE_NUMBER") or "")):
            user = self.portal.users.get(int(entity.get("ASSIGNED_BY_ID") or 0), {})
            found.append(
                {
                    "CRM_ENTITY_TYPE": kind,
                    "CRM_ENTITY_ID": entity["ID"],
                    "ASSIGNED_BY_ID": entity.get("ASSIGNED_BY_ID"),
                    "NAME": entity.get("NAME") or entity.get("TITLE"),
                    "ASSIGNED_BY": {
                        "ID": user.get("ID"),
                        "TIMEMAN_STATUS": user.get("TIMEMAN_STATUS"),
                        "USER_PHONE_INNER": user.get("UF_PHONE_INNER"),
                    },
                }
            )
        return found, {}

    def statistic_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        filters = params.get("FILTER") or {}
        rows = [
            {k: v for k, v in row.items() if not k.startswith("_")}
            for row in self.portal.statistic
            if all(str(row.get(k)) == str(v) for k, v in filters.items())
        ]
        return rows[:50], {"total": len(rows)}

    # ------------------------------------------------------------------ CRM

    def findbycomm(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        kind = str(params.get("type") or "").upper()
        if not kind:  # the documented error shape: the message is the code
            raise ApiError(400, "Communication type is not defined", "Parameter 'type' is required.")
        if kind not in ("PHONE", "EMAIL"):
            raise ApiError(400, f"Communication type '{kind}' is not supported in current context", "")
        values = _as_list(params.get("values"))
        if not values:
            raise ApiError(400, "Communication values is not defined", "Parameter 'values' is required.")
        if len(values) > 20:
            raise core("Communication values is too many (20 max).")
        wanted = str(params.get("entity_type") or "").upper()
        result: dict[str, list[int]] = {}
        for value in values:
            for kind, entity in self._find_by_phone(str(value)):
                if wanted and kind != wanted:
                    continue
                ids = result.setdefault(kind, [])
                if entity["ID"] not in ids:
                    ids.append(entity["ID"])
        return (result or []), {}

    def _fields(self, params: dict[str, Any]) -> dict[str, Any]:
        fields = params.get("fields") or params.get("FIELDS")
        if not isinstance(fields, dict) or not fields:
            raise core("Parameter 'fields' must be array.")
        return dict(fields)

    def _assigned(self, fields: dict[str, Any]) -> int:
        value = fields.get("ASSIGNED_BY_ID")
        if value in (None, ""):
            return next(iter(self.webhooks), 1)
        user = _int(value, "ASSIGNED_BY_ID")
        if user not in self.portal.users:
            raise core(f"User with ID {user} not found")
        return user

    def _add_contact(self, fields: dict[str, Any]) -> int:
        contact_id = next(self._ids)
        phones = _as_list(fields.get("PHONE"))
        self.portal.contacts[contact_id] = {
            **fields,
            "ID": contact_id,
            "PHONE": [{"ID": next(self._ids), **p} for p in phones],
            "ASSIGNED_BY_ID": int(fields.get("ASSIGNED_BY_ID") or 1),
            "DATE_CREATE": _now_iso(),
            "DATE_MODIFY": _now_iso(),
        }
        return contact_id

    def contact_add(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        fields = self._fields(params)
        if not any(fields.get(k) for k in ("NAME", "LAST_NAME", "SECOND_NAME")):
            raise core("One of the fields must be filled: Name, Last name, Second name")
        fields["ASSIGNED_BY_ID"] = self._assigned(fields)
        return self._add_contact(fields), {}

    def _entity_get(
        self, table: dict[int, dict[str, Any]], params: dict[str, Any], what: str
    ) -> tuple[Any, dict[str, Any]]:
        entity = table.get(_int(params.get("id") or params.get("ID"), "ID"))
        if entity is None:
            raise ApiError(400, "", "Not found")
        return entity, {}

    def _list(self, table: dict[int, dict[str, Any]], params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        filters = params.get("filter") or params.get("FILTER") or {}
        select = _as_list(params.get("select") or params.get("SELECT"))

        def matches(entity: dict[str, Any]) -> bool:
            for key, wanted in filters.items():
                name = key.lstrip("=@!<>")
                values = (
                    [str(v) for v in _as_list(wanted)] if isinstance(wanted, list | dict) else [str(wanted)]
                )
                actual = entity.get(name)
                if key.startswith((">", "<")):  # ISO dates and numbers, compared as the portal does
                    if not _compare(key[: 2 if key[1:2] == "=" else 1], actual, wanted):
                        return False
                    continue
                if key.startswith("!"):
                    if str(actual) in values:
                        return False
                elif str(actual) not in values:
                    return False
            return True

        rows = [e for e in table.values() if matches(e)]
        order = params.get("order") or {}
        if isinstance(order, dict) and order:
            name, direction = next(iter(order.items()))
            rows.sort(key=lambda e: str(e.get(name)).zfill(20), reverse=str(direction).upper() == "DESC")
        start = _int(params.get("start", 0), "start")
        page = rows[start : start + 50]
        if select and "*" not in select:
            page = [{k: v for k, v in e.items() if k in select or k == "ID"} for e in page]
        extra: dict[str, Any] = {"total": len(rows)}
        if start + 50 < len(rows):
            extra["next"] = start + 50
        return page, extra

    def contact_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._entity_get(self.portal.contacts, params, "contact")

    def contact_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._list(self.portal.contacts, params)

    def contact_update(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        entity = self.portal.contacts.get(_int(params.get("id") or params.get("ID"), "ID"))
        if entity is None:
            raise ApiError(400, "", "Not found")
        fields = self._fields(params)
        if "ASSIGNED_BY_ID" in fields:
            fields["ASSIGNED_BY_ID"] = self._assigned(fields)
        entity.update({k: v for k, v in fields.items() if k != "PHONE"})
        entity["DATE_MODIFY"] = _now_iso()
        return True, {}

    def company_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._list(self.portal.companies, params)

    def lead_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._list(self.portal.leads, params)

    def _add_deal(self, fields: dict[str, Any]) -> int:
        deal_id = next(self._ids)
        self.portal.deals[deal_id] = {
            "STAGE_ID": "NEW",
            "CLOSED": "N",
            **fields,
            "ID": deal_id,
            "CONTACT_ID": int(fields["CONTACT_ID"]) if fields.get("CONTACT_ID") else None,
            "ASSIGNED_BY_ID": int(fields.get("ASSIGNED_BY_ID") or 1),
            "DATE_CREATE": _now_iso(),
        }
        return deal_id

    def deal_add(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        fields = self._fields(params)
        fields["ASSIGNED_BY_ID"] = self._assigned(fields)
        contact = fields.get("CONTACT_ID")
        if contact not in (None, "") and _int(contact, "CONTACT_ID") not in self.portal.contacts:
            raise core(f"Contact with ID {contact} is not found")
        return self._add_deal(fields), {}

    def deal_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._entity_get(self.portal.deals, params, "deal")

    def deal_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self._list(self.portal.deals, params)

    # ------------------------------------------------------------------ tasks

    def task_add(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        fields = self._fields(params)
        if not fields.get("TITLE"):
            raise core("Не указано название задачи")  # the portal's own wording
        responsible = _int(fields.get("RESPONSIBLE_ID"), "RESPONSIBLE_ID")
        if responsible not in self.portal.users:
            raise core("Не указан ответственный")
        task_id = next(self._ids)
        task = {
            "id": str(task_id),
            "title": str(fields["TITLE"]),
            "description": str(fields.get("DESCRIPTION") or ""),
            "responsibleId": str(responsible),
            "createdBy": str(fields.get("CREATED_BY") or responsible),
            "accomplices": [str(a) for a in _as_list(fields.get("ACCOMPLICES"))],
            "deadline": fields.get("DEADLINE"),
            "ufCrmTask": [str(b) for b in _as_list(fields.get("UF_CRM_TASK"))],
            "status": "2",
            "createdDate": _now_iso(),
        }
        self.portal.tasks[task_id] = task
        return {"task": task}, {}

    def task_list(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        filters = params.get("filter") or {}
        names = {"RESPONSIBLE_ID": "responsibleId", "TITLE": "title", "ID": "id", "CREATED_BY": "createdBy"}
        rows = [
            t
            for t in self.portal.tasks.values()
            if all(str(t.get(names.get(k.lstrip("="), k))) == str(v) for k, v in filters.items())
        ]
        return {"tasks": rows[:50]}, {"total": len(rows)}

    METHODS: ClassVar[dict[str, Any]] = {
        "user.get": user_get,
        "timeman.status": timeman_status,
        "telephony.externalline.add": line_add,
        "telephony.externalline.get": line_get,
        "telephony.externalcall.register": register,
        "telephony.externalcall.finish": finish,
        "telephony.externalcall.attachrecord": attach_record,
        "telephony.externalcall.searchcrmentities": search_entities,
        "telephony.externalcall.show": show,
        "telephony.externalcall.hide": hide,
        "voximplant.statistic.get": statistic_get,
        "crm.duplicate.findbycomm": findbycomm,
        "crm.contact.add": contact_add,
        "crm.contact.get": contact_get,
        "crm.contact.list": contact_list,
        "crm.contact.update": contact_update,
        "crm.company.list": company_list,
        "crm.lead.list": lead_list,
        "crm.deal.add": deal_add,
        "crm.deal.get": deal_get,
        "crm.deal.list": deal_list,
        "tasks.task.add": task_add,
        "tasks.task.list": task_list,
    }

    # ------------------------------------------------------------------ OAuth

    async def oauth_token(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        if params.get("grant_type") != "refresh_token":
            return web.json_response(
                {"error": "invalid_request", "error_description": "grant_type"}, status=400
            )
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return web.json_response(
                {"error": "invalid_client", "error_description": "Invalid client"}, status=401
            )
        refresh = params.get("refresh_token", "")
        if refresh not in self.refresh_tokens:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "Invalid refresh token"}, status=400
            )
        self.refresh_tokens.discard(refresh)  # each refresh token is used once
        access, new_refresh = self.issue_tokens()
        self.portal.requests.append({"method": "oauth.token", "at": time.time(), "status": 200})
        return web.json_response(
            {
                "access_token": access,
                "expires": int(time.time()) + 3600,
                "expires_in": 3600,
                "scope": "app",
                "domain": "oauth.bitrix.info",
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "status": "L",
                "client_endpoint": f"{self.url}/rest/",
                "member_id": "fake-member",
                "user_id": next(iter(self.webhooks), 1),
                "refresh_token": new_refresh,
            }
        )

    # ------------------------------------------------------------------ test controls

    def snapshot(self) -> dict[str, Any]:
        p = self.portal

        def clean(rows: Any) -> list[dict[str, Any]]:
            return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]

        return {
            "users": list(p.users.values()),
            "contacts": list(p.contacts.values()),
            "companies": list(p.companies.values()),
            "leads": list(p.leads.values()),
            "deals": list(p.deals.values()),
            "tasks": list(p.tasks.values()),
            "lines": list(p.lines.values()),
            "registered": clean(p.registered.values()),
            "statistic": clean(p.statistic),
            "records": p.records,
            "requests": p.requests,
            "commands": p.commands,
            "rejected_for_limit": p.rejected_for_limit,
        }

    async def fake_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def fake_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "unavailable_for" in body:
            self.faults.unavailable_until = time.monotonic() + float(body["unavailable_for"])
        if "fail_next" in body:
            self.faults.fail_next = int(body["fail_next"])
        if "operation_limit_next" in body:
            self.faults.operation_limit_next = int(body["operation_limit_next"])
        if "delay" in body:
            self.faults.delay = float(body["delay"])
        if body.get("expire_tokens"):
            self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)
        for user_id, status in (body.get("timeman") or {}).items():  # {id: OPENED | CLOSED | …}
            self.portal.users[int(user_id)]["TIMEMAN_STATUS"] = status
        if "assign" in body:  # [contact id, user id]: a person reassigns a contact in the portal
            contact_id, user_id = body["assign"]
            self.portal.contacts[int(contact_id)]["ASSIGNED_BY_ID"] = int(user_id)
            self.portal.contacts[int(contact_id)]["DATE_MODIFY"] = _now_iso()
        if "users" in body:  # [[id, name, inner, timeman], ...]
            for user_id, name, inner, timeman in body["users"]:
                self.add_user(int(user_id), name, inner, timeman=timeman)
        if "contacts" in body:  # [[name, [phones], assigned], ...]
            ids = [
                self.add_contact(name, phones, assigned=assigned)
                for name, phones, assigned in body["contacts"]
            ]
            return web.json_response({"ok": True, "ids": ids})
        if "deals" in body:  # [[title, contact id, closed], ...]
            ids = [self.add_deal(t, c, closed=closed) for t, c, closed in body["deals"]]
            return web.json_response({"ok": True, "ids": ids})
        return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Bitrix24 portal REST API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--webhook", action="append", default=[], help="USER:TOKEN of an inbound webhook")
    parser.add_argument("--rate", type=float, default=RATE_PER_SECOND)
    parser.add_argument("--burst", type=int, default=BURST)
    parser.add_argument(
        "--user", action="append", default=[], help="ID:NAME:INNER[:TIMEMAN], e.g. 7:Olena:101"
    )
    args = parser.parse_args()

    async def run() -> None:
        hooks = {int(u): t for u, _, t in (w.partition(":") for w in args.webhook)} or None
        fake = FakeBitrix24(webhooks=hooks, rate_per_second=args.rate, burst=args.burst)
        for spec in args.user:
            parts = spec.split(":")
            fake.add_user(
                int(parts[0]),
                parts[1] if len(parts) > 1 else "",
                parts[2] if len(parts) > 2 else None,
                timeman=parts[3] if len(parts) > 3 else "OPENED",
            )
        url = await fake.start(args.port)
        access, refresh = fake.issue_tokens()
        print(
            json.dumps({"url": url, "webhook": fake.webhook_url(), "access": access, "refresh": refresh}),
            flush=True,
        )
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
