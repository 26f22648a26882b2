"""A1/A2: RemOnline and RO App inquiries on answered and missed incoming calls."""

from __future__ import annotations

from datetime import UTC, datetime

from pbxlink.adapters.config import settings_from_toml
from pbxlink.rules.actions import CreateInquiry, NoAction, Notify, Ref, actions_of
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem
from pbxlink.rules.planner import plan_outcome
from pbxlink.rules.samples import EMPLOYEES, at, missed, outcome
from pbxlink.rules.settings import CrmSettings

BOTH = """
[crm.inquiries]
number_template = "{C:3}"
[crm.inquiries.on_answered]
enabled = true
type = "Консультация"
manager = "anna"
[crm.inquiries.on_missed]
enabled = true
type = "Перезвонить"
manager = "boris"
"""

IVAN = ClientFact("c1", "Иван Петров", at("2023-01-10T10:00:00Z"), ("anna",))
OPEN_ORDER = OpenItem("o7", at("2023-05-01T10:00:00Z"), "Ремонт")
OPEN_INQUIRY = OpenItem("i3", at("2023-05-02T10:00:00Z"), "003")


def crm_settings(toml: str) -> CrmSettings:
    return settings_from_toml(toml).crm


def facts(*clients: ClientFact, counter: int = 1) -> CrmFacts:
    return CrmFacts(clients=clients, employees=EMPLOYEES, next_inquiry_counter=counter)


def test_answered_incoming_call_creates_inquiry_with_type_and_manager_from_settings() -> None:
    actions = plan_outcome(outcome(), facts(IVAN), crm_settings(BOTH))
    [inquiry] = actions_of(actions, CreateInquiry)
    assert (inquiry.inquiry_type, inquiry.manager) == ("Консультация", "anna")
    assert (inquiry.client, inquiry.client_name, inquiry.phone) == (Ref("c1"), "Иван Петров", "+380981234567")


def test_manager_is_notified_of_the_new_inquiry() -> None:
    actions = plan_outcome(missed(), facts(IVAN), crm_settings(BOTH))
    [note] = actions_of(actions, Notify)
    assert (note.employee, note.about) == ("boris", "inquiry")


def test_missed_call_inquiry_says_propushchennyi_in_the_description() -> None:
    [inquiry] = actions_of(plan_outcome(missed(), facts(IVAN), crm_settings(BOTH)), CreateInquiry)
    assert inquiry.description == "Пропущенный"
    assert inquiry.inquiry_type == "Перезвонить"


def test_unknown_caller_inquiry_is_named_neizvestnyi_klient_with_the_number() -> None:
    [inquiry] = actions_of(plan_outcome(missed(), facts(), crm_settings(BOTH)), CreateInquiry)
    assert inquiry.client is None
    assert inquiry.client_name == "Неизвестный клиент"
    assert inquiry.phone == "+380981234567"


def test_anonymous_caller_still_gets_an_inquiry_with_the_raw_number() -> None:
    call = missed(external={"raw": "anonymous", "e164": None})
    [inquiry] = actions_of(plan_outcome(call, facts(IVAN), crm_settings(BOTH)), CreateInquiry)
    assert (inquiry.client, inquiry.client_name, inquiry.phone) == (None, "Неизвестный клиент", "anonymous")


def test_open_order_blocks_the_inquiry_without_even_if_open_order() -> None:
    client = ClientFact("c1", "Иван", at("2023-01-10T10:00:00Z"), open_orders=(OPEN_ORDER,))
    actions = plan_outcome(outcome(), facts(client), crm_settings(BOTH))
    assert not actions_of(actions, CreateInquiry)
    assert any("open order" in a.reason for a in actions_of(actions, NoAction))


def test_even_if_open_order_creates_the_inquiry_anyway() -> None:
    client = ClientFact("c1", "Иван", at("2023-01-10T10:00:00Z"), open_orders=(OPEN_ORDER,))
    settings = crm_settings(BOTH.replace('manager = "anna"', 'manager = "anna"\neven_if_open_order = true'))
    assert len(actions_of(plan_outcome(outcome(), facts(client), settings), CreateInquiry)) == 1


def test_open_inquiry_blocks_the_inquiry_without_even_if_open_inquiry() -> None:
    client = ClientFact("c1", "Иван", at("2023-01-10T10:00:00Z"), open_inquiries=(OPEN_INQUIRY,))
    actions = plan_outcome(missed(), facts(client), crm_settings(BOTH))
    assert not actions_of(actions, CreateInquiry)
    settings = crm_settings(
        BOTH.replace('manager = "boris"', 'manager = "boris"\neven_if_open_inquiry = true')
    )
    assert len(actions_of(plan_outcome(missed(), facts(client), settings), CreateInquiry)) == 1


def test_open_order_and_open_inquiry_with_both_rules_on_give_exactly_one_inquiry() -> None:
    client = ClientFact(
        "c1", "Иван", at("2023-01-10T10:00:00Z"), open_orders=(OPEN_ORDER,), open_inquiries=(OPEN_INQUIRY,)
    )
    settings = crm_settings(
        BOTH.replace(
            'manager = "boris"', 'manager = "boris"\neven_if_open_order = true\neven_if_open_inquiry = true'
        )
    )
    assert len(actions_of(plan_outcome(missed(), facts(client), settings), CreateInquiry)) == 1


def test_only_open_order_rule_is_not_enough_when_an_inquiry_is_open_too() -> None:
    client = ClientFact(
        "c1", "Иван", at("2023-01-10T10:00:00Z"), open_orders=(OPEN_ORDER,), open_inquiries=(OPEN_INQUIRY,)
    )
    settings = crm_settings(BOTH.replace('manager = "boris"', 'manager = "boris"\neven_if_open_order = true'))
    assert not actions_of(plan_outcome(missed(), facts(client), settings), CreateInquiry)


def test_inquiry_number_is_rendered_from_the_template_and_next_counter_002() -> None:
    [inquiry] = actions_of(plan_outcome(outcome(), facts(IVAN, counter=2), crm_settings(BOTH)), CreateInquiry)
    assert (inquiry.number, inquiry.counter) == ("002", 2)


def test_inquiry_number_date_parts_use_the_crm_time_zone() -> None:
    # 2023-06-18 22:30Z is already the 19th in Kyiv.
    settings = crm_settings(BOTH.replace('"{C:3}"', '"{D}.{M}.{Y}/{C}"'))
    call = outcome(ended_at="2023-06-18T22:30:00Z")
    [inquiry] = actions_of(plan_outcome(call, facts(IVAN, counter=28), settings), CreateInquiry)
    assert inquiry.number == "19.06.2023/28"
    assert inquiry.created_at == datetime(2023, 6, 18, 22, 30, tzinfo=UTC)


def test_only_missed_calls_when_only_missed_is_on() -> None:
    settings = crm_settings(
        BOTH.replace(
            "[crm.inquiries.on_answered]\nenabled = true", "[crm.inquiries.on_answered]\nenabled = false"
        )
    )
    assert not actions_of(plan_outcome(outcome(), facts(IVAN), settings), CreateInquiry)
    assert actions_of(plan_outcome(missed(), facts(IVAN), settings), CreateInquiry)


def test_outgoing_and_internal_calls_create_no_inquiry() -> None:
    out = outcome(direction="outbound", initiator="101", line=None)
    internal = outcome(direction="internal", external=None, initiator="101", line=None)
    assert not actions_of(plan_outcome(out, facts(IVAN), crm_settings(BOTH)), CreateInquiry)
    assert not actions_of(plan_outcome(internal, facts(IVAN), crm_settings(BOTH)), CreateInquiry)


def test_default_type_fixed_applies_when_the_rule_has_no_type() -> None:
    settings = crm_settings("""
[crm.inquiries]
default_type_mode = "fixed"
default_type = "Ремонт"
[crm.inquiries.on_missed]
enabled = true
""")
    [inquiry] = actions_of(plan_outcome(missed(), facts(), settings), CreateInquiry)
    assert inquiry.inquiry_type == "Ремонт"


def test_default_type_remember_last_takes_the_previous_inquirys_type() -> None:
    settings = crm_settings("""
[crm.inquiries]
default_type_mode = "remember_last"
[crm.inquiries.on_missed]
enabled = true
""")
    remembered = CrmFacts(employees=EMPLOYEES, last_inquiry_type="Гарантия")
    [inquiry] = actions_of(plan_outcome(missed(), remembered, settings), CreateInquiry)
    assert inquiry.inquiry_type == "Гарантия"


def test_default_type_unset_leaves_the_type_empty() -> None:
    settings = crm_settings("[crm.inquiries.on_missed]\nenabled = true\n")
    [inquiry] = actions_of(plan_outcome(missed(), facts(), settings), CreateInquiry)
    assert inquiry.inquiry_type is None
    assert "type not set" in inquiry.reason


def test_deleted_manager_leaves_inquiry_without_manager_and_says_why() -> None:
    settings = crm_settings(BOTH.replace('manager = "boris"', 'manager = "gleb"'))
    actions = plan_outcome(missed(), facts(), settings)
    [inquiry] = actions_of(actions, CreateInquiry)
    assert inquiry.manager is None
    assert not actions_of(actions, Notify)
    assert any("gleb" in a.reason for a in actions_of(actions, NoAction))


def test_several_clients_with_one_number_use_the_newest() -> None:
    older = ClientFact("c1", "Старый", at("2020-01-01T00:00:00Z"))
    newer = ClientFact("c2", "Новый", at("2023-01-01T00:00:00Z"), open_orders=(OPEN_ORDER,))
    actions = plan_outcome(missed(), facts(older, newer), crm_settings(BOTH))
    assert not actions_of(actions, CreateInquiry)  # the newest has an open order
