"""CRM actions: the planner's output. Each carries the rule that chose it and why.

Entities created earlier in the same plan are referenced with `id=None` (`NEW`), so a plan is
pure data that any backend can apply in one transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from pbxlink.rules.settings import TaskMode


class Rule(enum.Enum):
    CLIENTS = "clients"  # Megaplan: clients and deals on calls (A4, A5)
    INQUIRIES = "inquiries"  # RemOnline / RO App (A1, A2)
    TASKS = "tasks"  # RO App missed-call tasks (A3)
    ORDERS = "orders"  # Ringostat + RetailCRM orders into statuses (A5, R4)
    SCREEN_POP = "screen_pop"
    REQUESTS = "requests"  # 1C:CRM e-mail, messenger and web requests (A7)
    CALLS = "calls"


@dataclass(frozen=True, slots=True)
class Ref:
    """An existing entity by id, or (id None) the one created earlier in this plan."""

    id: str | None = None

    @property
    def is_new(self) -> bool:
        return self.id is None


NEW = Ref(None)


@dataclass(frozen=True, slots=True)
class CreateClient:
    rule: Rule
    reason: str
    name: str
    phone_e164: str | None
    phone_raw: str
    responsible: str | None
    creator: str | None
    source_line: str | None
    created_at: datetime
    origin_call: str | None
    email: str | None = None
    potential: bool = False  # 1C:CRM «Потенциальный клиент»


@dataclass(frozen=True, slots=True)
class CreateDeal:
    rule: Rule
    reason: str
    client: Ref
    deal_type: str
    stage: str
    responsible: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreateOrder:
    rule: Rule
    reason: str
    client: Ref
    status: str
    matched_rule: str | None
    responsible: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreateInquiry:
    rule: Rule
    reason: str
    number: str
    counter: int
    inquiry_type: str | None
    manager: str | None
    client: Ref | None
    client_name: str
    phone: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TaskLink:
    kind: str  # "order" | "inquiry"
    target: Ref


@dataclass(frozen=True, slots=True)
class CreateTask:
    rule: Rule
    reason: str
    title: str
    assignees: tuple[str, ...]
    mode: TaskMode
    author: str
    deadline: datetime
    created_at: datetime
    link: TaskLink | None
    client: Ref | None


@dataclass(frozen=True, slots=True)
class SetResponsible:
    rule: Rule
    reason: str
    client: Ref
    employee: str


@dataclass(frozen=True, slots=True)
class RecordCall:
    """Note the call in the client's card (Megaplan: a repeat call is recorded on the client)."""

    rule: Rule
    reason: str
    client: Ref
    call_id: str
    summary: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Notify:
    """A screen pop for one employee; `about` names what it shows ("client", "inquiry", …)."""

    rule: Rule
    reason: str
    employee: str
    about: str
    text: str
    subject: Ref | None


@dataclass(frozen=True, slots=True)
class CreateTicket:
    """A support ticket («Обращение в поддержку») from an A7 request."""

    rule: Rule
    reason: str
    client: Ref
    subject: str
    body: str
    assignees: tuple[str, ...]
    request_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LogRequest:
    """The request's fate: created work, attached to an interest, or rejected with a reason."""

    rule: Rule
    reason: str
    request_id: str
    source: str
    channel: str
    matched_rule: str | None
    outcome: str  # "interest" | "support" | "attached" | "rejected" | "unmatched"
    client: Ref | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AdvanceQueue:
    """Round robin: the next request of `queue_rule` goes to index `next_index`."""

    rule: Rule
    reason: str
    queue_rule: str
    next_index: int


@dataclass(frozen=True, slots=True)
class NoAction:
    """A rule that is on but decided to do nothing, and why (for explain and logs)."""

    rule: Rule
    reason: str


Action = (
    CreateClient
    | CreateDeal
    | CreateOrder
    | CreateInquiry
    | CreateTask
    | SetResponsible
    | RecordCall
    | Notify
    | CreateTicket
    | LogRequest
    | AdvanceQueue
    | NoAction
)

A = TypeVar("A")


def actions_of(plan: tuple[Action, ...], kind: type[A]) -> list[A]:
    """The actions of one kind in a plan, in order."""
    return [a for a in plan if isinstance(a, kind)]
