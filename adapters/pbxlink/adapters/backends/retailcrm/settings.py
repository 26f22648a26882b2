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
from typing import Annotated

from pbxlink.foundation.config import AtLeast, Secret
from pbxlink.foundation.errors import ConfigProblem


@dataclass(frozen=True, slots=True)
class RetailCrmSettings:
    """`[crm.retailcrm]`, read by the one loader as a sub-section of `[crm]`."""

    url: str = ""  # required with backend = "retailcrm": https://<account>.retailcrm.ru
    api_key_file: Path | None = None
    api_key_credential: str = "retailcrm-api-key"
    api_key: Secret | None = None  # filled from the two keys above
    site: str = ""  # required: the site (store) code for lines not in [sites]
    users: Mapping[str, int] = field(default_factory=dict)  # extension → RetailCRM user id
    sites: Mapping[str, str] = field(default_factory=dict)  # called line (DID) → site code
    module_code: str = "pbxlink"
    register_module: bool = True
    make_call_url: str | None = (
        None  # click-to-call: pbxlink's [click_to_call] endpoint, as RetailCRM reaches it
    )
    client_id_file: Path | None = None  # the module's clientId: the secret [click_to_call] checks
    client_id_credential: str = "retailcrm-client-id"
    client_id: Secret | None = None  # filled from the two keys above
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

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

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


def retailcrm_problems(s: RetailCrmSettings, path: str = "crm.retailcrm") -> list[ConfigProblem]:
    """What the types cannot say, checked when `[crm] backend = "retailcrm"`."""
    problems: list[ConfigProblem] = []
    if not s.url.startswith(("https://", "http://")):
        problems.append(ConfigProblem(f"{path}.url", "required, an http(s) URL of the RetailCRM account"))
    if not s.site:
        problems.append(ConfigProblem(f"{path}.site", "required, the site (store) code"))
    for extension, user in s.users.items():
        if user < 1:
            problems.append(ConfigProblem(f"{path}.users.{extension}", "must be a RetailCRM user id"))
    if s.make_call_url and s.client_id is None:
        problems.append(
            ConfigProblem(
                f"{path}.client_id_file",
                "required with make_call_url: the secret RetailCRM sends back as clientId "
                f"(or the systemd credential {s.client_id_credential!r})",
            )
        )
    if s.upload_batch > 50:
        problems.append(ConfigProblem(f"{path}.upload_batch", "RetailCRM takes at most 50 calls per upload"))
    return problems
