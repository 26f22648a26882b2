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
from dataclasses import dataclass
from typing import Any

from pbxlink.rules.settings import SettingsError, _Table


@dataclass(frozen=True, slots=True)
class RetailCrmSettings:
    url: str = ""
    api_key_file: str | None = None
    site: str = ""
    users: tuple[tuple[str, int], ...] = ()
    sites: tuple[tuple[str, str], ...] = ()
    module_code: str = "pbxlink"
    register_module: bool = True
    make_call_url: str | None = None
    call_events: bool = True
    closed_statuses: tuple[str, ...] = ("complete", "cancel-other")
    order_method: str | None = None
    upload_batch: int = 50
    rate_limit: int = 10
    timeout_seconds: int = 10
    retry_seconds: int = 30
    stale_event_seconds: int = 60
    recordings_base_url: str | None = None

    def user_id(self, employee: str | None) -> int | None:
        """The RetailCRM user of an extension (or of a user id written as text)."""
        if employee is None:
            return None
        for extension, user in self.users:
            if extension == employee:
                return user
        for _, user in self.users:
            if str(user) == employee:
                return user
        return None

    def extension_of(self, user_id: int | None) -> str | None:
        return next((ext for ext, user in self.users if user == user_id), None)

    def site_for(self, line: str | None) -> str:
        return next((site for known, site in self.sites if known == line), self.site)


def parse_retailcrm(raw: Mapping[str, Any]) -> RetailCrmSettings:
    """`[crm.retailcrm]` → settings; every problem at once as a `SettingsError`."""
    problems: list[str] = []
    t = _Table(raw, "crm.retailcrm", problems)
    d = RetailCrmSettings()
    url = t.text("url", "").rstrip("/")
    if not url.startswith(("https://", "http://")):
        problems.append("crm.retailcrm.url: required, an http(s) URL of the RetailCRM account")
    site = t.text("site", "")
    if not site:
        problems.append("crm.retailcrm.site: required, the site (store) code")
    users: list[tuple[str, int]] = []
    users_table = t.table("users")
    for extension, value in users_table.raw.items():
        users_table.seen.add(extension)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"crm.retailcrm.users.{extension}: must be a RetailCRM user id (integer)")
            continue
        users.append((str(extension), value))
    sites: list[tuple[str, str]] = []
    sites_table = t.table("sites")
    for line, value in sites_table.raw.items():
        sites_table.seen.add(line)
        if not isinstance(value, str) or not value:
            problems.append(f"crm.retailcrm.sites.{line}: must be a site code")
            continue
        sites.append((str(line), value))
    make_call_url = t.optional_text("make_call_url")
    recordings = t.optional_text("recordings_base_url")
    result = RetailCrmSettings(
        url=url,
        api_key_file=t.optional_text("api_key_file"),
        site=site,
        users=tuple(users),
        sites=tuple(sites),
        module_code=t.text("module_code", d.module_code),
        register_module=t.boolean("register_module", d.register_module),
        make_call_url=make_call_url,
        call_events=t.boolean("call_events", d.call_events),
        closed_statuses=t.texts("closed_statuses") if "closed_statuses" in t.raw else d.closed_statuses,
        order_method=t.optional_text("order_method"),
        upload_batch=min(50, t.integer("upload_batch", d.upload_batch, minimum=1)),
        rate_limit=t.integer("rate_limit", d.rate_limit, minimum=1),
        timeout_seconds=t.integer("timeout_seconds", d.timeout_seconds, minimum=1),
        retry_seconds=t.integer("retry_seconds", d.retry_seconds, minimum=1),
        stale_event_seconds=t.integer("stale_event_seconds", d.stale_event_seconds, minimum=1),
        recordings_base_url=None if recordings is None else recordings.rstrip("/"),
    )
    t.close()
    if problems:
        raise SettingsError(problems)
    return result
