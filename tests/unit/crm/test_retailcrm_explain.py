"""`pbxlink explain` with `[crm] backend = "retailcrm"`: the RetailCRM requests a recorded session
would cause, from real AMI recordings of the lab's scenarios; nothing is sent anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # no stubs published
import pytest

from pbxlink.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "ami"
CONFIG = """
[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "http://127.0.0.1:9"
site = "main"
[crm.retailcrm.users]
"101" = 27
[crm.orders]
enabled = true
[[crm.orders.rules]]
name = "missed calls"
kind = "missed"
status = "callback"
[crm.tasks]
enabled = true
assignees = ["101"]
link_to_this_call = true
unlinked = "skip"
"""


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], recording: str, *extra: str) -> str:
    config = tmp_path / "pbxlink.toml"
    config.write_text(CONFIG)
    code = main(["explain", str(DATA / recording), "--config", str(config), "--quiet-events", *extra])
    out, _ = capsys.readouterr()
    assert code == 0
    return out


def test_a_missed_call_shows_customer_order_task_hangup_and_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(tmp_path, capsys, "inbound_agent_rings_caller_hangs_up.ami")
    ringing, outcome = out.split("\noutcome ", 1)
    assert '"type":"in","codes":["101"]' in ringing  # the popup while 101 rang
    sent = [line.strip() for line in outcome.splitlines() if "→ RetailCRM" in line]
    paths = [line.split()[3] for line in sent]
    assert paths == [
        "/api/v5/customers/create",
        "/api/v5/orders/create",
        "/api/v5/tasks/create",
        "/api/v5/telephony/call/event",
        "/api/v5/telephony/calls/upload",
    ]
    assert '"status":"callback"' in sent[1]
    assert '"performerId":27' in sent[2]
    assert '"result":"no answer"' in sent[4]


def test_an_internal_call_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = explain(tmp_path, capsys, "internal_answered.ami")
    assert "internal call: nothing is sent to RetailCRM" in out
    assert "POST" not in out


def test_json_lists_the_retailcrm_requests_of_each_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(tmp_path, capsys, "inbound_agent_rings_caller_hangs_up.ami", "--json")
    documents = [json.loads(line) for line in out.splitlines()]
    schema = json.loads((DATA.parents[2] / "docs" / "explain.schema.json").read_text())
    for document in documents:
        jsonschema.validate(document, schema)
    [outcome] = [d for d in documents if d["kind"] == "outcome"]
    assert outcome["retailcrm"][-1].startswith("POST /api/v5/telephony/calls/upload")
