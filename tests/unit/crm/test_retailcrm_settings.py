"""`[crm] backend = "retailcrm"` and `[crm.retailcrm]`: read strictly, every problem at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pbxlink.adapters.backends.retailcrm import payloads
from pbxlink.adapters.backends.retailcrm.settings import parse_retailcrm
from pbxlink.foundation.errors import EX_CONFIG, ConfigError
from pbxlink.rules.calls import parse_outcome
from pbxlink.rules.samples import missed, outcome
from pbxlink.rules.settings import SettingsError, settings_from_toml

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


def test_a_good_section_reads_users_sites_and_strips_the_url() -> None:
    crm = settings_from_toml(GOOD).crm
    assert crm.backend == "retailcrm"
    s = parse_retailcrm(crm.backend_options)
    assert s.url == "https://shop.retailcrm.ru"
    assert (s.user_id("101"), s.user_id("27"), s.user_id("555")) == (27, 27, None)
    assert s.extension_of(27) == "101"
    assert (s.site_for("4930100300"), s.site_for("4930100200"), s.site_for(None)) == (
        "reviews",
        "main",
        "main",
    )


def test_every_problem_of_the_section_is_reported_at_once() -> None:
    text = GOOD.replace('url = "https://shop.retailcrm.ru/"', 'url = "shop"').replace('site = "main"', "")
    text = text.replace('"101" = 27', '"101" = "anna"') + "upload_batch = 500\nno_such_key = 1\n"
    crm = settings_from_toml(text.replace("[crm.retailcrm.sites]", "[crm.retailcrm.sites]")).crm
    with pytest.raises(ConfigError) as caught:
        parse_retailcrm(crm.backend_options)
    paths = {p.path for p in caught.value.problems}
    assert {"crm.retailcrm.url", "crm.retailcrm.site", "crm.retailcrm.users.101"} <= paths


def test_an_unknown_backend_is_a_config_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_toml('[crm]\nbackend = "salesforce"\n')
    assert any("crm.backend" in p for p in caught.value.problems)


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
    s = parse_retailcrm(settings_from_toml(GOOD).crm.backend_options)
    call = parse_outcome(outcome(direction="internal", external=None, initiator="101"))
    assert payloads.call_record(call, s, settings_from_toml(GOOD).crm.zone) is None
    assert payloads.hangup_event(call, s) is None


def test_results_and_hangup_statuses_use_retailcrms_two_different_enums() -> None:
    s = parse_retailcrm(settings_from_toml(GOOD).crm.backend_options)
    zone = settings_from_toml(GOOD).crm.zone
    lost = parse_outcome(missed())
    record = payloads.call_record(lost, s, zone)
    hangup = payloads.hangup_event(lost, s)
    assert record is not None
    assert hangup is not None
    assert (record["result"], hangup["hangupStatus"]) == ("no answer", "no answered")


def test_a_number_is_searched_in_every_form_a_person_may_have_typed() -> None:
    assert payloads.written_forms("+380981234567") == ("+380981234567", "380981234567", "0981234567")
