"""Who a channel is: an agent's phone, the outside world, or PBX plumbing (Local channels …).

Channel names look like ``PJSIP/101-0000002a``, ``PJSIP/trunk-0000002b`` or
``Local/102@from-agents-00000004;1``. Agents are PJSIP (or SIP/IAX2) endpoints whose name
matches :attr:`PartyRules.agent_endpoints`; endpoints named in :attr:`PartyRules.trunk_endpoints`
are always external; any other device channel counts as external too (an outside phone), and
channel technologies that never carry a person (Local, Announcer, Recorder, Snoop …) are plumbing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

PLUMBING_TECHS = frozenset(
    {"local", "announcer", "recorder", "cbann", "cbrec", "snoop", "bridge", "message", "unicastrtp"}
)
AGENT_TECHS = frozenset({"pjsip", "sip", "iax2", "dahdi", "webrtc"})


class PartyKind(Enum):
    AGENT = "agent"
    EXTERNAL = "external"
    PLUMBING = "plumbing"


@dataclass(frozen=True, slots=True)
class Party:
    kind: PartyKind
    endpoint: str  # "101", "trunk", "102@from-agents" (Local)
    local_half: int | None = None  # 1 or 2 for Local channels
    local_base: str | None = None  # the name shared by both halves of a Local pair


@dataclass(frozen=True, slots=True)
class PartyRules:
    """Which endpoints are agents and which lead outside. Defaults fit the pbxlink lab."""

    agent_endpoints: str = r"^1\d\d$"
    trunk_endpoints: frozenset[str] = field(default_factory=lambda: frozenset({"trunk"}))

    def __post_init__(self) -> None:
        re.compile(self.agent_endpoints)  # a bad pattern fails here, at construction


class PartyClassifier:
    """Classifies channel names by :class:`PartyRules`, caching per endpoint."""

    __slots__ = ("_agent", "_trunks")

    def __init__(self, rules: PartyRules) -> None:
        self._agent = re.compile(rules.agent_endpoints)
        self._trunks = rules.trunk_endpoints

    def is_agent_endpoint(self, endpoint: str) -> bool:
        return endpoint not in self._trunks and self._agent.search(endpoint) is not None

    def classify(self, channel_name: str) -> Party:
        tech, _, rest = channel_name.partition("/")
        tech_lower = tech.lower()
        if tech_lower == "local":
            base, _, half_text = rest.rpartition(";")
            if not base:
                base, half_text = rest, ""
            half = int(half_text) if half_text in ("1", "2") else None
            endpoint = _strip_sequence(base)
            return Party(PartyKind.PLUMBING, endpoint, half, f"{tech}/{base}")
        endpoint = _strip_sequence(rest)
        if tech_lower in PLUMBING_TECHS or not rest:
            return Party(PartyKind.PLUMBING, endpoint)
        if endpoint in self._trunks:
            return Party(PartyKind.EXTERNAL, endpoint)
        if tech_lower in AGENT_TECHS and self._agent.search(endpoint):
            return Party(PartyKind.AGENT, endpoint)
        return Party(PartyKind.EXTERNAL, endpoint)


def _strip_sequence(resource: str) -> str:
    """``101-0000002a`` → ``101`` (the channel sequence suffix Asterisk appends)."""
    head, sep, tail = resource.rpartition("-")
    if sep and head and tail and all(c in "0123456789abcdefABCDEF" for c in tail):
        return head
    return resource
