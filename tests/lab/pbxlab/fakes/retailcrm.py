"""A fake RetailCRM (Simla.com) API v5 on 127.0.0.1: real HTTP, the documented request encoding.

What it follows, from the official PHP client (retailcrm/api-client-php: request/entity models,
enums and the JSON fixtures of its tests) and the API rules page:

- the API key in the `X-API-KEY` header (or the `apiKey` query parameter); a wrong key is
  HTTP 403 `{"success": false, "errorMsg": "Wrong \\"apiKey\\" value."}`;
- POST bodies are `application/x-www-form-urlencoded` whose structured fields hold JSON text
  (`customer={...}`, `calls=[...]`, `event={...}`, `integrationModule={...}`), plus plain
  fields (`site`); GET filters are `filter[name]=…`, `filter[externalIds][]=…`;
- errors are `{"success": false, "errorMsg": "...", "errors": {field: message}}` with a 4xx
  status; creates answer 201 `{"success": true, "id": N}`;
- enums: call event `type` in|out|hangup, `hangupStatus` answered|busy|cancel|failed|no answered;
  call `result` answered|busy|failed|no answer|not allowed|unknown; dates "Y-m-d H:i:s";
- `externalId` of an uploaded call is an idempotency key: a second upload is reported in
  `duplicateCalls`, not stored again; customers' and orders' `externalId` are unique
  ("... already exists");
- the rate limit (10 requests per second per key, see docs/crm-retailcrm.md) answered with
  HTTP 503 and a non-JSON body past it, as the official client's examples expect.

Faults for tests: `POST /_fake/faults` `{"unavailable_for": s, "fail_next": n, "delay": s,
"late": {path: s}}` (503 for s seconds / for the next n requests / every answer s seconds slow /
the request to `path` is carried out at once but answered s seconds late).
`GET /_fake/state` shows everything that arrived. Run standalone for the demo:
`python -m pbxlab.fakes.retailcrm --port 8091 --api-key KEY`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

RATE_LIMIT_PER_SECOND = 10
CALLS_PER_UPLOAD = 50  # the most calls one telephony/calls/upload accepts
CALL_EVENT_TYPES = ("in", "out", "hangup")
HANGUP_STATUSES = ("answered", "busy", "cancel", "failed", "no answered")
CALL_RESULTS = ("answered", "busy", "failed", "no answer", "not allowed", "unknown")
USER_STATUSES = ("free", "busy", "dinner", "break")
LIST_LIMITS = (20, 50, 100)
DEFAULT_STATUSES = ("new", "availability-confirmed", "complete", "cancel-other")


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


ACCOUNT_TIMEZONE = ZoneInfo("Europe/Kyiv")  # the account's zone: its dates are local, without a zone


def _now_text() -> str:
    return datetime.now(ACCOUNT_TIMEZONE).strftime("%Y-%m-%d %H:%M:%S")


def _json_field(form: Any, name: str, kind: type) -> Any:
    text = form.get(name)
    if text is None or text == "":
        raise ApiError(400, f"Parameter '{name}' is missing")
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(400, f"Parameter '{name}' must be valid JSON") from None
    if not isinstance(value, kind):
        raise ApiError(400, f"Parameter '{name}' has a wrong type")
    return value


def _check_date(value: Any, path: str, errors: dict[str, str]) -> None:
    if not isinstance(value, str):
        errors[path] = "This value should not be blank."
        return
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - a format check only
    except ValueError:
        errors[path] = "This value is not a valid datetime."


@dataclass
class Faults:
    unavailable_until: float = 0.0
    fail_next: int = 0
    delay: float = 0.0
    late: dict[str, float] = field(default_factory=dict)  # path → seconds: done at once, answered late


@dataclass
class FakeState:
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    sites: tuple[str, ...] = ("main",)
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    customers: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    customer_history: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


class FakeRetailCrm:
    """One RetailCRM account. `start()` serves it on 127.0.0.1; `url` is its base URL."""

    def __init__(
        self,
        api_key: str = "test-api-key",
        *,
        rate_limit: int = RATE_LIMIT_PER_SECOND,
        users: dict[int, dict[str, Any]] | None = None,
        sites: tuple[str, ...] = ("main",),
        statuses: tuple[str, ...] = DEFAULT_STATUSES,
    ) -> None:
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.state = FakeState(sites=sites, statuses=statuses)
        for user_id, user in (users or {}).items():
            self.add_user(user_id, **user)
        self.faults = Faults()
        self._recent: collections.deque[float] = collections.deque()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._build_app()

    # ------------------------------------------------------------------ setup

    def add_user(
        self,
        user_id: int,
        first_name: str = "",
        last_name: str = "",
        status: str = "free",
        active: bool = True,
    ) -> None:
        self.state.users[user_id] = {
            "id": user_id,
            "firstName": first_name or f"User{user_id}",
            "lastName": last_name,
            "active": active,
            "status": status,
            "online": True,
        }

    def add_customer(
        self, first_name: str, phones: list[str], *, manager_id: int | None = None, site: str | None = None
    ) -> dict[str, Any]:
        """A customer typed in by a person (no externalId), e.g. with a national-format number."""
        return self._store_customer(
            {"firstName": first_name, "phones": [{"number": p} for p in phones], "managerId": manager_id},
            site or self.state.sites[0],
        )

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
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/v5/customers", self.customers_list)
        r.add_get("/api/v5/customers/history", self.customers_history)
        r.add_post("/api/v5/customers/create", self.customers_create)
        r.add_get("/api/v5/customers/{externalId}", self.customers_get)
        r.add_post("/api/v5/customers/{externalId}/edit", self.customers_edit)
        r.add_get("/api/v5/orders", self.orders_list)
        r.add_post("/api/v5/orders/create", self.orders_create)
        r.add_get("/api/v5/tasks", self.tasks_list)
        r.add_post("/api/v5/tasks/create", self.tasks_create)
        r.add_get("/api/v5/users", self.users_list)
        r.add_get("/api/v5/users/{id}", self.users_get)
        r.add_post("/api/v5/integration-modules/{code}/edit", self.module_edit)
        r.add_get("/api/v5/integration-modules/{code}", self.module_get)
        r.add_post("/api/v5/telephony/call/event", self.call_event)
        r.add_post("/api/v5/telephony/calls/upload", self.calls_upload)
        r.add_get("/api/v5/telephony/manager", self.telephony_manager)
        r.add_get("/_fake/state", self.fake_state)
        r.add_post("/_fake/faults", self.fake_faults)
        r.add_post("/_fake/click", self.fake_click)
        return app

    def _rate_limited(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            response: web.StreamResponse = await handler(request)
            return response
        entry: dict[str, Any] = {"method": request.method, "path": request.path, "at": time.time()}
        self.state.requests.append(entry)
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        if time.monotonic() < self.faults.unavailable_until or self.faults.fail_next > 0:
            self.faults.fail_next = max(0, self.faults.fail_next - 1)
            entry["status"] = 503
            return web.Response(status=503, text="<html><body>503 Service Unavailable</body></html>")
        key = request.headers.get("X-API-KEY") or request.query.get("apiKey")
        if key != self.api_key:
            entry["status"] = 403
            return web.json_response({"success": False, "errorMsg": 'Wrong "apiKey" value.'}, status=403)
        if self._rate_limited():
            entry["status"] = 503
            return web.Response(
                status=503, text="<html><body>503 Service Temporarily Unavailable</body></html>"
            )
        try:
            response = await handler(request)
        except ApiError as exc:
            body: dict[str, Any] = {"success": False, "errorMsg": exc.message}
            if exc.errors:
                body["errors"] = exc.errors
            response = web.json_response(body, status=exc.status)
        entry["status"] = response.status
        if request.path in self.faults.late:
            await asyncio.sleep(self.faults.late[request.path])
        return response

    @staticmethod
    async def _form(request: web.Request) -> Any:
        if request.content_type != "application/x-www-form-urlencoded":
            raise ApiError(400, "Request body must be application/x-www-form-urlencoded")
        return await request.post()

    def _site(self, value: Any) -> str:
        if value in (None, ""):
            return self.state.sites[0]
        if value not in self.state.sites:
            raise ApiError(400, f'Site with code "{value}" doesn\'t exist')
        return str(value)

    @staticmethod
    def _limit(query: Any) -> int:
        limit = int(query.get("limit", 20))
        if limit not in LIST_LIMITS:
            raise ApiError(
                400, "Errors in the input parameters", {"limit": "The value you selected is not valid."}
            )
        return limit

    @staticmethod
    def _page(
        items: list[dict[str, Any]], query: Any, limit: int
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        page = max(1, int(query.get("page", 1)))
        total = len(items)
        return items[(page - 1) * limit : page * limit], {
            "limit": limit,
            "totalCount": total,
            "currentPage": page,
            "totalPageCount": max(1, -(-total // limit)),
        }

    # ------------------------------------------------------------------ customers

    def _store_customer(self, data: dict[str, Any], site: str) -> dict[str, Any]:
        customer = {
            "type": "customer",
            "id": len(self.state.customers) + 1,
            "externalId": data.get("externalId"),
            "site": site,
            "firstName": data.get("firstName", ""),
            "lastName": data.get("lastName", ""),
            "phones": [{"number": str(p.get("number", ""))} for p in data.get("phones") or []],
            "managerId": data.get("managerId"),
            "createdAt": data.get("createdAt") or _now_text(),
            "source": data.get("source"),
        }
        self.state.customers.append(customer)
        self._history(customer, created=True)
        return customer

    def _history(self, customer: dict[str, Any], *, created: bool) -> None:
        """One history record (RetailCRM keeps one per changed field; the customer's id is what
        a client needs to read the customer again)."""
        self.state.customer_history.append(
            {
                "id": len(self.state.customer_history) + 1,
                "createdAt": _now_text(),
                "created": created,
                "source": "api",
                "field": "id" if created else "manager",
                "customer": {
                    "id": customer["id"],
                    "externalId": customer["externalId"],
                    "site": customer["site"],
                },
            }
        )

    def _customers_with_phone(self, text: str) -> list[dict[str, Any]]:
        """RetailCRM searches phones by their digits as typed: 0981234567 does not find 380981234567."""
        wanted = _digits(text)
        return [c for c in self.state.customers if any(_digits(p["number"]) == wanted for p in c["phones"])]

    async def customers_list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = self._limit(q)
        found = list(self.state.customers)
        if "filter[name]" in q:
            name = q["filter[name]"]
            by_phone = self._customers_with_phone(name) if _digits(name) else []
            found = by_phone or [c for c in found if name and name.lower() in c["firstName"].lower()]
        external = q.getall("filter[externalIds][]", [])
        if external:
            found = [c for c in found if c["externalId"] in external]
        ids = q.getall("filter[ids][]", [])
        if ids:
            found = [c for c in found if str(c["id"]) in ids]
        if "filter[sites][]" in q:
            found = [c for c in found if c["site"] in q.getall("filter[sites][]")]
        items, pagination = self._page(found, q, limit)
        return web.json_response({"success": True, "pagination": pagination, "customers": items})

    async def customers_get(self, request: web.Request) -> web.Response:
        key = request.match_info["externalId"]
        by = request.query.get("by", "externalId")
        if by not in ("id", "externalId"):
            raise ApiError(
                400, "Errors in the input parameters", {"by": "The value you selected is not valid."}
            )
        for customer in self.state.customers:
            if (by == "id" and str(customer["id"]) == key) or (
                by == "externalId" and customer["externalId"] == key
            ):
                return web.json_response({"success": True, "customer": customer})
        raise ApiError(404, "Not found")

    async def customers_create(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        data = _json_field(form, "customer", dict)
        site = self._site(form.get("site"))
        errors: dict[str, str] = {}
        if not data.get("firstName") and not data.get("phones") and not data.get("email"):
            errors["firstName"] = "This value should not be blank."
        manager = data.get("managerId")
        if manager is not None and manager not in self.state.users:
            errors["managerId"] = "Manager not found."
        if errors:
            raise ApiError(400, "Customer is not loaded", errors)
        external = data.get("externalId")
        if external and any(c["externalId"] == external for c in self.state.customers):
            raise ApiError(400, "Customer already exists.")
        customer = self._store_customer(data, site)
        return web.json_response({"success": True, "id": customer["id"]}, status=201)

    async def customers_edit(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        data = _json_field(form, "customer", dict)
        by = form.get("by", "externalId")
        key = request.match_info["externalId"]
        customer = next(
            (
                c
                for c in self.state.customers
                if (by == "id" and str(c["id"]) == key) or (by == "externalId" and c["externalId"] == key)
            ),
            None,
        )
        if customer is None:
            raise ApiError(404, "Not found")
        manager = data.get("managerId")
        if manager is not None and manager not in self.state.users:
            raise ApiError(400, "Customer is not loaded", {"managerId": "Manager not found."})
        for k in ("firstName", "lastName", "managerId", "phones"):
            if k in data:
                customer[k] = data[k]
        self._history(customer, created=False)
        return web.json_response({"success": True, "id": customer["id"]})

    async def customers_history(self, request: web.Request) -> web.Response:
        q = request.query
        since = int(q.get("filter[sinceId]", 0))
        start = q.get("filter[startDate]", "")
        limit = self._limit(q)
        found = [h for h in self.state.customer_history if h["id"] > since and h["createdAt"] >= start][
            :limit
        ]
        return web.json_response(
            {"success": True, "history": found, "pagination": {"limit": limit, "currentPage": 1}}
        )

    # ------------------------------------------------------------------ orders

    async def orders_list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = self._limit(q)
        found = list(self.state.orders)
        if "filter[customerId]" in q:
            found = [o for o in found if str(o["customer"]["id"]) == q["filter[customerId]"]]
        statuses = q.getall("filter[extendedStatus][]", [])
        if statuses:
            found = [o for o in found if o["status"] in statuses]
        external = q.getall("filter[externalIds][]", [])
        if external:
            found = [o for o in found if o["externalId"] in external]
        items, pagination = self._page(found, q, limit)
        return web.json_response({"success": True, "pagination": pagination, "orders": items})

    async def orders_create(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        data = _json_field(form, "order", dict)
        site = self._site(form.get("site"))
        errors: dict[str, str] = {}
        status = data.get("status", self.state.statuses[0])
        if status not in self.state.statuses:
            errors["status"] = f'Status "{status}" does not exist.'
        ref = data.get("customer") or {}
        customer = None
        if "id" in ref:
            customer = next((c for c in self.state.customers if c["id"] == ref["id"]), None)
        elif "externalId" in ref:
            customer = next((c for c in self.state.customers if c["externalId"] == ref["externalId"]), None)
        if ref and customer is None:
            errors["customer"] = "Customer not found."
        manager = data.get("managerId")
        if manager is not None and manager not in self.state.users:
            errors["managerId"] = "Manager not found."
        if errors:
            raise ApiError(400, "Order is not loaded", errors)
        external = data.get("externalId")
        if external and any(o["externalId"] == external for o in self.state.orders):
            raise ApiError(400, "Order already exists.")
        order_id = len(self.state.orders) + 1
        order = {
            "id": order_id,
            "number": f"{order_id}A",
            "externalId": external,
            "site": site,
            "status": status,
            "orderMethod": data.get("orderMethod"),
            "managerId": manager,
            "customer": {"type": "customer", "id": customer["id"] if customer else None},
            "phone": data.get("phone"),
            "firstName": data.get("firstName", customer["firstName"] if customer else ""),
            "managerComment": data.get("managerComment"),
            "createdAt": data.get("createdAt") or _now_text(),
        }
        self.state.orders.append(order)
        return web.json_response({"success": True, "id": order_id, "order": order}, status=201)

    # ------------------------------------------------------------------ tasks

    async def tasks_list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = self._limit(q)
        found = list(self.state.tasks)
        if "filter[orderNumber]" in q:
            found = [t for t in found if (t.get("order") or {}).get("number") == q["filter[orderNumber]"]]
        if "filter[text]" in q:
            text = q["filter[text]"].lower()
            found = [
                t for t in found if text in t["text"].lower() or text in (t.get("commentary") or "").lower()
            ]
        performers = q.getall("filter[performers][]", [])
        if performers:
            found = [t for t in found if str(t["performer"]) in performers]
        items, pagination = self._page(found, q, limit)
        return web.json_response({"success": True, "pagination": pagination, "tasks": items})

    async def tasks_create(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        data = _json_field(form, "task", dict)
        errors: dict[str, str] = {}
        if not data.get("text"):
            errors["text"] = "This value should not be blank."
        performer = data.get("performerId")
        if performer is None:
            errors["performerId"] = "This value should not be blank."
        elif performer not in self.state.users:
            errors["performerId"] = "Performer not found."
        order = None
        ref = data.get("order") or {}
        if ref:
            order = next(
                (
                    o
                    for o in self.state.orders
                    if ("id" in ref and o["id"] == ref["id"])
                    or ("number" in ref and o["number"] == ref["number"])
                ),
                None,
            )
            if order is None:
                errors["order"] = "Order not found."
        if data.get("datetime") is not None:
            try:
                datetime.strptime(data["datetime"], "%Y-%m-%d %H:%M")  # noqa: DTZ007 - a format check only
            except (TypeError, ValueError):
                errors["datetime"] = "This value is not a valid datetime."
        if errors:
            raise ApiError(400, "Task is not loaded", errors)
        task_id = len(self.state.tasks) + 1
        self.state.tasks.append(
            {
                "id": task_id,
                "text": data["text"],
                "commentary": data.get("commentary"),
                "datetime": data.get("datetime"),
                "createdAt": _now_text(),
                "complete": False,
                "performer": performer,
                "performerType": "user",
                "order": None
                if order is None
                else {"id": order["id"], "number": order["number"], "externalId": order["externalId"]},
                "customer": data.get("customer"),
            }
        )
        return web.json_response({"success": True, "id": task_id}, status=201)

    # ------------------------------------------------------------------ users

    async def users_list(self, request: web.Request) -> web.Response:
        limit = self._limit(request.query)
        items, pagination = self._page(list(self.state.users.values()), request.query, limit)
        return web.json_response({"success": True, "pagination": pagination, "users": items})

    async def users_get(self, request: web.Request) -> web.Response:
        user = self.state.users.get(int(request.match_info["id"]))
        if user is None:
            raise ApiError(404, "Not found")
        return web.json_response({"success": True, "user": user})

    # ------------------------------------------------------------------ integration module

    async def module_edit(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        form = await self._form(request)
        module = _json_field(form, "integrationModule", dict)
        errors: dict[str, str] = {}
        for key in ("code", "integrationCode", "name"):
            if not module.get(key):
                errors[key] = "This value should not be blank."
        if module.get("code") not in (None, code):
            errors["code"] = "The code does not match the URL."
        telephony = (module.get("integrations") or {}).get("telephony")
        if telephony is not None:
            for i, item in enumerate(telephony.get("additionalCodes") or []):
                if item.get("userId") not in self.state.users:
                    errors[f"integrations[telephony][additionalCodes][{i}][userId]"] = "User not found."
                if not str(item.get("code", "")):
                    errors[f"integrations[telephony][additionalCodes][{i}][code]"] = (
                        "This value should not be blank."
                    )
            for i, item in enumerate(telephony.get("externalPhones") or []):
                if item.get("siteCode") not in self.state.sites:
                    errors[f"integrations[telephony][externalPhones][{i}][siteCode]"] = "Site not found."
        if errors:
            raise ApiError(400, "Errors in the entity format", errors)
        created = code not in self.state.modules
        self.state.modules[code] = module
        return web.json_response({"success": True, "info": {}}, status=201 if created else 200)

    async def module_get(self, request: web.Request) -> web.Response:
        module = self.state.modules.get(request.match_info["code"])
        if module is None:
            raise ApiError(404, "Not found")
        return web.json_response({"success": True, "integrationModule": module})

    # ------------------------------------------------------------------ telephony

    def _codes(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for module in self.state.modules.values():
            telephony = (module.get("integrations") or {}).get("telephony") or {}
            if module.get("active", True):
                codes.update(
                    {str(c["code"]): int(c["userId"]) for c in telephony.get("additionalCodes") or []}
                )
        return codes

    async def call_event(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        event = _json_field(form, "event", dict)
        errors: dict[str, str] = {}
        if not event.get("phone"):
            errors["phone"] = "This value should not be blank."
        if event.get("type") not in CALL_EVENT_TYPES:
            errors["type"] = "The value you selected is not a valid choice."
        if event.get("hangupStatus") is not None and event["hangupStatus"] not in HANGUP_STATUSES:
            errors["hangupStatus"] = "The value you selected is not a valid choice."
        if event.get("site") is not None and event["site"] not in self.state.sites:
            errors["site"] = "Site not found."
        if errors:
            raise ApiError(400, "Errors in the entity format", errors)
        known = self._codes()
        codes = [str(c) for c in event.get("codes") or []]
        user_ids = [int(u) for u in event.get("userIds") or []]
        self.state.events.append(event)
        return web.json_response(
            {
                "success": True,
                "notExistCodes": [c for c in codes if c not in known],
                "notExistUsers": [u for u in user_ids if u not in self.state.users],
            }
        )

    async def calls_upload(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        calls = _json_field(form, "calls", list)
        if len(calls) > CALLS_PER_UPLOAD:
            raise ApiError(400, f"Too many calls in one request (at most {CALLS_PER_UPLOAD})")
        errors: dict[str, str] = {}
        for i, call in enumerate(calls):
            if not isinstance(call, dict):
                errors[f"calls[{i}]"] = "This value should be an object."
                continue
            _check_date(call.get("date"), f"calls[{i}][date]", errors)
            if call.get("type") not in ("in", "out"):
                errors[f"calls[{i}][type]"] = "The value you selected is not a valid choice."
            if not call.get("phone"):
                errors[f"calls[{i}][phone]"] = "This value should not be blank."
            if call.get("result") not in CALL_RESULTS:
                errors[f"calls[{i}][result]"] = "The value you selected is not a valid choice."
            if call.get("site") is not None and call["site"] not in self.state.sites:
                errors[f"calls[{i}][site]"] = "Site not found."
        if errors:
            raise ApiError(400, "Errors in the entity format", errors)
        seen = {c.get("externalId") for c in self.state.calls if c.get("externalId")}
        duplicates: list[str] = []
        processed = 0
        for call in calls:
            external = call.get("externalId")
            if external and external in seen:
                duplicates.append(external)
                continue
            seen.add(external)
            self.state.calls.append(call)
            processed += 1
        body: dict[str, Any] = {"success": True, "processedCallsCount": processed}
        if duplicates:
            body["duplicateCalls"] = duplicates
        return web.json_response(body)

    async def telephony_manager(self, request: web.Request) -> web.Response:
        q = request.query
        phone = q.get("phone", "")
        if not phone:
            raise ApiError(400, "Parameter 'phone' is missing")
        ignore_status = q.get("ignoreStatus", "0") == "1"
        details = q.get("details", "0") == "1"
        body: dict[str, Any] = {
            "success": True,
            "links": {
                "newOrderLink": f"{self.url}/orders/add?phone={phone}",
                "newCustomerLink": f"{self.url}/customers/add?phone={phone}",
            },
        }
        found = self._customers_with_phone(phone)
        if not found:
            return web.json_response(body)
        customer = found[-1]
        manager = self.state.users.get(customer["managerId"]) if customer["managerId"] else None
        codes = {v: k for k, v in self._codes().items()}
        if manager is not None and manager["active"] and (ignore_status or manager["status"] == "free"):
            body["manager"] = {
                "id": manager["id"],
                "firstName": manager["firstName"],
                "lastName": manager["lastName"],
                "code": codes.get(manager["id"]),
            }
        if details:
            body["customer"] = {
                k: customer[k] for k in ("id", "externalId", "firstName", "lastName", "phones")
            }
            body["links"]["customerLink"] = f"{self.url}/customers/{customer['id']}"
        return web.json_response(body)

    # ------------------------------------------------------------------ test controls

    async def fake_state(self, request: web.Request) -> web.Response:
        s = self.state
        return web.json_response(
            {
                "customers": s.customers,
                "orders": s.orders,
                "tasks": s.tasks,
                "calls": s.calls,
                "events": s.events,
                "modules": s.modules,
                "requests": s.requests,
            }
        )

    async def fake_click(self, request: web.Request) -> web.Response:
        """A manager clicks a phone number: RetailCRM calls the module's makeCallUrl with the
        module's clientId, the manager's extension (code) and the number."""
        body = await request.json()
        for module in self.state.modules.values():
            telephony = (module.get("integrations") or {}).get("telephony") or {}
            url = telephony.get("makeCallUrl")
            if url:
                params = {
                    "clientId": module.get("clientId", ""),
                    "code": body["code"],
                    "phone": body["phone"],
                }
                params.update(body.get("override") or {})
                async with aiohttp.ClientSession() as session, session.get(url, params=params) as answer:
                    return web.json_response({"status": answer.status, "body": await answer.text()})
        raise ApiError(404, "No telephony module with a makeCallUrl")

    async def fake_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "unavailable_for" in body:
            self.faults.unavailable_until = time.monotonic() + float(body["unavailable_for"])
        if "fail_next" in body:
            self.faults.fail_next = int(body["fail_next"])
        if "delay" in body:
            self.faults.delay = float(body["delay"])
        if "late" in body:
            self.faults.late = {str(k): float(v) for k, v in body["late"].items()}
        return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake RetailCRM API v5 on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="test-api-key")
    parser.add_argument("--rate-limit", type=int, default=RATE_LIMIT_PER_SECOND)
    parser.add_argument("--user", action="append", default=[], help="ID:NAME[:STATUS], e.g. 27:Olena:free")
    parser.add_argument("--site", action="append", default=[])
    parser.add_argument("--status", action="append", default=[], help="order status codes")
    args = parser.parse_args()

    async def run() -> None:
        fake = FakeRetailCrm(
            args.api_key,
            rate_limit=args.rate_limit,
            sites=tuple(args.site) or ("main",),
            statuses=tuple(args.status) or DEFAULT_STATUSES,
        )
        for spec in args.user:
            parts = spec.split(":")
            fake.add_user(
                int(parts[0]),
                parts[1] if len(parts) > 1 else "",
                status=parts[2] if len(parts) > 2 else "free",
            )
        url = await fake.start(args.port)
        print(json.dumps({"url": url}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
