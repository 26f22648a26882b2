"""What a CRM must offer the rules: look-ups that become `CrmFacts`, and the writes of actions.

The embedded SQLite CRM (`sqlite_crm.SqliteCrm`) implements it; adapters for real CRMs
(RetailCRM, Megaplan, a webhook…) implement the same protocol. Ids are strings whatever the
CRM uses. `apply_plan` is the one generic executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pbxlink.rules.actions import (
    Action,
    AdvanceQueue,
    CreateClient,
    CreateDeal,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    CreateTicket,
    LogRequest,
    NoAction,
    Notify,
    RecordCall,
    Ref,
    SetResponsible,
)
from pbxlink.rules.facts import ClientFact, CrmFacts, EmployeeFact, Stage


class CrmBackend(Protocol):
    async def employees(self) -> tuple[EmployeeFact, ...]: ...

    async def clients_by_phone(self, e164: str) -> tuple[ClientFact, ...]:
        """Every client with this number, with their open orders, inquiries and deals."""
        ...

    async def inquiry_numbering(self) -> tuple[int, str | None]:
        """The next inquiry counter and the last inquiry type ("remember last")."""
        ...

    async def stages_applied(self, call_id: str) -> frozenset[Stage]: ...

    async def mark_stage(self, call_id: str, stage: Stage) -> None: ...

    async def create_client(self, action: CreateClient) -> str: ...

    async def create_deal(self, action: CreateDeal, client_id: str) -> str: ...

    async def create_order(self, action: CreateOrder, client_id: str, call_id: str) -> str: ...

    async def create_inquiry(self, action: CreateInquiry, client_id: str | None, call_id: str) -> str: ...

    async def create_task(
        self,
        action: CreateTask,
        *,
        client_id: str | None,
        order_id: str | None,
        inquiry_id: str | None,
        call_id: str,
    ) -> str: ...

    async def set_responsible(self, client_id: str, employee: str) -> None: ...

    async def record_call(self, action: RecordCall, client_id: str) -> None: ...

    async def notify(self, action: Notify, subject_id: str | None, call_id: str) -> str: ...

    # A7 requests
    async def clients_by_email(self, email: str) -> tuple[ClientFact, ...]: ...

    async def deal_is_open(self, deal_id: str) -> bool: ...

    async def queue_positions(self) -> tuple[tuple[str, int], ...]: ...

    async def create_ticket(self, action: CreateTicket, client_id: str) -> str: ...

    async def log_request(
        self, action: LogRequest, *, client_id: str | None, deal_id: str | None, ticket_id: str | None
    ) -> None: ...

    async def advance_queue(self, queue_rule: str, next_index: int) -> None: ...

    # A7 conversations (a reply in a thread, a chat): the earlier requests' interest and client
    async def open_deal_of_requests(self, request_ids: tuple[str, ...]) -> str | None: ...

    async def clients_of_requests(self, request_ids: tuple[str, ...]) -> tuple[ClientFact, ...]: ...

    async def link_request(self, request_id: str, deal_id: str) -> None: ...


async def gather_facts(backend: CrmBackend, e164: str | None, call_id: str) -> CrmFacts:
    """Everything the planner may ask about one call."""
    clients = await backend.clients_by_phone(e164) if e164 is not None else ()
    counter, last_type = await backend.inquiry_numbering()
    return CrmFacts(
        clients=clients,
        employees=await backend.employees(),
        next_inquiry_counter=counter,
        last_inquiry_type=last_type,
        stages_applied=await backend.stages_applied(call_id),
    )


async def gather_request_facts(
    backend: CrmBackend, e164: str | None, email: str | None, deal_id: str | None
) -> CrmFacts:
    """The facts an A7 request is planned with: its sender's clients (by phone or e-mail)."""
    found: dict[str, ClientFact] = {}
    if e164 is not None:
        found.update((c.id, c) for c in await backend.clients_by_phone(e164))
    if email is not None:
        found.update((c.id, c) for c in await backend.clients_by_email(email))
    return CrmFacts(
        clients=tuple(found.values()),
        employees=await backend.employees(),
        queue_positions=await backend.queue_positions(),
        linked_deal_open=deal_id is not None and await backend.deal_is_open(deal_id),
    )


@dataclass(slots=True)
class AppliedPlan:
    """Ids of what a plan created, by kind ("client", "deal", "order", "inquiry", "task", …)."""

    call_id: str
    actions: tuple[Action, ...]
    created: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, entity_id: str) -> None:
        self.created.setdefault(kind, []).append(entity_id)

    def newest(self, kind: str) -> str | None:
        ids = self.created.get(kind)
        return ids[-1] if ids else None


class PlanError(Exception):
    """A plan refers to an entity it did not create (a planner bug); nothing is written."""


def _resolve(ref: Ref, kind: str, applied: AppliedPlan) -> str:
    if ref.id is not None:
        return ref.id
    found = applied.newest(kind)
    if found is None:
        raise PlanError(f"plan for {applied.call_id} refers to a new {kind} it did not create")
    return found


async def apply_plan(backend: CrmBackend, call_id: str, actions: tuple[Action, ...]) -> AppliedPlan:
    """Write a plan's actions in order. The caller owns the transaction (if the CRM has one)."""
    applied = AppliedPlan(call_id, actions)
    for action in actions:
        match action:
            case CreateClient():
                applied.add("client", await backend.create_client(action))
            case CreateDeal():
                client = _resolve(action.client, "client", applied)
                applied.add("deal", await backend.create_deal(action, client))
            case CreateOrder():
                client = _resolve(action.client, "client", applied)
                applied.add("order", await backend.create_order(action, client, call_id))
            case CreateInquiry():
                client_id = None if action.client is None else _resolve(action.client, "client", applied)
                applied.add("inquiry", await backend.create_inquiry(action, client_id, call_id))
            case CreateTask():
                order_id = inquiry_id = None
                if action.link is not None:
                    target = _resolve(action.link.target, action.link.kind, applied)
                    if action.link.kind == "order":
                        order_id = target
                    else:
                        inquiry_id = target
                client_id = None if action.client is None else _resolve(action.client, "client", applied)
                task = await backend.create_task(
                    action,
                    client_id=client_id,
                    order_id=order_id,
                    inquiry_id=inquiry_id,
                    call_id=call_id,
                )
                applied.add("task", task)
            case SetResponsible():
                await backend.set_responsible(_resolve(action.client, "client", applied), action.employee)
            case RecordCall():
                await backend.record_call(action, _resolve(action.client, "client", applied))
            case Notify():
                subject = None if action.subject is None else _resolve(action.subject, action.about, applied)
                applied.add("notification", await backend.notify(action, subject, call_id))
            case CreateTicket():
                client = _resolve(action.client, "client", applied)
                applied.add("ticket", await backend.create_ticket(action, client))
            case LogRequest():
                await backend.log_request(
                    action,
                    client_id=None if action.client is None else _resolve(action.client, "client", applied),
                    deal_id=applied.newest("deal"),
                    ticket_id=applied.newest("ticket"),
                )
            case AdvanceQueue():
                await backend.advance_queue(action.queue_rule, action.next_index)
            case NoAction():
                pass
    return applied
