"""decide(): responsible manager first, R2 lookup rules, presence skips, per-line rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.routing.decide import decide
from pbxlink.routing.directory import (
    DirectoryIndex,
    directory_topic,
    encode_directory_entry,
    parse_directory_message,
)
from pbxlink.routing.model import (
    ClientOwners,
    DirectoryEntry,
    PickPolicy,
    Responsible,
    RouteRequest,
    RoutingDecision,
    RoutingPolicy,
    Rule,
    RuleAction,
)
from pbxlink.routing.presence import DeviceState, PresenceTracker, QueueMemberUpdate
from pbxlink.wire.codec import to_builtins
from pbxlink.wire.model import DirectoryTime


def responsible(
    employee: str,
    extension: str | None,
    *,
    is_employee: bool = True,
    blocked: bool = False,
    deleted: bool = False,
) -> Responsible:
    return Responsible(employee, extension, is_employee, blocked, deleted)


def client(client_id: str, created_at: str, *responsibles: Responsible) -> ClientOwners:
    return ClientOwners(client_id, f"Client {client_id}", DirectoryTime.parse(created_at), responsibles)


def payload(number: str, *clients: ClientOwners, employee: str | None = None) -> bytes:
    """The retained message the CRM side publishes for one number."""
    return encode_directory_entry(
        DirectoryEntry(number, DirectoryTime.parse("2026-11-22T10:00:00Z"), clients, employee)
    )


def index_of(*payloads: bytes) -> DirectoryIndex:
    index = DirectoryIndex()
    for raw in payloads:
        number = json.loads(raw)["number"]
        index.apply(parse_directory_message(directory_topic(number), raw))
    return index


NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)  # the AGI service passes an aware local time
LINE = "4930100200"
POLICY = RoutingPolicy(default_region="UA")

IVAN = responsible("ivan", "101")
OLGA = responsible("olga", "102")
DIRECTORY = index_of(
    payload("+380981234567", client("c1", "2025-01-01T00:00:00Z", IVAN)),
    payload(
        "+380671112233",
        client("old", "2020-05-01T00:00:00Z", IVAN),
        client("new", "2026-02-01T00:00:00+02:00", OLGA),
    ),
    payload(
        "+380501112233",
        client(
            "c2",
            "2025-01-01T00:00:00Z",
            responsible("gone", "103", deleted=True),
            responsible("locked", "103", blocked=True),
            responsible("partner-client", "104", is_employee=False),
            OLGA,
        ),
    ),
    payload("+380631112233", client("c3", "2025-01-01T00:00:00Z", responsible("x", "105", blocked=True))),
    payload("+380661112233", client("c4", "2025-01-01T00:00:00Z", responsible("noext", None))),
    payload("+380931112233", employee="ivan"),
)


def route(
    caller: str, *, presence: PresenceTracker | None = None, policy: RoutingPolicy = POLICY, line: str = LINE
) -> RoutingDecision:
    return decide(
        RouteRequest(caller=caller, line=line, uniqueid="1.1"),
        DIRECTORY,
        presence or PresenceTracker(),
        policy,
        NOW,
    )


@pytest.mark.parametrize("caller", ["0981234567", "380981234567", "+380981234567", "+38 (098) 123-45-67"])
def test_known_caller_in_any_written_form_rings_the_responsible_manager(caller: str) -> None:
    assert route(caller) == RoutingDecision(
        target="PJSIP/101",
        agent="101",
        reason="owner",
        owner="101",
        rule=None,
        caller_e164="+380981234567",
        line=LINE,
    )


def test_decision_sets_the_three_channel_variables() -> None:
    assert route("0981234567").channel_variables() == {
        "PBXLINK_ROUTE": "PJSIP/101",
        "PBXLINK_ROUTE_REASON": "owner",
        "PBXLINK_ROUTE_OWNER": "101",
    }
    assert route("0990000000").channel_variables() == {
        "PBXLINK_ROUTE": "",
        "PBXLINK_ROUTE_REASON": "unknown_caller",
        "PBXLINK_ROUTE_OWNER": "",
    }


def test_unknown_caller_goes_to_the_normal_route() -> None:
    decision = route("0990000000")
    assert (decision.target, decision.reason, decision.caller_e164) == (
        None,
        "unknown_caller",
        "+380990000000",
    )


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        ("anonymous", "anonymous_caller"),
        ("<unknown>", "anonymous_caller"),
        ("", "anonymous_caller"),
        ("102", "internal_caller"),
        ("garbage!!", "invalid_caller"),
        ("0000000000", "invalid_caller"),
    ],
)
def test_callers_without_a_public_number_are_not_routed(caller: str, reason: str) -> None:
    decision = route(caller)
    assert (decision.target, decision.reason, decision.caller_e164) == (None, reason, None)


def test_pick_newest_client_uses_the_newest_clients_responsible() -> None:
    decision = route("0671112233", policy=RoutingPolicy(pick=PickPolicy.NEWEST))
    assert (decision.target, decision.owner) == ("PJSIP/102", "102")


def test_pick_first_client_uses_the_first_found_clients_responsible() -> None:
    decision = route("0671112233", policy=RoutingPolicy(pick=PickPolicy.FIRST))
    assert (decision.target, decision.owner) == ("PJSIP/101", "101")


def test_deleted_blocked_and_non_employee_responsibles_are_passed_over() -> None:
    assert route("0501112233").target == "PJSIP/102"


def test_client_with_only_ineligible_responsibles_is_not_routed() -> None:
    assert (route("0631112233").target, route("0631112233").reason) == (None, "no_responsible")


def test_responsible_without_an_extension_is_not_routed() -> None:
    assert route("0661112233").reason == "owner_no_extension"


def test_employees_own_number_is_never_routed() -> None:
    decision = route("0931112233")
    assert (decision.target, decision.reason) == (None, "employee_caller")


@pytest.mark.parametrize(
    ("device", "state", "reason"),
    [
        ("PJSIP/101", DeviceState.UNAVAILABLE, "owner_offline"),
        ("PJSIP/101", DeviceState.INUSE, "owner_busy"),
        ("PJSIP/101", DeviceState.RINGING, "owner_busy"),
        ("Custom:DND101", DeviceState.BUSY, "owner_dnd"),
    ],
)
def test_unavailable_owner_is_skipped_with_the_reason(device: str, state: DeviceState, reason: str) -> None:
    presence = PresenceTracker()
    presence.device_state(device, state)
    decision = route("0981234567", presence=presence)
    assert (decision.target, decision.agent, decision.reason, decision.owner) == (None, None, reason, "101")


def test_owner_paused_in_a_queue_is_skipped() -> None:
    presence = PresenceTracker()
    presence.device_state("PJSIP/101", DeviceState.NOT_INUSE)
    presence.apply(QueueMemberUpdate("support", "PJSIP/101", paused=True))
    assert route("0981234567", presence=presence).reason == "owner_paused"


def test_idle_owner_is_routed() -> None:
    presence = PresenceTracker()
    presence.device_state("PJSIP/101", DeviceState.NOT_INUSE)
    assert route("0981234567", presence=presence).reason == "owner"


def test_routing_switched_off_globally() -> None:
    decision = route("0981234567", policy=RoutingPolicy(enabled=False))
    assert (decision.target, decision.reason, decision.rule) == (None, "routing_off", None)


RULES = RoutingPolicy(
    rules=(
        Rule(name="reviews", action=RuleAction.OFF, lines=frozenset({"4930100300"})),
        Rule(
            name="vip", action=RuleAction.TARGET, lines=frozenset({"4930100400"}), target="Local/vip@queues"
        ),
        Rule(name="vip-shadow", action=RuleAction.OFF, lines=frozenset({"4930100400"})),
        Rule(name="night", action=RuleAction.TARGET, target="PJSIP/103", hours=(22 * 60, 7 * 60)),
        Rule(name="german-line", action=RuleAction.OWNER, lines=frozenset({"4930100500"}), region="DE"),
    )
)


def test_line_with_routing_off_takes_the_normal_route() -> None:
    decision = route("0981234567", policy=RULES, line="4930100300")
    assert (decision.target, decision.reason, decision.rule) == (None, "routing_off", "reviews")


def test_first_matching_rule_wins_and_dials_its_target() -> None:
    decision = route("0981234567", policy=RULES, line="4930100400")
    assert (decision.target, decision.reason, decision.rule, decision.caller_e164) == (
        "Local/vip@queues",
        "rule:vip",
        "vip",
        "+380981234567",
    )


def test_time_window_rule_matches_across_midnight_only_inside_the_window() -> None:
    at_night = decide(
        RouteRequest("0981234567", LINE),
        DIRECTORY,
        PresenceTracker(),
        RULES,
        datetime(2026, 11, 23, 23, 15, tzinfo=UTC),
    )
    by_day = decide(RouteRequest("0981234567", LINE), DIRECTORY, PresenceTracker(), RULES, NOW)
    assert (at_night.target, at_night.rule) == ("PJSIP/103", "night")
    assert (by_day.target, by_day.rule) == ("PJSIP/101", None)


def test_rule_region_reads_caller_numbers_of_that_line() -> None:
    decision = route("00380981234567", policy=RULES, line="4930100500")
    assert (decision.target, decision.rule) == ("PJSIP/101", "german-line")
    # the same digits on a German line are a German number nobody owns
    german = route("0981234567", policy=RULES, line="4930100500")
    assert (german.reason, german.caller_e164) == ("unknown_caller", "+49981234567")


def test_decision_json_matches_the_contract_keys() -> None:
    assert set(to_builtins(route("0981234567"))) == {
        "target",
        "agent",
        "reason",
        "owner",
        "rule",
        "caller_e164",
        "line",
        "decided_in_ms",
    }


@given(caller=st.text(max_size=60), line=st.text(max_size=20))
def test_any_caller_and_line_give_a_decision_never_an_exception(caller: str, line: str) -> None:
    decision = decide(RouteRequest(caller=caller, line=line), DIRECTORY, PresenceTracker(), RULES, NOW)
    assert decision.line == line
    assert decision.target is None or decision.reason in {"owner"} or decision.rule is not None
