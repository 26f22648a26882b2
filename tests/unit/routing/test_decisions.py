"""RoutingDecisions: the decision of a call is found by its linkedid or a channel uniqueid."""

from __future__ import annotations

from pbxlink.daemon.agi.service import RoutingDecisions
from pbxlink.routing.model import RouteReason, RouteRequest, RoutingDecision, fall_through


def decision_for(request: RouteRequest) -> RoutingDecision:
    return fall_through(request, RouteReason.UNKNOWN_CALLER)


def test_found_by_linkedid_and_by_uniqueid() -> None:
    decisions = RoutingDecisions()
    request = RouteRequest("0981234567", "4930100200", uniqueid="10.5", linkedid="10.1")
    decisions.record(request, decision_for(request))
    assert decisions.get("10.5") == decisions.get("10.1") == decision_for(request)
    assert decisions.for_call(["9.9", "10.1"]) == decision_for(request)
    assert decisions.for_call(["9.9"]) is None


def test_without_a_linkedid_only_the_uniqueid_is_kept() -> None:
    decisions = RoutingDecisions()
    request = RouteRequest("0981234567", "4930100200", uniqueid="11.5")
    decisions.record(request, decision_for(request))
    assert len(decisions) == 1


def test_oldest_decisions_are_evicted_past_the_capacity() -> None:
    decisions = RoutingDecisions(capacity=10)
    for n in range(100):
        request = RouteRequest("0981234567", "4930100200", uniqueid=f"{n}.2", linkedid=f"{n}.1")
        decisions.record(request, decision_for(request))
    assert len(decisions) == 20
    assert decisions.get("0.1") is None
    assert decisions.get("99.1") is not None
