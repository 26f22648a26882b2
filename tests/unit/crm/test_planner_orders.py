"""A5/R4: Ringostat + RetailCRM orders into statuses by prioritized rules; internal calls."""

from __future__ import annotations

from pbxlink.adapters.config import settings_from_toml
from pbxlink.rules.actions import (
    NEW,
    CreateClient,
    CreateOrder,
    NoAction,
    Notify,
    Ref,
    actions_of,
)
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem
from pbxlink.rules.planner import plan_outcome
from pbxlink.rules.samples import EMPLOYEES, at, missed, outcome
from pbxlink.rules.settings import CrmSettings

ORDERS = """
[crm.orders]
enabled = true
default_status = "new"

[[crm.orders.rules]]
name = "reviews line"
line = "4930100300"
status = "cancelled"

[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"
"""
NO_FACTS = CrmFacts(employees=EMPLOYEES)


def crm_settings(toml: str) -> CrmSettings:
    return settings_from_toml(toml).crm


def test_call_to_the_reviews_line_creates_the_order_straight_in_cancelled() -> None:
    call = outcome(line="4930100300")
    [order] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(ORDERS)), CreateOrder)
    assert (order.status, order.matched_rule) == ("cancelled", "reviews line")


def test_higher_rule_wins_when_two_rules_match() -> None:
    call = missed(line="4930100300")  # matches both rules
    [order] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(ORDERS)), CreateOrder)
    assert order.status == "cancelled"


def test_lower_rule_applies_when_the_higher_one_does_not_match() -> None:
    [order] = actions_of(plan_outcome(missed(), NO_FACTS, crm_settings(ORDERS)), CreateOrder)
    assert (order.status, order.matched_rule) == ("callback", "missed calls")


def test_default_status_when_no_rule_matches() -> None:
    [order] = actions_of(plan_outcome(outcome(), NO_FACTS, crm_settings(ORDERS)), CreateOrder)
    assert (order.status, order.matched_rule) == ("new", None)


def test_order_for_a_new_number_creates_its_client_and_pops_up_for_the_responsible() -> None:
    actions = plan_outcome(outcome(), NO_FACTS, crm_settings(ORDERS))
    [client] = actions_of(actions, CreateClient)
    [order] = actions_of(actions, CreateOrder)
    assert order.client == NEW
    assert client.phone_e164 == "+380981234567"
    assert {(n.employee, n.about) for n in actions_of(actions, Notify)} >= {("anna", "order")}


def test_known_client_with_an_open_order_gets_no_second_order() -> None:
    client = ClientFact(
        "c1",
        "Иван",
        at("2020-01-01T00:00:00Z"),
        ("boris",),
        open_orders=(OpenItem("o1", at("2021-01-01T00:00:00Z")),),
    )
    actions = plan_outcome(outcome(), CrmFacts(clients=(client,), employees=EMPLOYEES), crm_settings(ORDERS))
    assert not actions_of(actions, CreateOrder)
    assert any("open order" in a.reason for a in actions_of(actions, NoAction))


def test_known_client_without_open_order_gets_an_order_for_its_responsible() -> None:
    client = ClientFact("c1", "Иван", at("2020-01-01T00:00:00Z"), ("boris",))
    actions = plan_outcome(outcome(), CrmFacts(clients=(client,), employees=EMPLOYEES), crm_settings(ORDERS))
    [order] = actions_of(actions, CreateOrder)
    assert (order.client, order.responsible) == (Ref("c1"), "boris")
    assert not actions_of(actions, CreateClient)


def test_internal_calls_between_employees_create_nothing() -> None:
    call = outcome(
        direction="internal",
        external=None,
        line=None,
        initiator="101",
        first_answered_by="102",
        last_handled_by="102",
        rang=["102"],
    )
    actions = plan_outcome(
        call, NO_FACTS, crm_settings(ORDERS + "\n[crm.inquiries.on_answered]\nenabled = true\n")
    )
    assert len(actions) == 1
    assert isinstance(actions[0], NoAction)
    assert "internal" in actions[0].reason


def test_orders_only_on_the_chosen_call_kinds() -> None:
    settings = crm_settings(ORDERS.replace("default_status", 'on = ["missed"]\ndefault_status'))
    assert not actions_of(plan_outcome(outcome(), NO_FACTS, settings), CreateOrder)
    assert actions_of(plan_outcome(missed(), NO_FACTS, settings), CreateOrder)
