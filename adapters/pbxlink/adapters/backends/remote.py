"""The HTTP half of the remote-backend contract: how every real CRM is called.

RetailCRM settled it; Bitrix24 and the signed webhook use it as is. A backend builds one
`RemoteClient` with its `RemotePolicy` and a `describe_error` for its error bodies, then only
calls `get` / `post_form` / `post_json`. What the client guarantees:

- **Rate limit**: a client-side limiter (aiolimiter's leaky bucket, no burst) keeps requests
  at `rate_per_second` (the CRM's documented quota) times `headroom` (0.95: network jitter
  bunches requests up on their way, and the server counts arrivals); every attempt, retries
  included, waits for its slot. One limiter per client, so one per CRM account. A 503 that
  still comes is retried like any other.
- **Transient failures are retried** with exponential backoff and jitter (stamina): HTTP 503,
  429, 502, 504, other 5xx, timeouts, refused or reset connections. `Retry-After` is not
  trusted further than `backoff_max`. Retries stop after `attempts` or `retry_budget_seconds`;
  then `RemoteUnavailable` is raised: the CRM is down, the work must stay pending (the
  processor keeps the message, does not count an attempt and tries again later).
- **A write that is not idempotent is not re-sent blindly**: `idempotent=False` (e.g. a
  RetailCRM task, which has no externalId) is retried only when the request surely did not
  reach the CRM (connect errors, 503/429: refused before any work). A timeout after sending
  raises `RemoteAmbiguous` (a `RemoteUnavailable`) at once: the message stays pending and in
  flight, and its next attempt asks the CRM whether the write happened (ledger `find`).
- **A 4xx is final**: `RemoteRejected(status, reason)`, the reason built by the backend's
  `describe_error` from the CRM's error body. The processor dead-letters the message with that
  reason at once; retrying would get the same answer.
- **Connections** are reused (one httpx.AsyncClient, keep-alive) with separate connect/read
  timeouts.

The other half, making every write happen once across crashes and redeliveries, is
`pbxlink.adapters.backends.ledger`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import stamina
import structlog
from aiolimiter import AsyncLimiter

log = structlog.get_logger()

Answer = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RemotePolicy:
    rate_per_second: float = 10.0
    headroom: float = 0.95
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    attempts: int = 8
    retry_budget_seconds: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 5.0


class RemoteError(Exception):
    """A remote CRM call that did not succeed."""


class RemoteRejected(RemoteError):
    """The CRM refused the request (4xx): final, dead-letter the message with `reason`."""

    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body


class RemoteUnavailable(RemoteError):
    """The CRM stayed unreachable or overloaded through every retry: keep the work pending."""


class RemoteAmbiguous(RemoteUnavailable):
    """A non-idempotent write timed out after it was sent: it may or may not have happened."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""


# Failures where the request never reached the server: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def default_describe_error(status: int, body: Any) -> str:
    return f"HTTP {status}: {body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)}"[:1000]


@dataclass(slots=True)
class ClientCounters:
    requests: int = 0
    retries: int = 0
    rejected: int = 0


class RemoteClient:
    """One CRM account over HTTP: limiter + retries + error classification (see module doc)."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        policy: RemotePolicy = RemotePolicy(),
        describe_error: Callable[[int, Any], str] = default_describe_error,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.describe_error = describe_error
        self.counters = ClientCounters()
        # No burst: one request per 1/rate seconds, so a sliding one-second window on the
        # server never sees more than the quota.
        self._limiter = AsyncLimiter(1, 1.0 / (policy.rate_per_second * policy.headroom))
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> Answer:
        return await self.request("GET", path, params=params)

    async def post_form(self, path: str, fields: Mapping[str, Any], *, idempotent: bool = True) -> Answer:
        """POST application/x-www-form-urlencoded; dict/list values are sent as JSON text."""
        data = {
            k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
            for k, v in fields.items()
            if v is not None
        }
        return await self.request("POST", path, idempotent=idempotent, data=data)

    async def post_json(self, path: str, document: Any, *, idempotent: bool = True) -> Answer:
        return await self.request("POST", path, idempotent=idempotent, json=document)

    async def request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Answer:
        p = self.policy
        first = True
        try:
            async for attempt in stamina.retry_context(
                on=_Transient,
                attempts=p.attempts,
                timeout=p.retry_budget_seconds,
                wait_initial=p.backoff_initial,
                wait_max=p.backoff_max,
            ):
                with attempt:
                    if not first:
                        self.counters.retries += 1
                    first = False
                    return await self._once(method, path, idempotent, **kwargs)
        except _Transient as exc:
            raise RemoteUnavailable(f"{self.name} {method} {path}: {exc} (gave up after retries)") from exc
        raise AssertionError("unreachable: retry_context yields at least one attempt")

    async def _once(self, method: str, path: str, idempotent: bool, **kwargs: Any) -> Answer:
        async with self._limiter:
            self.counters.requests += 1
            try:
                response = await self._http.request(method, path, **kwargs)
            except _NOT_SENT as exc:
                log.warning("crm_remote_transient", crm=self.name, path=path, error=type(exc).__name__)
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if not idempotent:
                    log.warning("crm_remote_ambiguous", crm=self.name, path=path, error=type(exc).__name__)
                    raise RemoteAmbiguous(
                        f"{self.name} {method} {path}: {type(exc).__name__} after sending; "
                        "checked before the next attempt"
                    ) from exc
                log.warning("crm_remote_transient", crm=self.name, path=path, error=type(exc).__name__)
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status in _RETRIED_STATUSES or status >= 500:
            log.warning("crm_remote_transient", crm=self.name, path=path, status=status)
            raise _Transient(f"HTTP {status}")
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:500]
        if status >= 400:
            self.counters.rejected += 1
            raise RemoteRejected(status, self.describe_error(status, body), body)
        if not isinstance(body, dict):
            raise RemoteRejected(
                status, f"{self.name} {path}: answer is not a JSON object: {body!r}"[:1000], body
            )
        return body
