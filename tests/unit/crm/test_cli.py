"""`pbxlink crm` and `pbxlink explain` through the real command entry point."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pbxlink.cli import main

TRANSCRIPT = Path(__file__).resolve().parents[2] / "unit" / "ami" / "data" / "inbound_answered_cyrillic.ami"
RULES = """
[crm.inquiries]
number_template = "IN-{C:3}"
[crm.inquiries.on_answered]
enabled = true
type = "Консультация"
manager = "anna"
[crm.clients.answered]
create = "client_and_deal"
deal_type = "Продажа"
deal_stage = "Первичный контакт"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_crm_tables_show_a_client_added_by_hand_under_every_written_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "crm.sqlite3")
    assert run(capsys, "crm", "--database", db, "add-employee", "anna", "Анна", "--extension", "101")[0] == 0
    code, out, _ = run(
        capsys, "crm", "--database", db, "add-client", "Иван Петров", "0981234567", "--responsible", "anna"
    )
    assert (code, out.strip()) == (0, "client 1 saved with +380981234567")
    for form in ("0981234567", "380981234567", "+380981234567"):
        code, out, _ = run(capsys, "crm", "--database", db, "clients", "--phone", form, "--json")
        assert code == 0
        [row] = [json.loads(line) for line in out.splitlines()]
        assert (row["name"], row["responsible"]) == ("Иван Петров", "anna")
    code, out, _ = run(capsys, "crm", "--database", db, "clients")
    assert out.splitlines()[0].split() == ["id", "name", "phones", "responsible", "source", "line", "created"]


def test_crm_refuses_a_client_whose_number_is_not_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "crm", "--database", str(tmp_path / "c.sqlite3"), "add-client", "X", "anonymous"
    )
    assert code == 1
    assert "'anonymous' is not a phone number" in err


def test_crm_with_a_bad_config_exits_78_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[crm.tasks]\nassignee = ['anna']\n")
    code, _, err = run(capsys, "crm", "--config", str(config), "clients")
    assert code == 78
    assert "crm.tasks.assignee: unknown key" in err


def test_explain_replays_a_real_transcript_and_prints_the_actions_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.toml"
    config.write_text(RULES)
    db = tmp_path / "crm.sqlite3"
    assert (
        run(capsys, "crm", "--database", str(db), "add-employee", "anna", "Анна", "--extension", "101")[0]
        == 0
    )
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, _ = run(capsys, "explain", str(TRANSCRIPT), "--config", str(config), "--database", str(db))
    assert code == 0
    lines = out.splitlines()
    answered = lines.index("event pbx1:1795389474.2 #2 answered agent 101")
    assert "+ create client «Новый (" in lines[answered + 1]
    assert "responsible anna" in lines[answered + 1]
    assert "create deal «Продажа» at stage «Первичный контакт»" in lines[answered + 2]
    outcome = next(i for i, line in enumerate(lines) if line.startswith("outcome "))
    assert "inbound answered 0981234567 line 4930100200" in lines[outcome]
    assert any("create inquiry IN-001 type Консультация, manager anna" in line for line in lines[outcome:])
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # explain writes nothing


def test_explain_json_lists_every_action_with_its_rule_and_unknown_managers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.toml"
    config.write_text(RULES)
    code, out, _ = run(
        capsys, "explain", str(TRANSCRIPT), "--config", str(config), "--json", "--quiet-events"
    )
    assert code == 0
    documents = [json.loads(line) for line in out.splitlines()]
    outcome = next(d for d in documents if d["kind"] == "outcome")
    # Without a CRM copy the employees are the recording's agents: "anna" is unknown, and the
    # explanation says so instead of notifying nobody silently.
    assert [a["kind"] for a in outcome["actions"]] == ["record_call", "create_inquiry", "no_action"]
    assert outcome["actions"][1]["rule"] == "inquiries"
    assert "manager 'anna' is not an active employee" in outcome["actions"][2]["reason"]


def test_adapter_refuses_an_empty_broker_password_file_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same rules as the daemon's own secrets: an empty file is a config error, named by its key,
    # found before anything connects or opens the database.
    (tmp_path / "mqtt.password").write_text("\n")
    config = tmp_path / "adapter.toml"
    config.write_text(f'[adapter]\nname = "crm"\n[mqtt]\npassword_file = "{tmp_path / "mqtt.password"}"\n')
    code, out, err = run(capsys, "adapter", "-c", str(config), "--database", str(tmp_path / "crm.sqlite3"))
    assert code == 78
    assert out == ""
    assert "mqtt.password_file: secret file" in err
    assert "is empty" in err
    assert not (tmp_path / "crm.sqlite3").exists()


def test_adapter_reads_conf_d_and_set_flags_and_its_log_level_like_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pbxlink.toml"
    config.write_text('[adapter]\nname = "crm"\n[ami]\nport = 5038\n')  # [ami] is the daemon's: left alone
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-adapter.toml").write_text("[adapter]\nmax_attempts = 0\n")
    code, out, err = run(
        capsys, "adapter", "-c", str(config), "--set", "log.level=loud", "--set", "mqtt.port=0"
    )
    assert code == 78
    assert out == ""
    assert "adapter.max_attempts: must be >= 1, got 0" in err  # from conf.d/
    assert "log.level: must be one of" in err  # the adapter's log level is [log]'s
    assert "mqtt.port: 0 is not a TCP port" in err  # one [mqtt] section, --set like the daemon
    assert "3 config problem(s)" in err
    assert not (tmp_path / "crm.sqlite3").exists()


def test_the_adapter_no_longer_names_the_broker_in_its_own_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pbxlink.toml"
    config.write_text('[adapter]\nbroker_host = "10.0.0.1"\nbroker_port = 1884\n')
    code, _, err = run(capsys, "adapter", "-c", str(config), "--database", str(tmp_path / "crm.sqlite3"))
    assert code == 78
    assert "adapter.broker_host: unknown key: moved to mqtt.host" in err
    assert "adapter.broker_port: unknown key: moved to mqtt.port" in err
