"""A3: RO App tasks for missed incoming calls."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pbxlink.adapters.config import settings_from_toml
from pbxlink.rules.actions import NEW, CreateTask, NoAction, Ref, TaskLink, actions_of
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem
from pbxlink.rules.planner import plan_outcome
from pbxlink.rules.samples import EMPLOYEES, at, missed, outcome
from pbxlink.rules.settings import CrmSettings, TaskMode

KYIV = ZoneInfo("Europe/Kyiv")
TWO_HOURS = """
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
"""
# Missed at 19.06.2023 13:00 Kyiv time (EEST, UTC+3): it came in at 13:00 and rang for 40 s.
MISSED_AT_13_00 = missed(started_at="2023-06-19T10:00:00Z", ended_at="2023-06-19T10:00:40Z")


def crm_settings(toml: str) -> CrmSettings:
    return settings_from_toml(toml).crm


def facts(*clients: ClientFact) -> CrmFacts:
    return CrmFacts(clients=clients, employees=EMPLOYEES)


def test_missed_at_19_06_2023_13_00_with_2_hours_is_due_19_06_2023_15_00() -> None:
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), crm_settings(TWO_HOURS)), CreateTask)
    assert task.deadline.astimezone(KYIV) == datetime(2023, 6, 19, 15, 0, tzinfo=KYIV)
    assert task.title == "Пропущенный звонок"


def test_deadline_adds_days_hours_and_minutes() -> None:
    settings = crm_settings(
        TWO_HOURS.replace(
            "deadline_hours = 2", "deadline_days = 1\ndeadline_hours = 2\ndeadline_minutes = 30"
        )
    )
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), settings), CreateTask)
    assert task.deadline.astimezone(KYIV) == datetime(2023, 6, 20, 15, 30, tzinfo=KYIV)


def test_one_task_for_all_has_every_assignee_and_the_first_as_author() -> None:
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), crm_settings(TWO_HOURS)), CreateTask)
    assert task.assignees == ("anna", "boris")
    assert task.mode is TaskMode.ONE_FOR_ALL
    assert task.author == "anna"


def test_one_task_each_gives_every_assignee_a_task_authored_by_the_first() -> None:
    settings = crm_settings(TWO_HOURS + 'mode = "one_each"\n')
    tasks = actions_of(plan_outcome(MISSED_AT_13_00, facts(), settings), CreateTask)
    assert [t.assignees for t in tasks] == [("anna",), ("boris",)]
    assert {t.author for t in tasks} == {"anna"}
    assert {t.mode for t in tasks} == {TaskMode.ONE_EACH}


def test_deleted_assignee_is_left_out_but_the_first_listed_stays_author() -> None:
    """«Автором такой задачи будет Исполнитель, которого вы указали первым в списке»."""
    settings = crm_settings(TWO_HOURS.replace('["anna", "boris"]', '["gleb", "boris"]'))
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), settings), CreateTask)
    assert (task.assignees, task.author) == (("boris",), "gleb")
    assert "first listed gleb (gleb is deleted)" in task.reason


def test_task_is_linked_to_the_newest_open_order_of_the_newest_client() -> None:
    older = ClientFact(
        "c1", "Старый", at("2020-01-01T00:00:00Z"), open_orders=(OpenItem("o1", at("2023-01-01T00:00:00Z")),)
    )
    newest = ClientFact(
        "c2",
        "Новый",
        at("2022-01-01T00:00:00Z"),
        open_orders=(OpenItem("o2", at("2023-01-01T00:00:00Z")), OpenItem("o3", at("2023-02-01T00:00:00Z"))),
        open_inquiries=(OpenItem("i9", at("2023-03-01T00:00:00Z")),),
    )
    [task] = actions_of(
        plan_outcome(MISSED_AT_13_00, facts(older, newest), crm_settings(TWO_HOURS)), CreateTask
    )
    assert task.link == TaskLink("order", Ref("o3"))
    assert task.client == Ref("c2")


def test_task_is_linked_to_the_newest_open_inquiry_when_no_order_is_open() -> None:
    client = ClientFact(
        "c1",
        "Иван",
        at("2020-01-01T00:00:00Z"),
        open_inquiries=(
            OpenItem("i1", at("2023-01-01T00:00:00Z")),
            OpenItem("i2", at("2023-04-01T00:00:00Z")),
        ),
    )
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(client), crm_settings(TWO_HOURS)), CreateTask)
    assert task.link == TaskLink("inquiry", Ref("i2"))


def test_order_link_switched_off_falls_back_to_the_inquiry() -> None:
    client = ClientFact(
        "c1",
        "Иван",
        at("2020-01-01T00:00:00Z"),
        open_orders=(OpenItem("o1", at("2023-01-01T00:00:00Z")),),
        open_inquiries=(OpenItem("i1", at("2023-01-01T00:00:00Z")),),
    )
    settings = crm_settings(TWO_HOURS + "link_to_open_order = false\n")
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(client), settings), CreateTask)
    assert task.link == TaskLink("inquiry", Ref("i1"))


def test_task_without_client_or_open_work_is_created_unlinked() -> None:
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), crm_settings(TWO_HOURS)), CreateTask)
    assert task.link is None
    assert task.client is None
    assert "unlinked" in task.reason


def test_retailcrm_style_creates_no_task_without_an_order() -> None:
    settings = crm_settings(TWO_HOURS + 'unlinked = "skip"\n')
    actions = plan_outcome(MISSED_AT_13_00, facts(), settings)
    assert not actions_of(actions, CreateTask)
    assert any("unlinked = skip" in a.reason for a in actions_of(actions, NoAction))


def test_retailcrm_style_task_links_the_order_created_for_this_call() -> None:
    """«Якщо не створюється замовлення і немає раніше створеного - задача також не буде створена»:
    RetailCRM counts the order this call creates (`link_to_this_call = true`)."""
    settings = crm_settings(
        TWO_HOURS + 'unlinked = "skip"\nlink_to_this_call = true\n[crm.orders]\nenabled = true\n'
    )
    [task] = actions_of(plan_outcome(MISSED_AT_13_00, facts(), settings), CreateTask)
    assert task.link == TaskLink("order", NEW)


def test_answered_and_outgoing_calls_create_no_task() -> None:
    assert not actions_of(plan_outcome(outcome(), facts(), crm_settings(TWO_HOURS)), CreateTask)
    out = outcome(direction="outbound", answered=False, initiator="101", line=None)
    assert not actions_of(plan_outcome(out, facts(), crm_settings(TWO_HOURS)), CreateTask)
