"""What the CRM knows at the moment a call is planned: the planner's second input.

Gathered by the executor from a backend (`CrmBackend.facts_for`), or written by hand in tests
and by `pbxlink explain`. Only open orders, inquiries and deals matter to the rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Stage(enum.Enum):
    """Which planning stages of one call were already applied (answer time, end of call)."""

    ANSWER = "answer"
    OUTCOME = "outcome"


@dataclass(frozen=True, slots=True)
class EmployeeFact:
    id: str
    name: str
    extension: str | None = None
    blocked: bool = False
    deleted: bool = False
    roles: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return not (self.blocked or self.deleted)


@dataclass(frozen=True, slots=True)
class OpenItem:
    """An open order, inquiry or deal of a client."""

    id: str
    created_at: datetime
    label: str = ""


@dataclass(frozen=True, slots=True)
class ClientFact:
    id: str
    name: str
    created_at: datetime
    responsibles: tuple[str, ...] = ()
    origin_call: str | None = None
    open_orders: tuple[OpenItem, ...] = ()
    open_inquiries: tuple[OpenItem, ...] = ()
    open_deals: tuple[OpenItem, ...] = ()


@dataclass(frozen=True, slots=True)
class CrmFacts:
    clients: tuple[ClientFact, ...] = ()
    employees: tuple[EmployeeFact, ...] = ()
    next_inquiry_counter: int = 1
    last_inquiry_type: str | None = None
    stages_applied: frozenset[Stage] = frozenset()
    queue_positions: tuple[tuple[str, int], ...] = ()  # A7 round-robin: rule name → next index
    linked_deal_open: bool = False  # A7: the request is linked to an interest that is still open

    def queue_position(self, rule: str) -> int:
        return next((index for name, index in self.queue_positions if name == rule), 0)

    def employee(self, key: str | None) -> EmployeeFact | None:
        """An employee by extension (agent ids are PJSIP endpoints) or else by id."""
        if key is None:
            return None
        for employee in self.employees:
            if employee.extension == key:
                return employee
        for employee in self.employees:
            if employee.id == key:
                return employee
        return None

    @property
    def newest_client(self) -> ClientFact | None:
        """RO App: several clients with one number → the one created last."""
        if not self.clients:
            return None
        return max(self.clients, key=lambda c: (c.created_at, c.id))

    @property
    def first_client(self) -> ClientFact | None:
        """Megaplan: several clients with one number → the first found (the oldest)."""
        if not self.clients:
            return None
        return min(self.clients, key=lambda c: (c.created_at, c.id))

    def pick(self, newest: bool, *, excluding: str | None = None) -> ClientFact | None:
        """The newest or the first-found client, leaving out the one `excluding` call created."""
        found = [c for c in self.clients if excluding is None or c.origin_call != excluding]
        if not found:
            return None
        key = lambda c: (c.created_at, c.id)  # noqa: E731
        return max(found, key=key) if newest else min(found, key=key)

    def client_created_by(self, call_id: str) -> ClientFact | None:
        for client in self.clients:
            if client.origin_call == call_id:
                return client
        return None
