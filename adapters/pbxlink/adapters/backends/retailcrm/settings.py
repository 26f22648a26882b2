"""`[crm.retailcrm]`: where the RetailCRM account is and how pbxlink's numbers map onto it.

```toml
[crm]
backend = "retailcrm"
[crm.retailcrm]
url = "https://shop.retailcrm.ru"      # the account's address
api_key_file = "/etc/pbxlink/retailcrm-api-key"   # else $CREDENTIALS_DIRECTORY/retailcrm-api-key
site = "main"                          # the store (site code) for numbers not in [sites]
module_code = "pbxlink"                # the telephony integration module's code
register_module = true                 # register/update it at start (additionalCodes, externalPhones)
call_events = true                     # live popups: telephony/call/event on ringing and hangup
closed_statuses = ["complete", "cancel-other"]   # orders in these statuses are not open
upload_batch = 50                      # calls per telephony/calls/upload
rate_limit = 10                        # requests per second (the account's quota)
[crm.retailcrm.users]                  # extension → RetailCRM user id (additionalCodes)
"101" = 27
[crm.retailcrm.sites]                  # called line (DID) → site code (externalPhones)
"4930100200" = "shop-de"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pbxlink.foundation.config import AtLeast, NonEmpty, parse_section
from pbxlink.foundation.errors import ConfigError, ConfigProblem


@dataclass(frozen=True, slots=True)
class RetailCrmSettings:
    url: Annotated[str, NonEmpty()] = ""
    api_key_file: Path | None = None
    api_key_credential: str = "retailcrm-api-key"
    site: Annotated[str, NonEmpty()] = ""
    users: Mapping[str, int] = field(default_factory=dict)  # extension → RetailCRM user id
    sites: Mapping[str, str] = field(default_factory=dict)  # called line (DID) → site code
    module_code: Annotated[str, NonEmpty()] = "pbxlink"
    register_module: bool = True
    make_call_url: str | None = None
    call_events: bool = True
    closed_statuses: tuple[str, ...] = ("complete", "cancel-other")
    order_method: str | None = None
    upload_batch: Annotated[int, AtLeast(1)] = 50
    rate_limit: Annotated[int, AtLeast(1)] = 10
    timeout_seconds: Annotated[int, AtLeast(1)] = 10
    retry_seconds: Annotated[int, AtLeast(1)] = 30
    stale_event_seconds: Annotated[int, AtLeast(1)] = 60
    recordings_base_url: str | None = None
    directory: bool = True  # feed routing's ownership directory from the customers' managers
    directory_seconds: Annotated[int, AtLeast(1)] = 60  # how often changes are fetched

    def user_id(self, employee: str | None) -> int | None:
        """The RetailCRM user of an extension (or of a user id written as text)."""
        if employee is None:
            return None
        if employee in self.users:
            return self.users[employee]
        return next((user for user in self.users.values() if str(user) == employee), None)

    def extension_of(self, user_id: int | None) -> str | None:
        return next((ext for ext, user in self.users.items() if user == user_id), None)

    def site_for(self, line: str | None) -> str:
        return self.sites.get(line or "", self.site)


def parse_retailcrm(raw: Mapping[str, Any]) -> RetailCrmSettings:
    """`[crm.retailcrm]` → settings by the one config parser; every problem at once (ConfigError)."""
    problems: list[ConfigProblem] = []
    parsed = parse_section(RetailCrmSettings, raw, "crm.retailcrm", problems)
    if parsed is not None:
        if not parsed.url.startswith(("https://", "http://")):
            problems.append(
                ConfigProblem("crm.retailcrm.url", "required, an http(s) URL of the RetailCRM account")
            )
        if not parsed.site:
            problems.append(ConfigProblem("crm.retailcrm.site", "required, the site (store) code"))
        for extension, user in parsed.users.items():
            if user < 1:
                problems.append(
                    ConfigProblem(f"crm.retailcrm.users.{extension}", "must be a RetailCRM user id")
                )
        if parsed.upload_batch > 50:
            problems.append(
                ConfigProblem("crm.retailcrm.upload_batch", "RetailCRM takes at most 50 calls per upload")
            )
    if problems or parsed is None:
        raise ConfigError(problems)
    return RetailCrmSettings(
        **{
            **{f: getattr(parsed, f) for f in parsed.__dataclass_fields__},
            "url": parsed.url.rstrip("/"),
            "recordings_base_url": None
            if parsed.recordings_base_url is None
            else parsed.recordings_base_url.rstrip("/"),
        }
    )
