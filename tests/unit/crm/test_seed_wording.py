"""Issue 13: each place where the planner read a seed differently, tested in the seed's words.

Every test quotes the seed's phrase it checks; where pbxlink keeps its own reading as a setting,
the default is the seed's behaviour and a second test shows the setting.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxlink.adapters.config import settings_from_toml
from pbxlink.foundation.errors import ConfigError
from pbxlink.rules.actions import (
    NEW,
    CreateClient,
    CreateInquiry,
    CreateOrder,
    CreateTask,
    NoAction,
    Notify,
    RecordCall,
    Ref,
    SetResponsible,
    TaskLink,
    actions_of,
)
from pbxlink.rules.calls import parse_request
from pbxlink.rules.describe import describe
from pbxlink.rules.facts import ClientFact, CrmFacts, EmployeeFact, OpenItem, Stage
from pbxlink.rules.planner import plan_live_event, plan_outcome
from pbxlink.rules.request_rules import plan_request
from pbxlink.rules.samples import EMPLOYEES, at, event, missed, outcome
from pbxlink.rules.settings import CrmSettings

KYIV = ZoneInfo("Europe/Kyiv")
NO_FACTS = CrmFacts(employees=EMPLOYEES)
CALL_ID = "pbx1:1700000000.1"


def crm(toml: str) -> CrmSettings:
    return settings_from_toml(toml).crm


# ---------------------------------------------------------------- 1. group miss ending in voicemail

GROUP = """
[crm.clients]
group_missed_responsible = "vera"
[crm.clients.missed]
create = "client"
"""


def test_a_call_missed_in_a_group_that_ends_in_voicemail_gets_the_group_responsible() -> None:
    """Megaplan: «при каждом звонке от нового клиента, распределенном в любую группу ВАТС и
    пропущенном … для него указывается выбранный ответственный сотрудник»."""
    call = missed(missed_at="voicemail", queue="sales", rang=["101", "102"])
    [client] = actions_of(plan_outcome(call, NO_FACTS, crm(GROUP)), CreateClient)
    assert client.responsible == "vera"
    assert "group sales" in client.reason


def test_without_a_group_responsible_the_first_employee_the_group_rang_is_responsible() -> None:
    """Megaplan: «Если флаг выключен … в качестве ответственного указывается первый сотрудник,
    на которого распределялся вызов»."""
    settings = crm(GROUP.replace('group_missed_responsible = "vera"', ""))
    call = missed(missed_at="voicemail", queue="sales", rang=["102", "101"])
    [client] = actions_of(plan_outcome(call, NO_FACTS, settings), CreateClient)
    assert client.responsible == "boris"


# ---------------------------------------------------------------- 2. unknown caller → unlinked task

TASKS = """
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
[crm.inquiries.on_missed]
enabled = true
[crm.orders]
enabled = true
"""


def test_a_task_for_an_unknown_caller_is_created_without_a_link() -> None:
    """RO App: «Если не удалось найти клиента, незакрытые заказы или обращения — задача будет
    создана без связки» — even when this same call creates an order and an inquiry."""
    actions = plan_outcome(missed(), NO_FACTS, crm(TASKS))
    assert actions_of(actions, CreateOrder)
    assert actions_of(actions, CreateInquiry)
    [task] = actions_of(actions, CreateTask)
    assert task.link is None
    assert "unlinked (no client with this number)" in task.reason


def test_link_to_this_call_links_the_task_to_what_this_call_created() -> None:
    """pbxlink's reading, as a setting: link to the order created by the call itself."""
    settings = crm(TASKS.replace("deadline_hours = 2", "deadline_hours = 2\nlink_to_this_call = true"))
    [task] = actions_of(plan_outcome(missed(), NO_FACTS, settings), CreateTask)
    assert task.link == TaskLink("order", NEW)


# ---------------------------------------------------------------- 3. answer-time client is not "existing"

NEVER = """
[crm.clients.answered]
create = "client"
[crm.orders]
enabled = true
existing_clients = "never"
"""


def test_the_client_created_at_answer_time_by_this_call_still_gets_the_order_of_a_new_number() -> None:
    """Megaplan: «Клиент создается сразу после приема вызова сотрудником» — that client is this
    call's own, so the number is still new for `existing_clients = "never"`."""
    own = ClientFact("c9", "Новый", at("2018-03-05T13:30:05Z"), ("anna",), origin_call=CALL_ID)
    facts = CrmFacts(clients=(own,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    actions = plan_outcome(outcome(), facts, crm(NEVER))
    [order] = actions_of(actions, CreateOrder)
    assert (order.client, order.responsible) == (Ref("c9"), "anna")
    assert not actions_of(actions, CreateClient)


def test_a_client_known_before_the_call_gets_no_order_with_existing_clients_never() -> None:
    known = ClientFact("c1", "Иван", at("2017-01-01T00:00:00Z"), ("anna",))
    facts = CrmFacts(clients=(known,), employees=EMPLOYEES)
    actions = plan_outcome(outcome(), facts, crm(NEVER))
    assert not actions_of(actions, CreateOrder)
    assert any("existing_clients = never" in a.reason for a in actions_of(actions, NoAction))


# ---------------------------------------------------------------- 4. transfers: responsible at the end

TRANSFER = """
[crm.clients]
update_responsible_on_transfer = true
[crm.clients.answered]
create = "client"
"""


def test_a_transfer_event_does_not_change_the_responsible_before_the_target_handled_the_call() -> None:
    """Megaplan: «ответственным … будет указан сотрудник, который последним обрабатывал входящий
    звонок» — known at the end of the call, not at the transfer."""
    own = ClientFact("c9", "Новый", at("2018-03-05T13:30:05Z"), ("anna",), origin_call=CALL_ID)
    facts = CrmFacts(clients=(own,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    transfer = event(type="transferred", seq=3, agent=None, from_agent="101", to_agent="103")
    actions = plan_live_event(transfer, facts, crm(TRANSFER))
    assert not actions_of(actions, SetResponsible)
    [note] = actions_of(actions, NoAction)
    assert "at the end of the call" in note.reason


def test_the_last_handler_becomes_responsible_at_the_end_and_a_failed_transfer_changes_nothing() -> None:
    own = ClientFact("c9", "Новый", at("2018-03-05T13:30:05Z"), ("anna",), origin_call=CALL_ID)
    facts = CrmFacts(clients=(own,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    [update] = actions_of(plan_outcome(outcome(last_handled_by="103"), facts, crm(TRANSFER)), SetResponsible)
    assert (update.client, update.employee) == (Ref("c9"), "vera")
    failed = outcome(last_handled_by="101")  # the transfer to 103 was not answered
    assert not actions_of(plan_outcome(failed, facts, crm(TRANSFER)), SetResponsible)


# ---------------------------------------------------------------- 5, 6. task author and deadline


def test_the_task_author_is_the_assignee_listed_first_even_when_blocked() -> None:
    """RO App: «Автором такой задачи будет Исполнитель, которого вы указали первым в списке»."""
    employees = (EmployeeFact("anna", "Анна", "101", blocked=True), *EMPLOYEES[1:])
    [task] = actions_of(plan_outcome(missed(), CrmFacts(employees=employees), crm(TASKS)), CreateTask)
    assert task.author == "anna"
    assert task.assignees == ("boris",)


def test_the_deadline_counts_from_when_the_call_was_missed() -> None:
    """RO App: «у вас был пропущен звонок 19.06.2023 в 13:00. Крайний срок такой задачи будет
    19.06.2023 15:00» — the call came in at 13:00 and rang until 13:00:40."""
    call = missed(started_at="2023-06-19T10:00:00Z", ended_at="2023-06-19T10:00:40Z")
    [task] = actions_of(plan_outcome(call, NO_FACTS, crm(TASKS)), CreateTask)
    assert task.deadline.astimezone(KYIV) == datetime(2023, 6, 19, 15, 0, tzinfo=KYIV)


def test_deadline_from_call_end_counts_from_the_end_of_the_call() -> None:
    settings = crm(TASKS.replace("deadline_hours = 2", 'deadline_hours = 2\ndeadline_from = "call_end"'))
    call = missed(started_at="2023-06-19T10:00:00Z", ended_at="2023-06-19T10:00:40Z")
    [task] = actions_of(plan_outcome(call, NO_FACTS, settings), CreateTask)
    assert task.deadline.astimezone(KYIV) == datetime(2023, 6, 19, 15, 0, 40, tzinfo=KYIV)


# ---------------------------------------------------------------- 7. several clients on one number

OLDER = ClientFact(
    "c1",
    "Старый",
    at("2019-01-01T00:00:00Z"),
    ("anna",),
    open_orders=(OpenItem("o1", at("2023-01-01T00:00:00Z")),),
)
NEWER = ClientFact(
    "c2",
    "Новый",
    at("2022-01-01T00:00:00Z"),
    ("boris",),
    open_orders=(OpenItem("o2", at("2023-01-01T00:00:00Z")),),
)
EVERYTHING = """
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
[crm.inquiries.on_missed]
enabled = true
even_if_open_order = true
[crm.orders]
enabled = true
existing_clients = "always"
[crm.clients]
repeat_calls = "always"
"""


def _clients_used(toml: str) -> set[str | None]:
    facts = CrmFacts(clients=(OLDER, NEWER), employees=EMPLOYEES)
    actions = plan_outcome(missed(), facts, crm(toml))
    used: set[str | None] = set()
    for action in actions:
        match action:
            case RecordCall() | CreateOrder() | CreateTask():
                ref = action.client
                used.add(ref.id if ref is not None else "none")
            case CreateInquiry():
                used.add(action.client.id if action.client is not None else "none")
    for kind in (RecordCall, CreateOrder, CreateInquiry, CreateTask):
        assert actions_of(actions, kind)
    return used


def test_several_clients_on_one_number_every_action_uses_the_newest() -> None:
    """RO App: «если у вас несколько клиентов с одинаковым номером телефона — тогда берется тот,
    который был создан позже всех» — the default, for every action of the call."""
    assert _clients_used(EVERYTHING) == {"c2"}


def test_pick_first_makes_every_action_use_the_first_client_found() -> None:
    """Megaplan: «если в Мегаплане заведено несколько клиентов с одним и тем же номером телефона,
    то будет выбран первый найденный клиент» (`crm.pick = "first"`)."""
    assert _clients_used('[crm]\npick = "first"\n' + EVERYTHING) == {"c1"}


def test_the_screen_pop_names_the_same_client_as_the_rest_of_the_call() -> None:
    facts = CrmFacts(clients=(OLDER, NEWER), employees=EMPLOYEES)
    ringing = event(type="ringing", seq=1, agent="101")
    [pop] = actions_of(plan_live_event(ringing, facts, crm("")), Notify)
    assert pop.subject == Ref("c2")
    [pop] = actions_of(plan_live_event(ringing, facts, crm('[crm]\npick = "first"')), Notify)
    assert pop.subject == Ref("c1")


# ---------------------------------------------------------------- 8. every choice is checked


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        (
            '[[crm.orders.rules]]\nname = "g"\nstatus = "s"\nmissed_at = "group"',
            "crm.orders.rules[0].missed_at",
        ),
        ('[[crm.orders.rules]]\nname = "k"\nstatus = "s"\nkind = "lost"', "crm.orders.rules[0].kind"),
        ('[crm]\npick = "oldest"', "crm.pick"),
        ('[crm.tasks]\ndeadline_from = "now"', "crm.tasks.deadline_from"),
    ],
)
def test_a_choice_outside_its_values_is_refused_naming_the_key(toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_toml(toml)
    assert any(p.path == problem and "must be one of" in p.reason for p in caught.value.problems)


def test_an_order_rule_for_calls_missed_in_a_queue_matches_them() -> None:
    """RetailCRM: «Замовлення будуть створені у вибраних статусах під час виконання налаштованих
    вами правил»."""
    settings = crm(
        '[crm.orders]\nenabled = true\n[[crm.orders.rules]]\nname = "q"\nstatus = "callback"\n'
        'missed_at = "queue"'
    )
    [order] = actions_of(
        plan_outcome(missed(missed_at="queue", queue="sales"), NO_FACTS, settings), CreateOrder
    )
    assert (order.status, order.matched_rule) == ("callback", "q")


@pytest.mark.parametrize("written", ["+4930100300", "4930100300", "+49 30 100300"])
def test_an_order_rule_line_matches_the_line_however_the_number_is_written(written: str) -> None:
    """RetailCRM: «Приклад передачі замовлення до статусу Скасовано при дзвінку на певний номер»."""
    settings = crm(
        '[crm.orders]\nenabled = true\n[[crm.orders.rules]]\nname = "reviews"\n'
        f'status = "cancelled"\nline = "{written}"'
    )
    [order] = actions_of(plan_outcome(outcome(line="4930100300"), NO_FACTS, settings), CreateOrder)
    assert order.status == "cancelled"


def test_line_regions_match_a_line_written_with_a_plus() -> None:
    settings = crm('[crm.phone.line_regions]\n"+4930100300" = "DE"')
    assert settings.phone.region_for("4930100300") == "DE"


# ---------------------------------------------------------------- 9. «Пропущенный» for both kinds

INQUIRIES = """
[crm.inquiries.on_answered]
enabled = true
[crm.inquiries.on_missed]
enabled = true
"""


def test_inquiries_from_answered_and_missed_calls_both_say_propushchennyi() -> None:
    """RO App: «Обращения, созданные автоматически по входящему или пропущенному вызову, будут
    заполнены следующим образом: … В поле “Описание” будет указано “Пропущенный”»."""
    for call in (outcome(), missed()):
        [inquiry] = actions_of(plan_outcome(call, NO_FACTS, crm(INQUIRIES)), CreateInquiry)
        assert inquiry.description == "Пропущенный"


def test_answered_description_is_a_setting() -> None:
    settings = crm(INQUIRIES + '[crm.inquiries]\nanswered_description = "Принятый"')
    [answered] = actions_of(plan_outcome(outcome(), NO_FACTS, settings), CreateInquiry)
    [missed_one] = actions_of(plan_outcome(missed(), NO_FACTS, settings), CreateInquiry)
    assert (answered.description, missed_one.description) == ("Принятый", "Пропущенный")


# ---------------------------------------------------------------- 10. explain says what happened


def test_answer_event_after_the_outcome_says_nothing_when_every_client_rule_is_off() -> None:
    facts = CrmFacts(employees=EMPLOYEES, stages_applied=frozenset({Stage.OUTCOME}))
    assert plan_live_event(event(type="answered", seq=2, agent="101"), facts, crm("")) == ()


def test_answer_event_after_the_outcome_names_the_stage_already_applied() -> None:
    facts = CrmFacts(employees=EMPLOYEES, stages_applied=frozenset({Stage.OUTCOME}))
    [note] = plan_live_event(event(type="answered", seq=2, agent="101"), facts, crm(NEVER))
    assert isinstance(note, NoAction)
    assert note.reason == "this call's outcome stage was already applied"


def test_a_blocked_ivr_responsible_is_named_in_the_reason_of_a_client_without_one() -> None:
    """Megaplan: «Указать ответственного при пропущенных звонках в IVR … для него указывается
    выбранный ответственный сотрудник» — a blocked one cannot be, and the reason says so."""
    settings = crm('[crm.clients]\nivr_missed_responsible = "anna"\n[crm.clients.missed]\ncreate = "client"')
    employees = (EmployeeFact("anna", "Анна", "101", blocked=True), *EMPLOYEES[1:])
    call = missed(missed_at="ivr", rang=[])
    [client] = actions_of(plan_outcome(call, CrmFacts(employees=employees), settings), CreateClient)
    assert client.responsible is None
    assert "anna is blocked: the client gets no responsible" in client.reason


def test_a_potential_client_with_only_an_email_is_described_by_its_email() -> None:
    settings = crm(
        '[[crm.requests.rules]]\nname = "all"\naction = "interest"\naddress = "user"\nuser = "anna"\n'
        "known_client_to_owner = false"
    )
    request = parse_request(
        {
            "schema": 1,
            "id": "mail:1",
            "channel": "email",
            "source": "email:shop@example.com",
            "received_at": "2024-01-01T10:00:00Z",
            "from": {"email": "ivan@example.com"},
            "subject": "Вопрос",
            "body": "",
        }
    )
    actions = plan_request(request, NO_FACTS, settings)
    [client] = actions_of(actions, CreateClient)
    text = describe(client, KYIV)
    assert "ivan@example.com" in text
    assert "None" not in text
    assert all("a email" not in a.reason for a in actions)
    assert any("from an e-mail" in a.reason for a in actions_of(actions, Notify))


def test_check_config_refuses_an_order_rule_missed_at_group(tmp_path: Path) -> None:
    config = tmp_path / "pbxlink.toml"
    config.write_text(
        '[crm.orders]\nenabled = true\n[[crm.orders.rules]]\nname = "g"\nstatus = "s"\nmissed_at = "group"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 78
    assert "crm.orders.rules[0].missed_at: must be one of" in result.stderr
    assert "'group'" in result.stderr
