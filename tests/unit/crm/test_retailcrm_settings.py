"""`[crm] backend = "retailcrm"` and `[crm.retailcrm]`: read strictly, every problem at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pbxlink.adapters.backends.retailcrm import payloads
from pbxlink.adapters.backends.retailcrm.settings import RetailCrmSettings
from pbxlink.adapters.config import settings_from_toml
from pbxlink.foundation.config import Secret
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.rules.calls import parse_outcome
from pbxlink.rules.samples import missed, outcome

GOOD = """
[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "https://shop.retailcrm.ru/"
api_key_file = "/run/keys/retailcrm"
site = "main"
[crm.retailcrm.users]
"101" = 27
[crm.retailcrm.sites]
"4930100300" = "reviews"
"""


def retailcrm(text: str = GOOD) -> RetailCrmSettings:
    return settings_from_toml(text.replace('api_key_file = "/run/keys/retailcrm"', "")).crm.retailcrm


def test_a_good_section_reads_users_sites_and_strips_the_url() -> None:
    crm = settings_from_toml(GOOD.replace('api_key_file = "/run/keys/retailcrm"', "")).crm
    assert crm.backend == "retailcrm"
    s = crm.retailcrm
    assert s.base_url == "https://shop.retailcrm.ru"
    assert (s.user_id("101"), s.user_id("27"), s.user_id("555")) == (27, 27, None)
    assert s.extension_of(27) == "101"
    assert (s.site_for("4930100300"), s.site_for("4930100200"), s.site_for(None)) == (
        "reviews",
        "main",
        "main",
    )


def test_every_problem_of_the_section_is_reported_at_once() -> None:
    text = GOOD.replace('url = "https://shop.retailcrm.ru/"', 'url = "shop"').replace('site = "main"', "")
    text = text.replace('"101" = 27', '"101" = "anna"').replace(
        "[crm.retailcrm.sites]", "upload_batch = 500\n[crm.retailcrm.sites]"
    )
    with pytest.raises(ConfigError) as caught:
        settings_from_toml(text.replace('api_key_file = "/run/keys/retailcrm"', "no_such_key = 1"))
    paths = {p.path for p in caught.value.problems}
    assert {
        "crm.retailcrm.url",
        "crm.retailcrm.site",
        "crm.retailcrm.users.101",
        "crm.retailcrm.no_such_key",
    } <= paths


def test_the_api_key_is_read_from_its_file_by_the_one_loader(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("secret-key\n")
    crm = settings_from_toml(GOOD.replace("/run/keys/retailcrm", str(key))).crm
    assert crm.retailcrm.api_key == Secret("secret-key")


def test_an_unknown_backend_is_a_config_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_toml('[crm]\nbackend = "salesforce"\n')
    assert any(p.path == "crm.backend" for p in caught.value.problems)


def test_the_retailcrm_keys_are_not_checked_while_another_backend_is_chosen() -> None:
    assert settings_from_toml('[crm.retailcrm]\nsite = ""\n').crm.backend == "sqlite"


def test_the_adapter_exits_78_naming_the_bad_retailcrm_keys(tmp_path: Path) -> None:
    config = tmp_path / "pbxlink.toml"
    config.write_text('[crm]\nbackend = "retailcrm"\n[crm.retailcrm]\nurl = "ftp://x"\n')
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG
    assert "crm.retailcrm.url" in result.stderr
    assert "crm.retailcrm.site" in result.stderr


def test_the_adapter_exits_78_without_an_api_key(tmp_path: Path) -> None:
    config = tmp_path / "pbxlink.toml"
    config.write_text(GOOD.replace('api_key_file = "/run/keys/retailcrm"', ""))
    result = subprocess.run(
        [sys.executable, "-m", "pbxlink.cli", "adapter", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == EX_CONFIG
    assert "crm.retailcrm.api_key_file" in result.stderr


def test_an_internal_call_has_no_upload_record_and_no_hangup() -> None:
    s = retailcrm()
    call = parse_outcome(outcome(direction="internal", external=None, initiator="101"))
    assert payloads.call_record(call, s, ZoneInfo("Europe/Kyiv")) is None
    assert payloads.hangup_event(call, s) is None


def test_results_and_hangup_statuses_use_retailcrms_two_different_enums() -> None:
    s = retailcrm()
    zone = ZoneInfo("Europe/Kyiv")
    lost = parse_outcome(missed())
    record = payloads.call_record(lost, s, zone)
    hangup = payloads.hangup_event(lost, s)
    assert record is not None
    assert hangup is not None
    assert (record["result"], hangup["hangupStatus"]) == ("no answer", "no answered")


def test_a_number_is_searched_in_every_form_a_person_may_have_typed() -> None:
    assert payloads.written_forms("+380981234567") == ("+380981234567", "380981234567", "0981234567")


def test_the_recording_url_is_the_base_url_and_the_recordings_file_name() -> None:
    s = retailcrm(
        GOOD.replace('site = "main"', 'site = "main"\nrecordings_base_url = "https://pbx.example/rec/"')
    )
    call = parse_outcome(outcome(recordings=["/var/spool/asterisk/monitor/2026/12/03/in 0981234567.wav"]))
    record = payloads.call_record(call, s, ZoneInfo("Europe/Kyiv"))
    assert record is not None
    assert record["recordUrl"] == "https://pbx.example/rec/in%200981234567.wav"
    without = payloads.call_record(parse_outcome(outcome()), s, ZoneInfo("Europe/Kyiv"))
    assert without is not None
    assert "recordUrl" not in without
