"""`[crm.webhook]`: signed POSTs of every outcome and live event to one or more receivers.

```toml
[crm]
backend = "webhook"
[crm.webhook]
max_attempts = 10          # a delivery failing this often is a dead letter
max_age_seconds = 86400    # … and so is one still failing this long after the message came
timeout_seconds = 10
backoff_initial_seconds = 1
backoff_max_seconds = 300
[crm.webhook.subscribers.erp]
url = "https://erp.example.com/pbxlink"
secret_file = "/etc/pbxlink/webhook-erp.secret"
previous_secret_file = "/etc/pbxlink/webhook-erp.old"   # rotation: both signatures are sent
messages = ["call.outcome"]            # call.outcome and/or call.event (all when empty)
events = []                            # live event types: ringing, answered, transferred, ended
directions = ["inbound", "outbound"]   # all when empty
lines = []                             # DIDs; all when empty
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pbxlink.foundation.config import AtLeast
from pbxlink.foundation.errors import ConfigProblem

MESSAGE_KINDS = ("call.outcome", "call.event")
EVENT_TYPES = ("ringing", "answered", "transferred", "ended")
DIRECTIONS = ("inbound", "outbound", "internal")


@dataclass(frozen=True, slots=True)
class Subscriber:
    url: str = ""
    secret_file: Path | None = None
    previous_secret_file: Path | None = None  # the secret being rotated out; signed with too
    messages: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    subscribers: Mapping[str, Subscriber] = field(default_factory=dict)
    max_attempts: Annotated[int, AtLeast(1)] = 10
    max_age_seconds: Annotated[int, AtLeast(1)] = 86400
    timeout_seconds: Annotated[int, AtLeast(1)] = 10
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    concurrency: Annotated[int, AtLeast(1)] = 8  # requests in flight per subscriber


def webhook_problems(s: WebhookSettings, path: str = "crm.webhook") -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if not s.subscribers:
        problems.append(
            ConfigProblem(f"{path}.subscribers", "at least one subscriber with backend = webhook")
        )
    for name, sub in s.subscribers.items():
        where = f"{path}.subscribers.{name}"
        if not sub.url.startswith(("https://", "http://")):
            problems.append(ConfigProblem(f"{where}.url", "required, the receiver's http(s) URL"))
        if sub.secret_file is None:
            problems.append(ConfigProblem(f"{where}.secret_file", "required: the signing secret's file"))
        for key, values, allowed in (
            ("messages", sub.messages, MESSAGE_KINDS),
            ("events", sub.events, EVENT_TYPES),
            ("directions", sub.directions, DIRECTIONS),
        ):
            for value in values:
                if value not in allowed:
                    problems.append(
                        ConfigProblem(f"{where}.{key}", f"{value!r} is not one of {', '.join(allowed)}")
                    )
    if not 0 < s.backoff_initial_seconds <= s.backoff_max_seconds:
        problems.append(
            ConfigProblem(f"{path}.backoff_initial_seconds", "above 0 and at most backoff_max_seconds")
        )
    return problems
