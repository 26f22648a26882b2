"""[agi] and [routing] settings → the pure `RoutingPolicy`, plus their config checks."""

from __future__ import annotations

import re

import phonenumbers

from pbxlink.foundation.errors import ConfigProblem
from pbxlink.routing.model import PickPolicy, RoutingPolicy, Rule, RuleAction
from pbxlink.routing.settings import AgiSettings, RoutingSettings

__all__ = ["parse_hours", "routing_policy", "routing_problems"]

_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_hours(text: str) -> tuple[int, int] | None:
    """ "09:00-18:00" → (540, 1080) minutes of the day; "" → None; anything else ValueError."""
    if not text:
        return None
    match = _HOURS.match(text.strip())
    if match is None:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _region_ok(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def routing_problems(agi: AgiSettings, routing: RoutingSettings) -> list[ConfigProblem]:
    """Checks of [agi] and [routing] that types alone cannot express."""
    problems: list[ConfigProblem] = []
    if agi.deadline_ms <= 0:
        problems.append(ConfigProblem("agi.deadline_ms", "must be > 0"))
    if not agi.path.strip("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", agi.path):
        problems.append(ConfigProblem("agi.path", "letters, digits, '_', '.', '/', '-' only"))
    if agi.max_sessions < 1:
        problems.append(ConfigProblem("agi.max_sessions", "must be >= 1"))
    if agi.io_timeout_ms <= 0:
        problems.append(ConfigProblem("agi.io_timeout_ms", "must be > 0"))
    if routing.region and not _region_ok(routing.region):
        problems.append(
            ConfigProblem("routing.region", f"unknown region {routing.region!r} (ISO code like UA)")
        )
    try:
        dialed = routing.dial_template.format(extension="101")
    except (KeyError, IndexError, ValueError) as exc:
        problems.append(ConfigProblem("routing.dial_template", f"only {{extension}} may be used: {exc!r}"))
    else:
        if "101" not in dialed:
            problems.append(ConfigProblem("routing.dial_template", "must contain {extension}"))
    if not 0 <= routing.internal_max_digits <= 15:
        problems.append(ConfigProblem("routing.internal_max_digits", "must be 0..15"))
    if routing.directory_batch < 1:
        problems.append(ConfigProblem("routing.directory_batch", "must be >= 1"))
    names: set[str] = set()
    for i, rule in enumerate(routing.rules):
        where = f"routing.rules[{i}]"
        if rule.name in names:
            problems.append(ConfigProblem(f"{where}.name", f"duplicate rule name {rule.name!r}"))
        names.add(rule.name)
        if rule.action == "target" and not rule.target:
            problems.append(ConfigProblem(f"{where}.target", "action 'target' needs a dial string"))
        if rule.region and not _region_ok(rule.region):
            problems.append(ConfigProblem(f"{where}.region", f"unknown region {rule.region!r}"))
        try:
            parse_hours(rule.hours)
        except ValueError as exc:
            problems.append(ConfigProblem(f"{where}.hours", str(exc)))
    return problems


def routing_policy(routing: RoutingSettings, default_region: str) -> RoutingPolicy:
    """The pure policy decide() needs; ``default_region`` is node.default_region.
    Assumes `routing_problems` found nothing."""
    rules = tuple(
        Rule(
            name=rule.name,
            action=RuleAction(rule.action),
            lines=frozenset(rule.lines),
            target=rule.target or None,
            region=rule.region or None,
            hours=parse_hours(rule.hours),
        )
        for rule in routing.rules
    )
    return RoutingPolicy(
        enabled=routing.enabled,
        default_region=routing.region or default_region,
        pick=PickPolicy(routing.pick),
        dial_template=routing.dial_template,
        rules=rules,
        internal_max_digits=routing.internal_max_digits,
    )
