"""`CrmBackend` on RetailCRM API v5, with the remote-backend contract (remote.py, ledger.py).

- Customers are found by phone in every form a person may have typed the number in, and only
  those whose number is the same real number (E.164) are kept; the numbers pbxlink saw are
  remembered (`crm_links`), so one real number keeps one customer.
- Creates go through the ledger (`EffectLedger.once`) and carry `externalId = pbxlink-<call
  id>` (customers, orders) or a marker in the commentary (tasks, which have no externalId), so
  a redelivered or interrupted message never makes a second customer, order or task.
- Live events become `telephony/call/event` at once (popups while the phone rings; an event
  older than `stale_event_seconds` is not sent); outcomes become one `telephony/calls/upload`
  item each, uploaded per batch before the batch commits (`externalId` = outcome id).
- Rules RetailCRM has no entity for (inquiries, deals, tickets) are refused with a reason: the
  message is dead-lettered naming the rule to switch off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from pbxlink.adapters.backends.ledger import EffectLedger
from pbxlink.adapters.backends.remote import RemoteClient, RemoteRejected
from pbxlink.adapters.backends.retailcrm import payloads
from pbxlink.adapters.backends.retailcrm.payloads import Request
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.adapters.store import Store
from pbxlink.rules.actions import (
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    LogRequest,
    Notify,
    RecordCall,
)
from pbxlink.rules.calls import CallOutcome, Envelope, LiveEvent
from pbxlink.rules.facts import ClientFact, EmployeeFact, OpenItem, Stage
from pbxlink.rules.identity import identify
from pbxlink.rules.settings import ClientCreation, CrmSettings

log = structlog.get_logger()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Unsupported(RemoteRejected):
    """An action RetailCRM has no entity for."""

    def __init__(self, what: str, rule: str) -> None:
        super().__init__(0, f'RetailCRM has no {what}: with backend = "retailcrm" switch off {rule}')


def describe_error(status: int, body: Any) -> str:
    """RetailCRM's `{success: false, errorMsg, errors}` as one line for the dead letter."""
    if isinstance(body, dict):
        text = f"RetailCRM {status}: {body.get('errorMsg') or 'error'}"
        errors = body.get("errors")
        if isinstance(errors, dict) and errors:
            text += " (" + "; ".join(f"{k}: {v}" for k, v in errors.items()) + ")"
        elif isinstance(errors, list) and errors:
            text += " (" + "; ".join(map(str, errors)) + ")"
        return text[:1000]
    return f"RetailCRM {status}: {str(body)[:200]}"


class RetailCrm:
    """The RetailCRM backend (see module doc). One per adapter; `client` is owned by the caller."""

    def __init__(
        self,
        store: Store,
        crm: CrmSettings,
        settings: RetailCrmSettings,
        client: RemoteClient,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.db = store.db
        self.crm = crm
        self.s = settings
        self.client = client
        self.clock = clock
        self.zone = crm.zone
        self.ledger = EffectLedger(store)
        self.module_registered = False
        self._message_id = ""
        self._envelope: Envelope | None = None
        self._uploads: list[dict[str, Any]] = []
        self._order_numbers: dict[str, str] = {}
        self.uploaded = 0
        self.duplicates = 0

    def forget_cached(self) -> None:
        """Nothing is cached across transactions."""

    def use_rules(self, crm: CrmSettings) -> None:
        """New rules after a reload (`[crm.retailcrm]` itself needs a restart)."""
        self.crm = crm
        self.zone = crm.zone

    async def _send(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return await self.client.get(request.path, request.fields)
        return await self.client.post_form(request.path, request.fields)

    # ---------------------------------------------------------------- start-up

    async def register_module(self) -> None:
        """Register/update the telephony integration module (extensions, DIDs, click-to-call)."""
        await self._send(payloads.module_request(self.s))
        self.module_registered = True
        log.info("retailcrm_module_registered", code=self.s.module_code, users=len(self.s.users))

    # ---------------------------------------------------------------- batch hooks

    async def begin_batch(self, message_ids: Sequence[str]) -> None:
        self._uploads.clear()
        await self.ledger.begin(message_ids)

    async def prepare_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Customers are looked up per message (RetailCRM has no batch of reads)."""

    def begin_message(self, message_id: str, envelope: Envelope) -> None:
        self._message_id = message_id
        self._envelope = envelope

    async def message_applied(self, message_id: str, envelope: Envelope) -> None:
        body = envelope.body
        now = self.clock()
        if isinstance(body, LiveEvent):
            event = payloads.live_event(body, self.s)
            if event is not None and self.s.call_events:
                await self._live(message_id, event, (now - body.time).total_seconds())
        elif isinstance(body, CallOutcome):
            record = payloads.call_record(body, self.s, self.zone)
            if record is not None:
                self._uploads.append(record)
            hangup = payloads.hangup_event(body, self.s)
            if hangup is not None and self.s.call_events:
                await self._live(message_id, hangup, (now - body.ended_at).total_seconds())
        await self.ledger.finish(message_id)

    async def _live(self, message_id: str, event: dict[str, Any], age: float) -> None:
        if age > self.s.stale_event_seconds:
            log.info("retailcrm_event_stale", id=message_id, type=event["type"], age=round(age))
            return

        async def send() -> str:
            answer = await self._send(payloads.event_request(event))
            if answer.get("notExistCodes"):
                log.warning("retailcrm_unknown_codes", codes=answer["notExistCodes"])
            return "sent"

        await self.ledger.once(message_id, f"event:{event['type']}", send)

    async def end_batch(self) -> None:
        batch = self.s.upload_batch
        while self._uploads:
            chunk = self._uploads[:batch]
            answer = await self._send(payloads.upload_request(chunk))
            self.uploaded += int(answer.get("processedCallsCount", 0))
            self.duplicates += len(answer.get("duplicateCalls") or [])
            del self._uploads[:batch]

    def forget_batch(self) -> None:
        self._uploads.clear()

    # ---------------------------------------------------------------- look-ups

    async def employees(self) -> tuple[EmployeeFact, ...]:
        return tuple(EmployeeFact(ext, f"RetailCRM user {user}", ext) for ext, user in self.s.users.items())

    def _same_number(self, customer: dict[str, Any], e164: str) -> bool:
        region = self.crm.phone.default_region
        return any(
            identify(str(p.get("number", "")), region).e164 == e164 for p in customer.get("phones") or []
        )

    async def _customers(self, e164: str) -> list[dict[str, Any]]:
        known = await self.ledger.links("phone", e164)
        if known:
            params = [("limit", 100), *(("filter[ids][]", i) for i in known)]
            answer = await self.client.get("/api/v5/customers", params)
            found = [c for c in answer.get("customers") or [] if self._same_number(c, e164)]
            if found:
                return found
        found_by_id: dict[int, dict[str, Any]] = {}
        for form in payloads.written_forms(e164):
            answer = await self.client.get("/api/v5/customers", {"filter[name]": form, "limit": 100})
            for customer in answer.get("customers") or []:
                if self._same_number(customer, e164):
                    found_by_id[int(customer["id"])] = customer
        for customer_id in found_by_id:
            await self.ledger.link("phone", e164, str(customer_id))
        return list(found_by_id.values())

    async def _open_orders(self, customer_id: int) -> tuple[OpenItem, ...]:
        if not (self.crm.orders.enabled or self.crm.tasks.enabled):
            return ()
        answer = await self.client.get("/api/v5/orders", {"filter[customerId]": customer_id, "limit": 100})
        items = []
        for order in answer.get("orders") or []:
            if order.get("status") in self.s.closed_statuses:
                continue
            self._order_numbers[str(order["id"])] = str(order.get("number") or "")
            items.append(
                OpenItem(
                    str(order["id"]),
                    payloads.from_local(order.get("createdAt") or "1970-01-01 00:00:00", self.zone),
                    str(order.get("number") or ""),
                )
            )
        return tuple(sorted(items, key=lambda i: (i.created_at, int(i.id))))

    def _rules_need_clients(self) -> bool:
        """Only rules that create or link CRM records look customers up (screen pops are
        RetailCRM's own, from call events): with none on, an outcome costs no look-up."""
        c = self.crm
        creates = any(
            t.create is not ClientCreation.NOTHING
            for t in (c.clients.answered, c.clients.missed, c.clients.outgoing)
        )
        inquiries = c.inquiries.on_answered.enabled or c.inquiries.on_missed.enabled
        return c.orders.enabled or c.tasks.enabled or creates or inquiries

    async def clients_by_phone(self, e164: str) -> tuple[ClientFact, ...]:
        if not self._rules_need_clients():
            return ()
        clients = []
        for c in await self._customers(e164):
            extension = self.s.extension_of(c.get("managerId"))
            clients.append(
                ClientFact(
                    id=str(c["id"]),
                    name=" ".join(filter(None, (c.get("firstName"), c.get("lastName")))) or f"#{c['id']}",
                    created_at=payloads.from_local(c.get("createdAt") or "1970-01-01 00:00:00", self.zone),
                    responsibles=(extension,) if extension else (),
                    origin_call=payloads.call_of_external_id(c.get("externalId")),
                    open_orders=await self._open_orders(int(c["id"])),
                )
            )
        return tuple(sorted(clients, key=lambda c: (c.created_at, int(c.id))))

    async def inquiry_numbering(self) -> tuple[int, str | None]:
        return 1, None

    async def stages_applied(self, call_id: str) -> frozenset[Stage]:
        rows = await self.db.execute_fetchall("SELECT stage FROM call_stages WHERE call_id = ?", (call_id,))
        return frozenset(Stage(r[0]) for r in rows)

    async def mark_stage(self, call_id: str, stage: Stage) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO call_stages (call_id, stage) VALUES (?, ?)", (call_id, stage.value)
        )

    # ---------------------------------------------------------------- writes

    def _line(self) -> str | None:
        body = self._envelope.body if self._envelope is not None else None
        return body.line if isinstance(body, CallOutcome | LiveEvent) else None

    async def _by_external_id(self, kind: str, value: str) -> str | None:
        answer = await self.client.get(f"/api/v5/{kind}", [("filter[externalIds][]", value), ("limit", 20)])
        found = answer.get(kind) or []
        return str(found[0]["id"]) if found else None

    async def _create_unique(self, request: Request, kind: str, external: str) -> str:
        """Create; if RetailCRM already has this externalId (an unrecorded earlier try), use that."""
        try:
            answer = await self._send(request)
        except RemoteRejected as exc:
            if "already exists" not in exc.reason:
                raise
            existing = await self._by_external_id(kind, external)
            if existing is None:
                raise
            return existing
        if kind == "orders" and isinstance(answer.get("order"), dict):
            self._order_numbers[str(answer["id"])] = str(answer["order"].get("number") or "")
        return str(answer["id"])

    async def create_client(self, action: CreateClient) -> str:
        request = payloads.customer_request(action, self.s, self.zone, self._message_id)
        external = request.fields["customer"]["externalId"]
        customer_id = await self.ledger.once(
            self._message_id,
            "client",
            lambda: self._create_unique(request, "customers", external),
            lambda: self._by_external_id("customers", external),
        )
        if action.phone_e164 is not None:
            await self.ledger.link("phone", action.phone_e164, customer_id)
        return customer_id

    async def create_order(self, action: CreateOrder, client_id: str, call_id: str) -> str:
        body = self._envelope.body if self._envelope is not None else None
        phone = payloads.crm_phone(body.external) if isinstance(body, CallOutcome | LiveEvent) else ""
        request = payloads.order_request(
            action, self.s, self.zone, customer_id=client_id, call_id=call_id, phone=phone, line=self._line()
        )
        external = request.fields["order"]["externalId"]
        return await self.ledger.once(
            self._message_id,
            "order",
            lambda: self._create_unique(request, "orders", external),
            lambda: self._by_external_id("orders", external),
        )

    async def create_task(
        self,
        action: CreateTask,
        *,
        client_id: str | None,
        order_id: str | None,
        inquiry_id: str | None,
        call_id: str,
    ) -> str:
        if inquiry_id is not None:
            raise Unsupported("inquiries to link a task to", "crm.tasks.link_to_open_inquiry")
        performer = self.s.user_id(action.assignees[0])
        if performer is None:
            raise RemoteRejected(
                0, f"task assignee {action.assignees[0]!r} has no RetailCRM user in [crm.retailcrm.users]"
            )
        request = payloads.task_request(
            action,
            self.s,
            self.zone,
            performer=performer,
            call_id=call_id,
            order_id=order_id,
            customer_id=client_id,
            line=self._line(),
        )

        async def create() -> str:  # tasks have no externalId: never re-sent blindly
            answer = await self.client.post_form(request.path, request.fields, idempotent=False)
            return str(answer["id"])

        async def find() -> str | None:
            params: list[tuple[str, Any]] = [
                ("filter[performers][]", performer),
                ("filter[text]", action.title),
                ("limit", 100),
            ]
            number = self._order_numbers.get(order_id or "")
            if number:
                params.append(("filter[orderNumber]", number))
            answer = await self.client.get("/api/v5/tasks", params)
            marker = payloads.task_marker(call_id)
            return next(
                (str(t["id"]) for t in answer.get("tasks") or [] if marker in (t.get("commentary") or "")),
                None,
            )

        return await self.ledger.once(self._message_id, f"task:{','.join(action.assignees)}", create, find)

    async def set_responsible(self, client_id: str, employee: str) -> None:
        manager = self.s.user_id(employee)
        if manager is None:
            return
        await self.client.post_form(
            f"/api/v5/customers/{client_id}/edit",
            {"by": "id", "customer": {"managerId": manager}, "site": self.s.site_for(self._line())},
        )

    async def record_call(self, action: RecordCall, client_id: str) -> None:
        """The call itself reaches RetailCRM through telephony/calls/upload."""

    async def notify(self, action: Notify, subject_id: str | None, call_id: str) -> str:  # noqa: ARG002 - the protocol's signature
        """RetailCRM opens its own popups from telephony/call/event; nothing to send here."""
        return "retailcrm-popup"

    async def create_deal(self, action: CreateDeal, client_id: str) -> str:  # noqa: ARG002 - the protocol's signature
        raise Unsupported("deals", "deals in [crm.clients]")

    async def create_inquiry(self, action: CreateInquiry, client_id: str | None, call_id: str) -> str:  # noqa: ARG002 - the protocol's signature
        raise Unsupported("inquiries", "[crm.inquiries]")

    async def clients_by_email(self, email: str) -> tuple[ClientFact, ...]:  # noqa: ARG002 - the protocol's signature
        return ()

    async def deal_is_open(self, deal_id: str) -> bool:  # noqa: ARG002 - the protocol's signature
        return False

    async def queue_positions(self) -> tuple[tuple[str, int], ...]:
        return ()

    async def create_ticket(self, action: CreateTicket, client_id: str) -> str:  # noqa: ARG002 - the protocol's signature
        raise Unsupported("support tickets", "[crm.requests]")

    async def log_request(
        self,
        action: LogRequest,  # noqa: ARG002 - the protocol's signature
        *,
        client_id: str | None,  # noqa: ARG002
        deal_id: str | None,  # noqa: ARG002
        ticket_id: str | None,  # noqa: ARG002
    ) -> None:
        raise Unsupported("request log", "[crm.requests]")

    async def open_deal_of_requests(self, request_ids: tuple[str, ...]) -> str | None:  # noqa: ARG002
        return None

    async def clients_of_requests(self, request_ids: tuple[str, ...]) -> tuple[ClientFact, ...]:  # noqa: ARG002
        return ()

    async def link_request(self, request_id: str, deal_id: str) -> None:  # noqa: ARG002
        raise Unsupported("request log", "[crm.requests]")

    async def advance_queue(self, queue_rule: str, next_index: int) -> None:  # noqa: ARG002 - the protocol's signature
        raise Unsupported("request queues", "[crm.requests]")
