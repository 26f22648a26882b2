"""Routing data: requests, directory entries, rules, presence states and decisions (PURE).

No I/O, no clock, no logger here (an import-linter contract keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pbxlink.wire.model import ClientOwners, DirectoryEntry, Responsible, RoutingDecision

__all__ = [
    "Availability",
    "ClientOwners",
    "DirectoryEntry",
    "DirectoryView",
    "PickPolicy",
    "PresenceView",
    "Responsible",
    "RouteReason",
    "RouteRequest",
    "RoutingDecision",
    "RoutingEntry",
    "RoutingPolicy",
    "Rule",
    "RuleAction",
    "fall_through",
]


class PickPolicy(StrEnum):
    """Which client wins when several clients share one number (R2)."""

    NEWEST = "newest"  # RO App: the most recently created client
    FIRST = "first"  # Megaplan: the first one found (payload order)


class RuleAction(StrEnum):
    """What a per-line rule does (R4)."""

    OWNER = "owner"  # responsible manager first (the default behaviour)
    OFF = "off"  # no routing on these lines: the dialplan's normal route
    TARGET = "target"  # always dial a fixed target (endpoint, group, Local channel)


class Availability(StrEnum):
    """What the presence tracker knows about an agent, worst signal first."""

    DND = "dnd"
    PAUSED = "paused"
    OFFLINE = "offline"
    BUSY = "busy"
    AVAILABLE = "available"
    UNKNOWN = "unknown"  # nothing heard yet: routed (Dial fails fast on a dead endpoint)


class RouteReason(StrEnum):
    """Why a decision came out as it did (`reason` of the routing decision contract).

    Rule-driven decisions use ``rule:<name>`` instead (see `RoutingDecision.reason`).
    """

    OWNER = "owner"
    OWNER_OFFLINE = "owner_offline"
    OWNER_BUSY = "owner_busy"
    OWNER_PAUSED = "owner_paused"
    OWNER_DND = "owner_dnd"
    OWNER_NO_EXTENSION = "owner_no_extension"
    NO_RESPONSIBLE = "no_responsible"
    UNKNOWN_CALLER = "unknown_caller"
    ANONYMOUS_CALLER = "anonymous_caller"
    INTERNAL_CALLER = "internal_caller"
    INVALID_CALLER = "invalid_caller"
    EMPLOYEE_CALLER = "employee_caller"
    ROUTING_OFF = "routing_off"
    DEADLINE = "deadline"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RoutingEntry:
    """The part of a directory entry routing needs, with both pick policies precomputed.

    Small and hashable so equal entries are shared in memory (a million numbers owned by a
    few dozen managers are a few dozen distinct entries).
    """

    employee: str | None
    first: tuple[Responsible, ...]
    newest: tuple[Responsible, ...]
    clients: int

    @classmethod
    def from_entry(cls, entry: DirectoryEntry) -> RoutingEntry:
        clients = entry.clients
        if not clients:
            return cls(employee=entry.employee, first=(), newest=(), clients=0)
        first = clients[0]
        newest = first
        for client in clients[1:]:
            if client.created_at > newest.created_at:
                newest = client
        return cls(
            employee=entry.employee,
            first=first.responsibles,
            newest=newest.responsibles,
            clients=len(clients),
        )

    def responsibles(self, pick: PickPolicy) -> tuple[Responsible, ...]:
        return self.newest if pick is PickPolicy.NEWEST else self.first


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the dialplan asks: who should ring first for this caller on this line?"""

    caller: str  # raw caller number as Asterisk has it
    line: str  # the DID called
    uniqueid: str = ""
    linkedid: str | None = None
    channel: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    """A per-line rule (R4). The first matching rule, in list order, wins.

    `lines` empty = every line. `hours` = (start, end) in minutes of the day of `now`, end
    exclusive, may wrap midnight; None = always.
    """

    name: str
    action: RuleAction
    lines: frozenset[str] = frozenset()
    target: str | None = None
    region: str | None = None
    hours: tuple[int, int] | None = None

    def matches(self, line: str, now: datetime) -> bool:
        if self.lines and line not in self.lines:
            return False
        if self.hours is None:
            return True
        start, end = self.hours
        minute = now.hour * 60 + now.minute
        if start <= end:
            return start <= minute < end
        return minute >= start or minute < end


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The routing settings decide() needs ([routing] of the config)."""

    enabled: bool = True
    default_region: str = "UA"
    pick: PickPolicy = PickPolicy.NEWEST
    dial_template: str = "PJSIP/{extension}"
    rules: tuple[Rule, ...] = field(default=())
    internal_max_digits: int = 5

    def first_rule(self, line: str, now: datetime) -> Rule | None:
        for rule in self.rules:
            if rule.matches(line, now):
                return rule
        return None


def fall_through(request: RouteRequest, reason: RouteReason) -> RoutingDecision:
    """No route: used for the deadline and for internal errors."""
    return RoutingDecision(
        target=None,
        agent=None,
        reason=reason.value,
        owner=None,
        rule=None,
        caller_e164=None,
        line=request.line,
    )


class DirectoryView(Protocol):
    """Caller number → routing entry, answered from memory."""

    def lookup(self, e164: str) -> RoutingEntry | None: ...


class PresenceView(Protocol):
    """Agent id (PJSIP endpoint name, e.g. "101") → availability."""

    def availability(self, agent: str) -> Availability: ...
