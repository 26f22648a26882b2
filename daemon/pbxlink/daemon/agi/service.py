"""The daemon side of routing: resolve an AGI request with decide(), remember decisions.

`RoutingService.resolve` is the FastAGI server's resolver: it waits until the directory is
loaded (a daemon that just started with a big directory answers "deadline" rather than a wrong
"unknown caller"), then runs the pure `decide()` with the presence tracker and the clock.
`RoutingDecisions` keeps the latest decisions by channel uniqueid and by linkedid, so the call
tracker can put the decision on the call's outcome (`routing`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from pbxlink.routing.decide import decide
from pbxlink.routing.model import (
    DirectoryView,
    PresenceView,
    RouteRequest,
    RoutingDecision,
    RoutingPolicy,
)

__all__ = ["LoadableDirectory", "RoutingDecisions", "RoutingService"]


class LoadableDirectory(DirectoryView, Protocol):
    async def wait_loaded(self) -> None: ...


class RoutingDecisions:
    """The last `capacity` decisions, by uniqueid and by linkedid (oldest evicted first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._by_key: OrderedDict[str, RoutingDecision] = OrderedDict()

    def record(self, request: RouteRequest, decision: RoutingDecision) -> None:
        for key in (request.uniqueid, request.linkedid):
            if key:
                self._by_key[key] = decision
                self._by_key.move_to_end(key)
        while len(self._by_key) > self.capacity * 2:
            self._by_key.popitem(last=False)

    def get(self, key: str) -> RoutingDecision | None:
        """Decision for a channel uniqueid or a call linkedid."""
        return self._by_key.get(key)

    def for_call(self, keys: Iterable[str]) -> RoutingDecision | None:
        """First decision found among a call's linkedids and channel uniqueids."""
        for key in keys:
            decision = self._by_key.get(key)
            if decision is not None:
                return decision
        return None

    def __len__(self) -> int:
        return len(self._by_key)


def _local_now() -> datetime:
    return datetime.now().astimezone()


class RoutingService:
    """Resolver for `FastAgiServer`: directory + presence + policy + clock → decision."""

    def __init__(
        self,
        directory: LoadableDirectory,
        presence: PresenceView,
        policy: RoutingPolicy,
        *,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self.directory = directory
        self.presence = presence
        self.policy = policy
        self.clock = clock

    async def resolve(self, request: RouteRequest) -> RoutingDecision:
        await self.directory.wait_loaded()
        return decide(request, self.directory, self.presence, self.policy, self.clock())
