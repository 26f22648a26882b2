"""`pbxlink explain` with `[crm] backend = "bitrix24"`: the Bitrix24 methods a recorded session
would cause, from real AMI recordings of the lab's scenarios; nothing is sent anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pbxlink.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "ami"
CONFIG = """
[crm]
backend = "bitrix24"
[crm.bitrix24]
webhook_url_file = "{secret}"
default_user = "100"
[crm.bitrix24.users]
"101" = 7
[crm.clients.missed]
create = "client"
[crm.tasks]
enabled = true
assignees = ["101"]
"""


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], recording: str, *extra: str) -> str:
    secret = tmp_path / "hook"
    secret.write_text("https://portal.example/rest/1/token/\n")
    config = tmp_path / "pbxlink.toml"
    config.write_text(CONFIG.replace("{secret}", str(secret)))
    code = main(["explain", str(DATA / recording), "--config", str(config), *extra])
    out, _ = capsys.readouterr()
    assert code == 0
    return out


def test_a_missed_call_shows_the_look_up_contact_task_register_and_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(tmp_path, capsys, "inbound_agent_rings_caller_hangs_up.ami")
    ringing, outcome = out.split("\noutcome ", 1)
    [register_at_ringing] = [
        line for line in ringing.splitlines() if "telephony.externalCall.register" in line
    ]
    assert '"SHOW": 1' in register_at_ringing
    assert '"USER_ID": 7' in register_at_ringing  # 101 rang: [users] maps it to user 7
    sent = [line.strip() for line in outcome.splitlines() if "→ Bitrix24" in line]
    methods = [line.split()[2] for line in sent]
    assert methods == [
        "crm.duplicate.findbycomm",
        "crm.contact.add",
        "tasks.task.add",
        "telephony.externalCall.register",
        "telephony.externalCall.finish",
    ]
    assert '"RESPONSIBLE_ID": 7' in sent[2]
    assert '"STATUS_CODE": "304"' in sent[4]
    assert '"CALL_ID": "$result[register][CALL_ID]"' in sent[4]


def test_an_internal_call_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = explain(tmp_path, capsys, "internal_answered.ami", "--quiet-events")
    assert "internal call: nothing is sent to Bitrix24" in out
    assert "telephony.externalCall" not in out


def test_json_lists_the_bitrix24_methods_of_each_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(tmp_path, capsys, "inbound_answered.ami", "--json")
    [outcome] = [d for d in map(json.loads, out.splitlines()) if d["kind"] == "outcome"]
    assert outcome["bitrix24"][-1].startswith("telephony.externalCall.finish")
    assert '"STATUS_CODE": "200"' in outcome["bitrix24"][-1]
