"""A7 (1C:CRM): e-mail, messenger and web requests handled by keyword rules."""

from __future__ import annotations

from typing import Any

import pytest

from pbxlink.adapters.config import settings_from_toml
from pbxlink.foundation.errors import ConfigError
from pbxlink.rules.actions import (
    NEW,
    Action,
    AdvanceQueue,
    CreateClient,
    CreateDeal,
    CreateTicket,
    LogRequest,
    Notify,
    Ref,
    actions_of,
)
from pbxlink.rules.calls import parse_request
from pbxlink.rules.facts import ClientFact, CrmFacts, EmployeeFact
from pbxlink.rules.request_rules import plan_request
from pbxlink.rules.samples import at, request
from pbxlink.rules.settings import CrmSettings

STAFF = (
    EmployeeFact("anna", "Анна", "101", roles=("sales",)),
    EmployeeFact("boris", "Борис", "102", roles=("sales", "service")),
    EmployeeFact("vera", "Вероника Лис", "103", roles=("service",)),
    EmployeeFact("gleb", "Глеб", "104", roles=("service",), blocked=True),
)
RULES = """
[[crm.requests.rules]]
name = "spam"
keywords = "казино;кредит онлайн"
action = "reject"
reject_reason = "Спам"

[[crm.requests.rules]]
name = "repairs"
sources = ["email:service@shop.example", "telegram:@shop"]
keywords = "ремонт; сломался ;не работает"
action = "support"
address = "role"
role = "service"

[[crm.requests.rules]]
name = "sales"
action = "interest"
address = "queue"
queue = ["anna", "boris"]
deal_type = "Интерес"
deal_stage = "Новый"
"""
IVAN = ClientFact("c1", "Иван", at("2020-01-01T00:00:00Z"), ("vera",))


def crm_settings(toml: str = RULES) -> CrmSettings:
    return settings_from_toml(toml).crm


def plan(data: dict[str, Any], facts: CrmFacts | None = None) -> tuple[Action, ...]:
    return plan_request(parse_request(data), facts or CrmFacts(employees=STAFF), crm_settings())


def test_a_keyword_in_the_subject_or_body_chooses_the_rule() -> None:
    by_body = plan(request(subject="Вопрос", body="Телефон не работает"))
    assert actions_of(by_body, LogRequest)[0].matched_rule == "repairs"
    by_subject = plan(request(subject="СЛОМАЛСЯ экран", body="..."))
    assert actions_of(by_subject, LogRequest)[0].matched_rule == "repairs"


def test_the_higher_rule_wins_when_several_match() -> None:
    actions = plan(request(subject="Ремонт и кредит онлайн"))
    [entry] = actions_of(actions, LogRequest)
    assert (entry.matched_rule, entry.outcome) == ("spam", "rejected")
    assert "Спам" in entry.reason
    assert not actions_of(actions, CreateTicket)


def test_a_rule_applies_only_to_its_sources() -> None:
    actions = plan(request(source="web:landing", subject="Нужен ремонт"))
    assert actions_of(actions, LogRequest)[0].matched_rule == "sales"


def test_role_addressing_offers_the_ticket_to_every_active_member_at_once() -> None:
    actions = plan(request())
    [ticket] = actions_of(actions, CreateTicket)
    assert ticket.assignees == ("boris", "vera")  # gleb is blocked
    assert {n.employee for n in actions_of(actions, Notify)} == {"boris", "vera"}


def test_queue_addressing_goes_round_robin() -> None:
    first = plan(request(subject="Хочу купить", body="цена?"))
    assert actions_of(first, CreateDeal)[0].responsible == "anna"
    assert actions_of(first, AdvanceQueue)[0].next_index == 1
    second = plan(
        request(subject="Хочу купить", body="цена?"),
        CrmFacts(employees=STAFF, queue_positions=(("sales", 1),)),
    )
    assert actions_of(second, CreateDeal)[0].responsible == "boris"
    third = plan(
        request(subject="Хочу купить", body="цена?"),
        CrmFacts(employees=STAFF, queue_positions=(("sales", 2),)),
    )
    assert actions_of(third, CreateDeal)[0].responsible == "anna"


def test_a_known_client_goes_to_its_responsible() -> None:
    actions = plan(request(subject="Хочу купить", body="цена?"), CrmFacts(clients=(IVAN,), employees=STAFF))
    [deal] = actions_of(actions, CreateDeal)
    assert (deal.client, deal.responsible) == (Ref("c1"), "vera")
    assert not actions_of(actions, AdvanceQueue)
    assert not actions_of(actions, CreateClient)


def test_an_unknown_sender_becomes_a_new_potential_client() -> None:
    actions = plan(request(subject="Хочу купить", body="цена?"))
    [client] = actions_of(actions, CreateClient)
    assert client.potential
    assert (client.name, client.email, client.phone_e164) == ("Ольга", "olga@example.com", None)
    assert actions_of(actions, CreateDeal)[0].client == NEW


def test_an_unknown_sender_without_a_name_is_named_by_contact() -> None:
    data = request(subject="Хочу купить", body="цена?", **{"from": {"phone": "0981234567"}})
    [client] = actions_of(plan(data), CreateClient)
    assert client.name == "Потенциальный клиент (+380981234567)"
    assert client.phone_e164 == "+380981234567"


def test_a_request_linked_to_an_active_interest_creates_no_new_one() -> None:
    facts = CrmFacts(clients=(IVAN,), employees=STAFF, linked_deal_open=True)
    actions = plan(request(subject="Хочу купить", body="цена?", deal_id="17"), facts)
    assert not actions_of(actions, CreateDeal)
    assert actions_of(actions, LogRequest)[0].outcome == "attached"


def test_a_request_no_rule_matches_is_logged_as_unmatched() -> None:
    settings = settings_from_toml(RULES.split('[[crm.requests.rules]]\nname = "sales"', maxsplit=1)[0]).crm
    actions = plan_request(
        parse_request(request(source="web:x", subject="Привет")), CrmFacts(employees=STAFF), settings
    )
    assert actions_of(actions, LogRequest)[0].outcome == "unmatched"


def test_rules_need_what_their_addressing_names() -> None:
    with pytest.raises(ConfigError, match=r"crm\.requests\.rules\[0\]\.role"):
        settings_from_toml('[[crm.requests.rules]]\nname = "x"\naction = "support"\naddress = "role"\n')
    with pytest.raises(ConfigError, match=r"reject_reason"):
        settings_from_toml('[[crm.requests.rules]]\nname = "x"\naction = "reject"\n')
