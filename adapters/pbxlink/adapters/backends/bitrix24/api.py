"""Bitrix24 REST over the shared remote client: methods, `batch`, auth, and its error shapes.

Every request goes through one `RemoteClient` (remote.py): its limiter keeps the portal's
leaky bucket from overflowing (2 requests/s drained; pbxlink never spends the burst, so a
503 `QUERY_LIMIT_EXCEEDED` does not come in steady state), and 503 / 429
`OPERATION_TIME_LIMIT` / 5xx / timeouts are retried with backoff. What is Bitrix24's own:

- **auth**: an inbound webhook's URL is the base URL (its token is in it); an application
  sends `auth=<access token>` with each call and, on 401 `expired_token`, refreshes the token
  pair once at the OAuth server and repeats the call. Refresh tokens rotate: the newest pair
  is kept in `token_state` (mode 0600) so a restart does not reuse a spent one.
- **batch**: up to 50 commands `key → method?query` in one request; a command's parameters
  may name an earlier command's answer (`$result[key][CALL_ID]`). Answers come back per key,
  errors per key in `result_error` ({error, error_description}).
- **errors** `{error, error_description}`: a system error that means "later"
  (QUERY_LIMIT_EXCEEDED, OPERATION_TIME_LIMIT, INTERNAL_SERVER_ERROR, ERROR_UNEXPECTED_ANSWER)
  is transient; every other error is final (`RemoteRejected`, the message is dead-lettered
  with the code and text).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from pbxlink.adapters.backends.bitrix24.settings import MAX_BATCH, Bitrix24Settings
from pbxlink.adapters.backends.remote import RemoteClient, RemotePolicy, RemoteRejected, RemoteUnavailable
from pbxlink.foundation.config import Secret

log = structlog.get_logger()

# System errors that a later attempt may not get (_includes/system-errors.md).
TRANSIENT_ERRORS = frozenset(
    {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"}
)


def describe_error(status: int, body: Any) -> str:
    """`{error, error_description}` as one line for the dead letter."""
    if isinstance(body, dict) and ("error" in body or "error_description" in body):
        code = body.get("error") or "error"
        text = body.get("error_description") or ""
        return f"Bitrix24 {status}: {code}{': ' + text if text else ''}"[:1000]
    return f"Bitrix24 {status}: {str(body)[:200]}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """PHP's bracket notation, as a batch command's query is written: fields[PHONE][0][VALUE]=…"""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            pairs.extend(flatten(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(flatten({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            pairs.append((name, "Y" if value else "N"))
        else:
            pairs.append((name, str(value)))
    return pairs


def command(method: str, params: Mapping[str, Any]) -> str:
    """One batch command: `method?query` (the query URL-encoded once; the batch body encodes it again)."""
    query = urllib.parse.urlencode(flatten(params))
    return f"{method}?{query}" if query else method


@dataclass(frozen=True, slots=True)
class Command:
    key: str
    method: str
    params: Mapping[str, Any]


@dataclass(slots=True)
class BatchAnswer:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (code, description)

    def transient(self) -> dict[str, tuple[str, str]]:
        return {k: e for k, e in self.errors.items() if e[0] in TRANSIENT_ERRORS}


class Bitrix24Api:
    """The portal (see module doc). `client` is owned by the caller."""

    def __init__(
        self, client: RemoteClient, settings: Bitrix24Settings, tokens: TokenStore | None = None
    ) -> None:
        self.client = client
        self.s = settings
        self.tokens = tokens
        self.requests = 0
        self.commands = 0

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> Any:
        """One method; its `result` (raises RemoteRejected / RemoteUnavailable)."""
        answer = await self._post(method, dict(params or {}), idempotent=idempotent)
        self.commands += 1
        return answer.get("result")

    async def batch(
        self, commands: Sequence[Command], *, halt: bool = False, idempotent: bool = True
    ) -> BatchAnswer:
        """Up to 50 commands in one request; a transient error of one command is raised for all."""
        if not commands:
            return BatchAnswer()
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands, got {len(commands)}")
        body = {"halt": 1 if halt else 0, "cmd": {c.key: command(c.method, c.params) for c in commands}}
        answer = await self._post("batch", body, idempotent=idempotent)
        self.commands += len(commands)
        result = answer.get("result") or {}
        out = BatchAnswer(results=dict(result.get("result") or {}))
        for key, error in dict(result.get("result_error") or {}).items():
            if isinstance(error, Mapping):
                out.errors[str(key)] = (
                    str(error.get("error") or ""),
                    str(error.get("error_description") or ""),
                )
        busy = out.transient()
        if busy:
            key, (code, text) = next(iter(busy.items()))
            raise RemoteUnavailable(f"Bitrix24 batch command {key}: {code} {text}")
        return out

    async def _post(self, method: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        self.requests += 1
        if self.tokens is None:
            return await self._checked(method, body, idempotent)
        token = await self.tokens.access()
        try:
            return await self._checked(method, {**body, "auth": token}, idempotent)
        except RemoteRejected as exc:
            if (
                exc.status != 401
                or not isinstance(exc.body, dict)
                or exc.body.get("error") != "expired_token"
            ):
                raise
        await self.tokens.refresh(stale=token)
        self.requests += 1
        return await self._checked(method, {**body, "auth": await self.tokens.access()}, idempotent)

    async def _checked(self, method: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        try:
            return await self.client.post_json(method, body, idempotent=idempotent)
        except RemoteRejected as exc:
            if isinstance(exc.body, dict) and exc.body.get("error") in TRANSIENT_ERRORS:
                raise RemoteUnavailable(exc.reason) from exc
            raise


class TokenStore:
    """A local application's OAuth tokens: the newest pair on disk, refreshed on expiry."""

    def __init__(
        self,
        settings: Bitrix24Settings,
        client_secret: Secret,
        refresh_token: Secret,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.s = settings
        self._secret = client_secret
        self._state = Path(settings.token_state)
        self._access = ""
        self._refresh = refresh_token.reveal()
        self._transport = transport
        self._lock = asyncio.Lock()
        self.refreshes = 0
        if self._state.is_file():
            try:
                saved = json.loads(self._state.read_text())
                self._access = str(saved.get("access_token") or "")
                self._refresh = str(saved.get("refresh_token") or self._refresh)
            except (OSError, ValueError) as exc:
                log.warning("crm.bitrix24.token_state_unreadable", path=str(self._state), error=str(exc))

    async def access(self) -> str:
        if not self._access:
            await self.refresh(stale="")
        return self._access

    async def refresh(self, *, stale: str) -> None:
        """Refresh the pair unless another task (the directory feed, the processor) already
        replaced the `stale` access token: a refresh token is good for one use only."""
        async with self._lock:
            if self._access != stale:
                return
            await self._exchange()

    async def _exchange(self) -> None:
        params = {
            "grant_type": "refresh_token",
            "client_id": self.s.client_id,
            "client_secret": self._secret.reveal(),
            "refresh_token": self._refresh,
        }
        async with httpx.AsyncClient(timeout=self.s.timeout_seconds, transport=self._transport) as http:
            try:
                response = await http.get(self.s.oauth_url, params=params)
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"Bitrix24 OAuth: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise RemoteUnavailable(f"Bitrix24 OAuth: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        if response.status_code >= 400 or not isinstance(body, dict) or "access_token" not in body:
            raise RemoteRejected(response.status_code, describe_error(response.status_code, body), body)
        self._access = str(body["access_token"])
        self._refresh = str(body.get("refresh_token") or self._refresh)
        self.refreshes += 1
        self._save()
        log.info("crm.bitrix24.token_refreshed")

    def _save(self) -> None:
        try:
            self._state.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._state.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"access_token": self._access, "refresh_token": self._refresh}, out)
            temporary.replace(self._state)
        except OSError as exc:
            log.error("crm.bitrix24.token_state_not_saved", path=str(self._state), error=str(exc))


def policy_of(s: Bitrix24Settings) -> RemotePolicy:
    return RemotePolicy(
        rate_per_second=s.rate_limit,
        read_timeout=float(s.timeout_seconds),
        retry_budget_seconds=float(s.retry_seconds),
    )


def open_client(s: Bitrix24Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> RemoteClient:
    """The HTTP client of the portal: the webhook URL, or the portal's /rest/ for an application."""
    if s.auth == "webhook":
        assert s.webhook_url is not None
        base = s.webhook_url.reveal().rstrip("/") + "/"
    else:
        base = s.portal.rstrip("/") + "/rest/"
    return RemoteClient(
        base, name="bitrix24", policy=policy_of(s), describe_error=describe_error, transport=transport
    )
