"""Routing's live owner look-up: RetailCRM's `GET /api/v5/telephony/manager` inside the AGI deadline.

The ownership directory (fed by the adapter from RetailCRM's customers) answers from memory but
does not know whether a manager is free right now. With `[live_owner] enabled`, each routed call
first asks RetailCRM who the caller's manager is (`phone`, `details=1`, `ignoreStatus`): with
`ignore_status = false` RetailCRM names the manager only when their status is free, so a busy or
away manager is skipped and the call takes its normal route. The answer (an owner, "known but no
free manager", or "unknown") is cached for `cache_seconds`. If RetailCRM does not answer within
`timeout_ms` (kept below `agi.deadline_ms`), or answers with an error, the directory decides, as
without the look-up: a slow CRM never delays a call past the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import phonenumbers
import structlog

from pbxlink.foundation.config import AtLeast, Secret
from pbxlink.foundation.errors import ConfigProblem
from pbxlink.routing.model import DirectoryView, RoutingEntry
from pbxlink.wire.model import Responsible

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LiveOwnerSettings:
    """`[live_owner]`: ask RetailCRM for the caller's free manager while the call waits."""

    enabled: bool = False
    url: str = ""  # https://<account>.retailcrm.ru
    api_key_file: Path | None = None
    api_key_credential: str = "retailcrm-api-key"
    api_key: Secret | None = None  # filled from the two keys above
    ignore_status: bool = False  # true: route to the manager whatever their RetailCRM status
    timeout_ms: Annotated[int, AtLeast(10)] = 150  # below agi.deadline_ms
    cache_seconds: Annotated[int, AtLeast(0)] = 30


def live_owner_problems(s: LiveOwnerSettings, deadline_ms: float) -> list[ConfigProblem]:
    if not s.enabled:
        return []
    problems = []
    if not s.url.startswith(("https://", "http://")):
        problems.append(ConfigProblem("live_owner.url", "required, the RetailCRM account's http(s) URL"))
    if s.api_key is None:
        problems.append(
            ConfigProblem(
                "live_owner.api_key_file", f"required (or the systemd credential {s.api_key_credential!r})"
            )
        )
    if s.timeout_ms >= deadline_ms:
        problems.append(
            ConfigProblem("live_owner.timeout_ms", f"must be below agi.deadline_ms ({deadline_ms:g})")
        )
    return problems


class LiveLookupFailed(Exception):
    """RetailCRM did not answer in time or answered with an error: the directory decides."""


def entry_from_answer(answer: dict[str, Any]) -> RoutingEntry | None:
    """RetailCRM's answer → what routing needs: the manager's extension (`code`) as the owner,
    "a customer without a (free) manager", or None for an unknown number (pure)."""
    manager = answer.get("manager")
    if isinstance(manager, dict) and manager.get("code"):
        code = str(manager["code"])
        owner = (Responsible(employee=code, extension=code),)
        return RoutingEntry(employee=None, first=owner, newest=owner, clients=1)
    if isinstance(answer.get("customer"), dict):
        return RoutingEntry(employee=None, first=(), newest=(), clients=1)
    return None


class LiveOwners:
    """The look-up with its cache; one HTTP client (connection reuse) for the daemon's life."""

    def __init__(
        self,
        settings: LiveOwnerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.api_key is not None, "checked by live_owner_problems"
        self.s = settings
        self.clock = clock
        self._cache: dict[str, tuple[float, RoutingEntry | None]] = {}
        self._http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            headers={"X-API-KEY": settings.api_key.reveal()},
            timeout=settings.timeout_ms / 1000,
            transport=transport,
        )
        self.requests = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def lookup(self, e164: str) -> RoutingEntry | None:
        """The caller's routing entry by RetailCRM now (raises LiveLookupFailed)."""
        now = self.clock()
        cached = self._cache.get(e164)
        if cached is not None and now - cached[0] < self.s.cache_seconds:
            return cached[1]
        # A number is found as people typed it (+380501110001 or 0501110001): ask in both forms
        # at once, within the one timeout, and keep the most telling answer.
        try:
            async with asyncio.timeout(self.s.timeout_ms / 1000):
                answers = await asyncio.gather(*(self._ask(form) for form in _forms(e164)))
        except TimeoutError as exc:
            log.warning("live_owner_failed", error="timeout")
            raise LiveLookupFailed("timeout") from exc
        entries = [entry_from_answer(a) for a in answers]
        entry = next((e for e in entries if e is not None and e.first), None) or next(
            (e for e in entries if e is not None), None
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[e164] = (now, entry)
        return entry

    async def _ask(self, phone: str) -> dict[str, Any]:
        params = {"phone": phone, "details": "1", "ignoreStatus": "1" if self.s.ignore_status else "0"}
        self.requests += 1
        try:
            response = await self._http.get("/api/v5/telephony/manager", params=params)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("live_owner_failed", error=type(exc).__name__)
            raise LiveLookupFailed(type(exc).__name__) from exc
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("success"):
            log.warning("live_owner_failed", status=response.status_code)
            raise LiveLookupFailed(f"HTTP {response.status_code}")
        return answer


def _forms(e164: str) -> tuple[str, ...]:
    """The E.164 form and the national one (digits only), as a person may have typed it."""
    try:
        national = phonenumbers.format_number(
            phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        return (e164,)
    return tuple(dict.fromkeys((e164, "".join(ch for ch in national if ch.isdigit()))))


class LiveOverlay:
    """The directory, with the live answer for one number laid over it."""

    def __init__(self, base: DirectoryView, e164: str, entry: RoutingEntry | None) -> None:
        self.base = base
        self.e164 = e164
        self.entry = entry

    def lookup(self, e164: str) -> RoutingEntry | None:
        return self.entry if e164 == self.e164 else self.base.lookup(e164)
