"""`[crm.bitrix24]`: which portal, how pbxlink signs in, and how its numbers map onto the portal.

```toml
[crm]
backend = "bitrix24"
[crm.bitrix24]
auth = "webhook"                 # an inbound webhook (scopes telephony, crm, task, user, timeman)
webhook_url_file = "/etc/pbxlink/bitrix24-webhook"  # https://<portal>/rest/<user>/<token>/ (a secret)
# auth = "oauth"                 # or a local application's tokens, refreshed when they expire:
# portal = "https://example.bitrix24.ru"
# client_id = "local.65f0...."
# client_secret_file = "/etc/pbxlink/bitrix24-client-secret"
# refresh_token_file = "/etc/pbxlink/bitrix24-refresh-token"   # the first one; later ones in token_state
# token_state = "/var/lib/pbxlink/bitrix24-tokens.json"
default_user = "100"             # inner number that owns calls nobody answered (IVR, group misses)
crm_create = false               # Bitrix24 makes a lead for unknown numbers (if no rule makes a contact)
[crm.bitrix24.lines]             # called line (DID) → its name; registered with telephony.externalLine.add
"4930100200" = "Berlin office"
[crm.bitrix24.users]             # extension → Bitrix24 user id (else the user's UF_PHONE_INNER is used)
"101" = 7
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pbxlink.foundation.config import AtLeast, Secret
from pbxlink.foundation.errors import ConfigProblem

MAX_BATCH = 50  # commands per `batch` request (Bitrix24's limit)


@dataclass(frozen=True, slots=True)
class Bitrix24Settings:
    """`[crm.bitrix24]`, read by the one loader as a sub-section of `[crm]`."""

    auth: Literal["webhook", "oauth"] = "webhook"
    webhook_url_file: Path | None = None
    webhook_url_credential: str = "bitrix24-webhook"
    webhook_url: Secret | None = None  # filled from the two keys above
    portal: str = ""  # oauth: https://<portal>.bitrix24.<zone>
    client_id: str = ""
    client_secret_file: Path | None = None
    client_secret_credential: str = "bitrix24-client-secret"  # noqa: S105 - a credential name
    client_secret: Secret | None = None
    refresh_token_file: Path | None = None
    refresh_token_credential: str = "bitrix24-refresh-token"  # noqa: S105 - a credential name
    refresh_token: Secret | None = None
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    token_state: str = "/var/lib/pbxlink/bitrix24-tokens.json"  # noqa: S105 - a path: the latest tokens
    users: Mapping[str, int] = field(default_factory=dict)  # extension → Bitrix24 user id
    lines: Mapping[str, str] = field(default_factory=dict)  # line (DID) → name
    register_lines: bool = True  # telephony.externalLine.add for [lines] at start
    default_user: str = ""  # inner number owning calls no agent took
    show_card: bool = True  # SHOW=1 at ringing: the agent's call card pops
    register_on_ringing: bool = True
    crm_create: bool = False  # CRM_CREATE=1 when no rule creates a contact for the call
    crm_source: str = "CALL"
    attach_records: bool = True  # telephony.externalCall.attachRecord with the file's bytes
    recordings_dir: Path | None = None  # where relative recording names are
    max_record_bytes: Annotated[int, AtLeast(1)] = 20_000_000
    deal_stage: str = "NEW"
    deal_category: Annotated[int, AtLeast(0)] = 0
    batch_size: Annotated[int, AtLeast(1)] = MAX_BATCH
    rate_limit: float = 2.0  # requests per second (the portal's leaky bucket drains 2/s)
    timeout_seconds: Annotated[int, AtLeast(1)] = 10
    retry_seconds: Annotated[int, AtLeast(1)] = 30
    stale_event_seconds: Annotated[int, AtLeast(1)] = 60
    users_cache_seconds: Annotated[int, AtLeast(1)] = 300
    directory: bool = True  # feed routing's ownership directory from the contacts' responsibles
    directory_seconds: Annotated[int, AtLeast(1)] = 60  # how often changes are fetched
    skip_not_at_work: bool = True  # a responsible whose timeman.status is not OPENED is skipped

    def user_id(self, employee: str | None) -> int | None:
        """The Bitrix24 user of an extension from [users] (or a user id written as text)."""
        if employee is None:
            return None
        if employee in self.users:
            return self.users[employee]
        return next((user for user in self.users.values() if str(user) == employee), None)


def bitrix24_problems(s: Bitrix24Settings, path: str = "crm.bitrix24") -> list[ConfigProblem]:
    """What the types cannot say, checked when `[crm] backend = "bitrix24"` (secrets included)."""
    problems: list[ConfigProblem] = []
    if s.auth == "webhook":
        if s.webhook_url is None:
            problems.append(
                ConfigProblem(
                    f"{path}.webhook_url_file",
                    f"required (or the systemd credential {s.webhook_url_credential})",
                )
            )
        elif (
            not s.webhook_url.reveal().startswith(("https://", "http://"))
            or "/rest/" not in s.webhook_url.reveal()
        ):
            problems.append(
                ConfigProblem(
                    f"{path}.webhook_url_file",
                    "must hold the inbound webhook URL https://<portal>/rest/<user>/<token>/",
                )
            )
    else:
        if not s.portal.startswith(("https://", "http://")):
            problems.append(
                ConfigProblem(f"{path}.portal", "required with auth = oauth, the portal's http(s) URL")
            )
        if not s.client_id:
            problems.append(ConfigProblem(f"{path}.client_id", "required with auth = oauth"))
        for name in ("client_secret", "refresh_token"):
            if getattr(s, name) is None:
                credential = getattr(s, f"{name}_credential")
                problems.append(
                    ConfigProblem(
                        f"{path}.{name}_file", f"required with auth = oauth (or the credential {credential})"
                    )
                )
    for extension, user in s.users.items():
        if user < 1:
            problems.append(ConfigProblem(f"{path}.users.{extension}", "must be a Bitrix24 user id"))
    if s.batch_size > MAX_BATCH:
        problems.append(
            ConfigProblem(f"{path}.batch_size", f"Bitrix24 runs at most {MAX_BATCH} commands per batch")
        )
    if not 0 < s.rate_limit <= 50:
        problems.append(
            ConfigProblem(f"{path}.rate_limit", "requests per second, above 0 (the cloud allows 2)")
        )
    return problems
