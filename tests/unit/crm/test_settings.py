"""Settings: TOML → frozen tree; unknown keys and bad values are reported with their paths."""

from __future__ import annotations

import tomllib

import pytest

from pbxlink.adapters.config import Settings, parse_settings
from pbxlink.foundation.errors import ConfigError
from pbxlink.rules.settings import (
    ClientCreation,
    DefaultInquiryType,
    RepeatCalls,
    TaskMode,
)


def test_empty_document_gives_the_documented_defaults() -> None:
    settings = parse_settings({})
    assert settings == Settings()
    assert settings.crm.timezone == "Europe/Kyiv"
    assert settings.crm.inquiries.default_type_mode is DefaultInquiryType.UNSET
    assert settings.crm.clients.answered.create is ClientCreation.NOTHING
    assert settings.adapter.name == "crm"


def test_a_full_document_is_read_into_typed_values() -> None:
    document = tomllib.loads("""
[ami]
whatever = "belongs to the daemon and is not ours to check"
[mqtt]
port = 1884
[adapter]
name = "megaplan"
[crm]
timezone = "Europe/Moscow"
[crm.phone]
default_region = "ru"
display = "national"
[crm.phone.line_regions]
"4930100200" = "DE"
[crm.tasks]
enabled = true
assignees = ["anna"]
mode = "one_each"
deadline_hours = 2
[crm.clients]
repeat_calls = "if_no_open_deal"
[crm.clients.answered]
create = "client_and_deal"
""")
    settings = parse_settings(document)
    assert settings.adapter.name == "megaplan"
    assert settings.mqtt.port == 1884
    assert settings.adapter.identifier == "pbxlink-adapter-megaplan"
    assert settings.crm.phone.region_for("4930100200") == "DE"
    assert settings.crm.phone.region_for("other") == "RU"
    assert settings.crm.tasks.mode is TaskMode.ONE_EACH
    assert settings.crm.clients.repeat_calls is RepeatCalls.IF_NO_OPEN_DEAL
    assert settings.crm.clients.answered.create is ClientCreation.CLIENT_AND_DEAL


def test_every_problem_is_reported_with_its_path() -> None:
    document = tomllib.loads("""
[adapter]
brokerport = 1
[crm]
timezone = "Mars/Base"
[crm.inquiries]
number_template = "{Q}"
[crm.inquiries.on_missed]
enabled = "yes"
[crm.tasks]
enabled = true
mode = "sometimes"
[crm.clients.answered]
create = "everything"
[[crm.orders.rules]]
name = "x"
""")
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    problems = "\n".join(str(problem) for problem in caught.value.problems)
    for path in (
        "adapter.brokerport: unknown key",
        "crm.timezone",
        "crm.inquiries.number_template",
        "crm.inquiries.on_missed.enabled",
        "crm.tasks.mode",
        "crm.tasks.assignees",
        "crm.clients.answered.create",
        "crm.orders.rules[0]",
    ):
        assert path in problems


def test_fixed_default_type_needs_a_type() -> None:
    with pytest.raises(ConfigError, match=r"crm\.inquiries\.default_type"):
        parse_settings({"crm": {"inquiries": {"default_type_mode": "fixed"}}})


def test_name_template_with_unknown_placeholder_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"crm\.clients\.name_template"):
        parse_settings({"crm": {"clients": {"name_template": "Новый {when}"}}})


def test_line_regions_and_request_keywords_are_checked_where_they_are_written() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {
                "crm": {
                    "phone": {"default_region": "xx", "line_regions": {"4930": "zz", "4940": 5}},
                    "requests": {"rules": [{"name": "r", "user": "anna", "keywords": 7}]},
                }
            }
        )
    assert [str(p) for p in caught.value.problems] == [
        "crm.phone.line_regions: 4940: must be a region code string",
        "crm.requests.rules[0].keywords: must be a string of words separated by ';', got 7",
        "crm.phone.default_region: unknown region 'XX' (ISO 3166 code like 'UA')",
    ]
    with pytest.raises(ConfigError, match=r"^crm\.phone\.line_regions\.4930: unknown region 'ZZ'"):
        parse_settings({"crm": {"phone": {"line_regions": {"4930": "zz"}}}})
