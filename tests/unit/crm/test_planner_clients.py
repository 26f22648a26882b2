"""A4/A5: Megaplan clients and deals on calls from and to new numbers."""

from __future__ import annotations

from pbxlink.adapters.config import settings_from_toml
from pbxlink.rules.actions import (
    NEW,
    CreateClient,
    CreateDeal,
    NoAction,
    Notify,
    RecordCall,
    Ref,
    SetResponsible,
    actions_of,
)
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem, Stage
from pbxlink.rules.planner import plan_live_event, plan_outcome
from pbxlink.rules.samples import EMPLOYEES, at, event, missed, outcome
from pbxlink.rules.settings import CrmSettings

CLIENTS = """
[crm.clients]
ivr_missed_responsible = ""
[crm.clients.answered]
create = "client"
[crm.clients.missed]
create = "client"
[crm.clients.outgoing]
create = "client"
"""
NO_FACTS = CrmFacts(employees=EMPLOYEES)
# 16:30 on 05.03.2018 in Kyiv (EET, UTC+2) is 14:30Z.
ANSWERED_16_30 = event(time="2018-03-05T14:30:05Z", agent="102")


def crm_settings(toml: str) -> CrmSettings:
    return settings_from_toml(toml).crm


def test_answered_call_from_new_number_creates_client_novyi_16_30_05_03_2018_vkhodyashchii() -> None:
    actions = plan_live_event(ANSWERED_16_30, NO_FACTS, crm_settings(CLIENTS))
    [client] = actions_of(actions, CreateClient)
    assert client.name == "Новый (16:30 05.03.2018, входящий вызов)"
    assert (client.responsible, client.creator) == ("boris", "boris")
    assert (client.phone_e164, client.phone_raw) == ("+380981234567", "0981234567")
    assert client.created_at == at("2018-03-05T14:30:05Z")


def test_the_new_client_pops_up_for_its_responsible_at_answer_time() -> None:
    [note] = actions_of(plan_live_event(ANSWERED_16_30, NO_FACTS, crm_settings(CLIENTS)), Notify)
    assert (note.employee, note.about, note.subject) == ("boris", "client", NEW)


def test_called_line_is_stored_as_the_clients_source() -> None:
    [client] = actions_of(plan_live_event(ANSWERED_16_30, NO_FACTS, crm_settings(CLIENTS)), CreateClient)
    assert client.source_line == "4930100200"
    off = crm_settings(CLIENTS.replace('ivr_missed_responsible = ""', "store_source_line = false"))
    [client] = actions_of(plan_live_event(ANSWERED_16_30, NO_FACTS, off), CreateClient)
    assert client.source_line is None


def test_outgoing_call_to_new_number_is_named_iskhodyashchii_vyzov_and_owned_by_the_caller() -> None:
    call = outcome(
        direction="outbound",
        initiator="103",
        line=None,
        started_at="2018-03-05T14:30:00Z",
        answered_at="2018-03-05T14:30:20Z",
        ended_at="2018-03-05T14:31:00Z",
        first_answered_by=None,
        last_handled_by=None,
    )
    [client] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(CLIENTS)), CreateClient)
    assert client.name == "Новый (16:30 05.03.2018, исходящий вызов)"
    assert (client.responsible, client.creator) == ("vera", "vera")


def test_missed_call_client_is_created_at_the_end_for_the_employee_it_rang() -> None:
    call = missed(rang=["103"], started_at="2018-03-05T14:30:00Z", ended_at="2018-03-05T14:31:00Z")
    [client] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(CLIENTS)), CreateClient)
    assert client.responsible == "vera"
    assert client.created_at == at("2018-03-05T14:31:00Z")
    assert client.name == "Новый (16:30 05.03.2018, входящий вызов)"


def test_call_missed_in_the_ivr_creates_no_client_when_no_ivr_responsible_is_set() -> None:
    call = missed(missed_at="ivr", rang=[])
    actions = plan_outcome(call, NO_FACTS, crm_settings(CLIENTS))
    assert not actions_of(actions, CreateClient)
    assert any("IVR" in a.reason for a in actions_of(actions, NoAction))


def test_call_missed_in_the_ivr_gets_the_configured_ivr_responsible() -> None:
    settings = crm_settings(CLIENTS.replace('ivr_missed_responsible = ""', 'ivr_missed_responsible = "anna"'))
    [client] = actions_of(plan_outcome(missed(missed_at="ivr", rang=[]), NO_FACTS, settings), CreateClient)
    assert client.responsible == "anna"


def test_call_missed_in_a_group_goes_to_the_first_employee_rung_when_no_group_responsible() -> None:
    call = missed(missed_at="queue", queue="support", rang=["102", "101", "103"])
    [client] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(CLIENTS)), CreateClient)
    assert client.responsible == "boris"


def test_call_missed_in_a_group_gets_the_configured_group_responsible() -> None:
    settings = crm_settings(
        CLIENTS.replace('ivr_missed_responsible = ""', 'group_missed_responsible = "vera"')
    )
    call = missed(missed_at="queue", queue="support", rang=["102", "101"])
    [client] = actions_of(plan_outcome(call, NO_FACTS, settings), CreateClient)
    assert client.responsible == "vera"


def test_answered_client_is_created_once_at_answer_and_only_recorded_at_the_end() -> None:
    created = ClientFact(
        "c9",
        "Новый (16:30 05.03.2018, входящий вызов)",
        at("2018-03-05T14:30:05Z"),
        ("anna",),
        origin_call="pbx1:1700000000.1",
    )
    after_answer = CrmFacts(clients=(created,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    actions = plan_outcome(outcome(), after_answer, crm_settings(CLIENTS))
    assert not actions_of(actions, CreateClient)
    assert [a.client for a in actions_of(actions, RecordCall)] == [Ref("c9")]


def test_answered_call_whose_answer_event_was_lost_still_creates_the_client_at_the_end() -> None:
    actions = plan_outcome(outcome(), NO_FACTS, crm_settings(CLIENTS))
    [client] = actions_of(actions, CreateClient)
    assert client.created_at == at("2018-03-05T13:30:05Z")  # the answer time
    assert client.responsible == "anna"


def test_answer_event_arriving_after_the_outcome_does_nothing() -> None:
    done = CrmFacts(employees=EMPLOYEES, stages_applied=frozenset({Stage.OUTCOME}))
    actions = plan_live_event(ANSWERED_16_30, done, crm_settings(CLIENTS))
    assert not actions_of(actions, CreateClient)


def test_transferred_call_keeps_the_first_answerer_as_responsible_by_default() -> None:
    call = outcome(
        first_answered_by="101",
        last_handled_by="103",
        transfers=[{"kind": "blind", "from": "101", "to": "103", "at": "2018-03-05T13:31:00Z"}],
    )
    [client] = actions_of(plan_outcome(call, NO_FACTS, crm_settings(CLIENTS)), CreateClient)
    assert client.responsible == "anna"


def test_update_responsible_on_transfers_makes_the_last_handler_responsible() -> None:
    settings = crm_settings(
        CLIENTS.replace('ivr_missed_responsible = ""', "update_responsible_on_transfer = true")
    )
    call = outcome(first_answered_by="101", last_handled_by="103")
    [client] = actions_of(plan_outcome(call, NO_FACTS, settings), CreateClient)
    assert (client.responsible, client.creator) == ("vera", "anna")
    created = ClientFact(
        "c9", "Новый", at("2018-03-05T13:30:05Z"), ("anna",), origin_call="pbx1:1700000000.1"
    )
    after_answer = CrmFacts(clients=(created,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    [update] = actions_of(plan_outcome(call, after_answer, settings), SetResponsible)
    assert (update.client, update.employee) == (Ref("c9"), "vera")


def test_client_and_deal_creates_a_deal_of_the_configured_type_and_stage() -> None:
    settings = crm_settings(
        CLIENTS.replace(
            '[crm.clients.missed]\ncreate = "client"',
            '[crm.clients.missed]\ncreate = "client_and_deal"\n'
            'deal_type = "Продажа"\ndeal_stage = "Первичный контакт"',
        )
    )
    [deal] = actions_of(plan_outcome(missed(), NO_FACTS, settings), CreateDeal)
    assert (deal.client, deal.deal_type, deal.stage, deal.responsible) == (
        NEW,
        "Продажа",
        "Первичный контакт",
        "anna",
    )


def test_nothing_creates_no_client() -> None:
    settings = crm_settings('[crm.clients.missed]\ncreate = "nothing"\n')
    assert not actions_of(plan_outcome(missed(), NO_FACTS, settings), CreateClient)


def test_anonymous_caller_never_creates_a_client() -> None:
    call = missed(external={"raw": "anonymous", "e164": None})
    actions = plan_outcome(call, NO_FACTS, crm_settings(CLIENTS))
    assert not actions_of(actions, CreateClient)
    assert any("never creates or merges" in a.reason for a in actions_of(actions, NoAction))


KNOWN = ClientFact("c1", "Иван", at("2017-01-01T00:00:00Z"), ("anna",))
WITH_DEAL = ClientFact(
    "c1",
    "Иван",
    at("2017-01-01T00:00:00Z"),
    ("anna",),
    open_deals=(OpenItem("d1", at("2018-01-01T00:00:00Z")),),
)


def test_repeat_call_never_only_records_the_call_on_the_first_found_client() -> None:
    newer = ClientFact("c2", "Иван 2", at("2019-01-01T00:00:00Z"))
    actions = plan_outcome(
        missed(),
        CrmFacts(clients=(newer, KNOWN), employees=EMPLOYEES),
        crm_settings('[crm]\npick = "first"\n' + CLIENTS),
    )
    assert not actions_of(actions, CreateDeal)
    assert [a.client for a in actions_of(actions, RecordCall)] == [Ref("c1")]


def test_repeat_call_always_creates_a_deal_every_time() -> None:
    settings = crm_settings(CLIENTS.replace('ivr_missed_responsible = ""', 'repeat_calls = "always"'))
    facts = CrmFacts(clients=(WITH_DEAL,), employees=EMPLOYEES)
    [deal] = actions_of(plan_outcome(missed(), facts, settings), CreateDeal)
    assert deal.client == Ref("c1")


def test_repeat_call_if_no_open_deal_creates_a_deal_only_without_one() -> None:
    settings = crm_settings(
        CLIENTS.replace('ivr_missed_responsible = ""', 'repeat_calls = "if_no_open_deal"')
    )
    with_deal = CrmFacts(clients=(WITH_DEAL,), employees=EMPLOYEES)
    without = CrmFacts(clients=(KNOWN,), employees=EMPLOYEES)
    assert not actions_of(plan_outcome(missed(), with_deal, settings), CreateDeal)
    assert len(actions_of(plan_outcome(missed(), without, settings), CreateDeal)) == 1


def test_repeat_answered_call_decides_the_deal_at_answer_time_only_once() -> None:
    settings = crm_settings(CLIENTS.replace('ivr_missed_responsible = ""', 'repeat_calls = "always"'))
    facts = CrmFacts(clients=(KNOWN,), employees=EMPLOYEES)
    assert len(actions_of(plan_live_event(ANSWERED_16_30, facts, settings), CreateDeal)) == 1
    answered_before = CrmFacts(
        clients=(KNOWN,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER})
    )
    assert not actions_of(plan_outcome(outcome(), answered_before, settings), CreateDeal)


def test_ringing_pops_the_known_client_for_the_rung_employee() -> None:
    ringing = event(type="ringing", seq=1, agent="101")
    [pop] = actions_of(
        plan_live_event(ringing, CrmFacts(clients=(KNOWN,), employees=EMPLOYEES), crm_settings("")), Notify
    )
    assert (pop.employee, pop.subject) == ("anna", Ref("c1"))
    assert "Иван" in pop.text


def test_the_default_region_comes_from_the_line_so_8_916_on_a_moscow_line_is_russian() -> None:
    settings = crm_settings(
        CLIENTS + '[crm.phone]\ndefault_region = "UA"\n[crm.phone.line_regions]\n"74951234567" = "RU"\n'
    )
    on_moscow_line = missed(line="74951234567", external={"raw": "8 916 123-45-67", "e164": None})
    [client] = actions_of(plan_outcome(on_moscow_line, NO_FACTS, settings), CreateClient)
    assert (client.phone_e164, client.phone_raw) == ("+79161234567", "8 916 123-45-67")
    on_kyiv_line = missed(external={"raw": "0981234567", "e164": None})
    [client] = actions_of(plan_outcome(on_kyiv_line, NO_FACTS, settings), CreateClient)
    assert client.phone_e164 == "+380981234567"
