"""[agi] and [routing] from TOML → the routing policy; bad values are reported with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxlink.daemon.config import load_settings
from pbxlink.foundation.errors import ConfigError
from pbxlink.routing.model import PickPolicy, RoutingPolicy, Rule, RuleAction
from pbxlink.routing.policy import parse_hours, routing_policy

GOOD = """
[node]
default_region = "UA"

[agi]
port = 4573
deadline_ms = 250
path = "route"
max_sessions = 128

[routing]
pick = "first"
dial_template = "PJSIP/{extension}"

[[routing.rules]]
name = "reviews"
lines = ["4930100300"]
action = "off"

[[routing.rules]]
name = "night"
action = "target"
target = "Local/night@queues"
hours = "22:00-07:00"

[[routing.rules]]
name = "berlin"
lines = ["4930100500"]
region = "DE"
"""


def test_toml_routing_section_becomes_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "pbxlink.toml"
    path.write_text(GOOD)
    settings = load_settings(path)
    assert (settings.agi.deadline_ms, settings.agi.path, settings.agi.max_sessions) == (250, "route", 128)
    assert routing_policy(settings.routing, settings.node.default_region) == RoutingPolicy(
        enabled=True,
        default_region="UA",
        pick=PickPolicy.FIRST,
        dial_template="PJSIP/{extension}",
        rules=(
            Rule("reviews", RuleAction.OFF, frozenset({"4930100300"})),
            Rule("night", RuleAction.TARGET, target="Local/night@queues", hours=(22 * 60, 7 * 60)),
            Rule("berlin", RuleAction.OWNER, frozenset({"4930100500"}), region="DE"),
        ),
    )


def test_defaults_give_a_working_policy() -> None:
    settings = load_settings(None)
    policy = routing_policy(settings.routing, settings.node.default_region)
    assert (policy.enabled, policy.pick, policy.dial_template, policy.rules) == (
        True,
        PickPolicy.NEWEST,
        "PJSIP/{extension}",
        (),
    )


def test_every_bad_routing_value_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "pbxlink.toml"
    path.write_text("""
[agi]
path = ""
max_sessions = 0

[routing]
region = "XX"
dial_template = "PJSIP/{ext}"

[[routing.rules]]
name = "a"
hours = "9-18"
region = "Narnia"

[[routing.rules]]
name = "a"
action = "target"
""")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    paths = {problem.path for problem in caught.value.problems}
    assert {
        "agi.path",
        "agi.max_sessions",
        "routing.region",
        "routing.dial_template",
        "routing.rules[0].hours",
        "routing.rules[0].region",
        "routing.rules[1].name",
        "routing.rules[1].target",
    } <= paths


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("", None),
        ("09:00-18:00", (540, 1080)),
        ("22:30-06:15", (1350, 375)),
    ],
)
def test_hours(text: str, minutes: tuple[int, int] | None) -> None:
    assert parse_hours(text) == minutes


@pytest.mark.parametrize("text", ["9-18", "24:00-01:00", "09:00", "09:60-10:00"])
def test_bad_hours(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hours(text)
