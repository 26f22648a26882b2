"""Click-to-call (`[click_to_call]`): which makeCallUrl requests become an AMI Originate."""

from __future__ import annotations

import re

from pbxlink.daemon.click_to_call import (
    ClickToCallSettings,
    MakeCall,
    Refusal,
    check_request,
    click_to_call_problems,
    originate_headers,
)
from pbxlink.foundation.config import Secret

AGENTS = re.compile(r"^\d{2,6}$")


def test_a_request_with_the_modules_secret_becomes_a_call_from_the_agent_to_the_number() -> None:
    checked = check_request({"clientId": "s3cret", "code": "101", "phone": "067 123-45-68"}, "s3cret", AGENTS)
    assert checked == MakeCall("101", "0671234568")


def test_a_wrong_or_missing_secret_is_refused_with_403() -> None:
    for query in (
        {"clientId": "guess", "code": "101", "phone": "0671234568"},
        {"code": "101", "phone": "1234"},
    ):
        assert check_request(query, "s3cret", AGENTS) == Refusal(403, "wrong clientId")


def test_an_extension_that_is_not_an_agent_or_a_bad_number_is_refused_with_400() -> None:
    bad_code = check_request({"clientId": "s", "code": "trunk", "phone": "0671234568"}, "s", AGENTS)
    bad_phone = check_request({"clientId": "s", "code": "101", "phone": "0671;Exten: 999"}, "s", AGENTS)
    assert isinstance(bad_code, Refusal)
    assert bad_code.status == 400
    assert isinstance(bad_phone, Refusal)
    assert bad_phone.status == 400


def test_the_originate_rings_the_agent_first_then_the_dialplan_dials_the_number() -> None:
    headers = originate_headers(MakeCall("101", "0671234568"), ClickToCallSettings(ring_seconds=20))
    assert headers["Channel"] == "PJSIP/101"
    assert (headers["Context"], headers["Exten"], headers["Priority"]) == ("from-agents", "0671234568", "1")
    assert headers["Timeout"] == "20000"
    assert headers["Async"] == "true"


def test_enabled_without_a_secret_is_a_config_problem() -> None:
    assert [p.path for p in click_to_call_problems(ClickToCallSettings(enabled=True))] == [
        "click_to_call.secret_file"
    ]
    assert click_to_call_problems(ClickToCallSettings(enabled=True, secret=Secret("s"))) == []
