"""`pbxlink explain --json`: every action as structured fields, valid against the documented
schema (docs/explain.schema.json); the text view is rendered from the same data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema  # type: ignore[import-untyped]  # no stubs published
import pytest

from pbxlink.adapters.config import settings_from_toml
from pbxlink.cli import main
from pbxlink.rules.actions import Action
from pbxlink.rules.calls import parse_request
from pbxlink.rules.describe import KINDS, action_record, describe, render
from pbxlink.rules.facts import ClientFact, CrmFacts, OpenItem, Stage
from pbxlink.rules.planner import plan_live_event, plan_outcome
from pbxlink.rules.request_rules import plan_request
from pbxlink.rules.samples import EMPLOYEES, at, event, missed, outcome, request

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "docs" / "explain.schema.json").read_text())
ACTION_SCHEMA = {**SCHEMA["$defs"]["action"], "$defs": SCHEMA["$defs"]}
TRANSCRIPT = ROOT / "tests" / "unit" / "ami" / "data" / "inbound_answered_cyrillic.ami"
KYIV = ZoneInfo("Europe/Kyiv")
CALL_RULES = """
[crm.inquiries.on_missed]
enabled = true
manager = "anna"
[crm.tasks]
enabled = true
assignees = ["anna", "boris"]
deadline_hours = 2
[crm.clients]
repeat_calls = "always"
[crm.clients.missed]
create = "client_and_deal"
[crm.orders]
enabled = true
existing_clients = "always"
"""
REQUEST_RULES = """
[[crm.requests.rules]]
name = "repairs"
keywords = "ремонт"
action = "support"
address = "queue"
queue = ["anna", "boris"]
known_client_to_owner = false
"""


def _every_kind_of_action() -> list[Action]:
    settings = settings_from_toml(CALL_RULES).crm
    known = ClientFact(
        "c1",
        "Иван",
        at("2020-01-01T00:00:00Z"),
        ("anna",),
        open_orders=(OpenItem("o1", at("2021-01-01T00:00:00Z")),),
    )
    actions: list[Action] = []
    actions += plan_outcome(missed(), CrmFacts(employees=EMPLOYEES), settings)
    actions += plan_outcome(missed(), CrmFacts(clients=(known,), employees=EMPLOYEES), settings)
    own = ClientFact("c9", "Новый", at("2018-03-05T13:30:05Z"), ("anna",), origin_call="pbx1:1700000000.1")
    transfer = settings_from_toml("[crm.clients]\nupdate_responsible_on_transfer = true").crm
    facts = CrmFacts(clients=(own,), employees=EMPLOYEES, stages_applied=frozenset({Stage.ANSWER}))
    actions += plan_outcome(outcome(last_handled_by="103"), facts, transfer)
    actions += plan_live_event(event(type="ringing", seq=1, agent="101"), facts, settings)
    requests = settings_from_toml(REQUEST_RULES).crm
    actions += plan_request(parse_request(request()), CrmFacts(employees=EMPLOYEES), requests)
    return actions


def test_every_kind_of_action_becomes_a_record_valid_against_the_documented_schema() -> None:
    actions = _every_kind_of_action()
    assert {type(a) for a in actions} == set(KINDS)  # the sample covers every kind
    for action in actions:
        record = action_record(action, KYIV)
        jsonschema.validate(record, ACTION_SCHEMA)
        assert record["rule"] == action.rule.value
        assert record["reason"] == action.reason
        assert describe(action, KYIV) == render(json.loads(json.dumps(record)))


def test_a_task_record_carries_deadline_assignees_author_and_its_links() -> None:
    settings = settings_from_toml(CALL_RULES).crm
    known = ClientFact(
        "c1",
        "Иван",
        at("2020-01-01T00:00:00Z"),
        ("anna",),
        open_orders=(OpenItem("o1", at("2021-01-01T00:00:00Z")),),
    )
    call = missed(started_at="2023-06-19T10:00:00Z", ended_at="2023-06-19T10:00:40Z")
    records = [
        action_record(a, KYIV)
        for a in plan_outcome(call, CrmFacts(clients=(known,), employees=EMPLOYEES), settings)
    ]
    [task] = [r for r in records if r["kind"] == "create_task"]
    assert task["name"] == "Пропущенный звонок"
    assert task["assignees"] == ["anna", "boris"]
    assert task["author"] == "anna"
    assert task["deadline"] == "2023-06-19T15:00:00+03:00"
    assert task["links"] == [
        {"to": "client", "id": "c1", "new": False},
        {"to": "order", "id": "o1", "new": False},
    ]
    [order] = [r for r in records if r["kind"] == "create_order"]
    assert (order["status"], order["responsible"]) == ("new", "anna")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def test_explain_json_lines_follow_the_schema_and_the_text_view_is_rendered_from_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.toml"
    config.write_text(
        '[crm.inquiries.on_answered]\nenabled = true\ntype = "Консультация"\n'
        '[crm.clients.answered]\ncreate = "client_and_deal"\n'
    )
    code, out = _run(capsys, "explain", str(TRANSCRIPT), "--config", str(config), "--json")
    assert code == 0
    documents: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    for document in documents:
        jsonschema.validate(document, SCHEMA)
    kinds = [a["kind"] for d in documents for a in d["actions"]]
    assert {"create_client", "create_deal", "create_inquiry", "record_call"} <= set(kinds)
    [client] = [a for d in documents for a in d["actions"] if a["kind"] == "create_client"]
    assert client["phones"] == ["+380981234567"]
    assert client["responsible"] == "101"
    code, text = _run(capsys, "explain", str(TRANSCRIPT), "--config", str(config))
    assert code == 0
    from pbxlink.cli.explain import render_document  # noqa: PLC0415 - the command's view

    assert text == "".join(render_document(d) for d in documents)
