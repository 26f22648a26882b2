"""The ``[agi]`` and ``[routing]`` settings: typed, frozen, read by :mod:`pbxlink.foundation.config`.

Declared here, below :mod:`pbxlink.routing.policy` which checks them and turns them into the pure
:class:`~pbxlink.routing.model.RoutingPolicy`, so the daemon's config imports them without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["AgiSettings", "RouteRule", "RoutingSettings"]


@dataclass(frozen=True, slots=True)
class AgiSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 4573
    deadline_ms: float = 300.0  # past it the answer is "no route" and the dialplan falls through
    path: str = "route"  # the script part of agi://host:port/<path>
    max_sessions: int = 256  # concurrent AGI sessions; extra connections are closed at once
    io_timeout_ms: float = 2000.0  # bound on sending the answer (Asterisk's 200 replies)


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    lines: tuple[str, ...] = ()  # DIDs the rule applies to; empty = every line
    action: Literal["owner", "off", "target"] = "owner"
    target: str = ""  # dial string for action = "target", e.g. "PJSIP/103"
    region: str = ""  # region for caller numbers on these lines; "" = routing.region
    hours: str = ""  # "HH:MM-HH:MM" local time the rule is active (may wrap midnight); "" = always


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    enabled: bool = True
    pick: Literal["newest", "first"] = "newest"  # several clients with one number
    rules: tuple[RouteRule, ...] = ()  # first matching rule wins
    region: str = ""  # region for caller numbers; "" = node.default_region
    dial_template: str = "PJSIP/{extension}"  # how a responsible's extension becomes a dial string
    internal_max_digits: int = 5  # caller numbers this short are extensions, never routed
    directory_batch: int = 1000  # directory messages applied per SQLite transaction
