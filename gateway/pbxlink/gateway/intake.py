"""The one way into the gateway's outbox: every source hands its requests and dead letters here.

A request is the wire model's :class:`~pbxlink.wire.model.Request` in its envelope, stored (with the
source's new cursor, in the same transaction) before the caller acknowledges its source. A message
that cannot become a request is stored as a dead letter (published on ``gateway.dead_letter_topic``
with the reason) and counted; the caller goes on with the next one. One sender flooding a source
(past ``flood_per_minute``/``flood_burst``) gets dead letters instead of requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from pbxlink.gateway.config import Settings
from pbxlink.gateway.limits import RateLimiter
from pbxlink.gateway.metrics import GatewayMetrics
from pbxlink.gateway.store import GatewayStore
from pbxlink.wire.codec import encode
from pbxlink.wire.instant import Instant
from pbxlink.wire.model import Envelope, Request

__all__ = ["DeadLetter", "Intake"]

log = structlog.get_logger("pbxlink.gateway")

_DEAD_PAYLOAD_MAX = 64 * 1024  # a dead letter keeps this much of the original for a human to read


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    source: str
    kind: str  # too_large | no_sender | malformed_mime | invalid_utf8 | flood | empty
    reason: str
    original: bytes

    def to_json(self, gateway: str, at: datetime) -> bytes:
        head = self.original[:_DEAD_PAYLOAD_MAX]
        try:
            text: str | None = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        document = {
            "schema": 1,
            "gateway": gateway,
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "reason": self.reason,
            "received_at": Instant.of(at).wire(),
            "size": len(self.original),
            "truncated": len(self.original) > _DEAD_PAYLOAD_MAX,
            "payload": text,
            "payload_hex": None if text is not None else head.hex(),
        }
        return json.dumps(document, ensure_ascii=False).encode("utf-8", "backslashreplace")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Intake:
    def __init__(
        self,
        store: GatewayStore,
        settings: Settings,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.stored = asyncio.Event()  # set after every commit: wakes the publisher
        gateway = settings.gateway
        self._flood = RateLimiter(gateway.flood_per_minute, gateway.flood_burst)
        prefix = settings.mqtt.topic_prefix.rstrip("/")
        self.request_topic = f"{prefix}/crm/request"

    def now(self) -> Instant:
        return Instant.of(self.clock())

    def flooding(self, source: str, sender: str) -> bool:
        """True when ``sender`` has sent more than its share to ``source`` lately."""
        return not self._flood.allow(f"{source}\0{sender}", self.monotonic())

    def envelope(self, request: Request) -> bytes:
        wrapped = Envelope.wrap(request, node=self.settings.gateway.name, time=self.now())
        return encode(wrapped)

    async def accept(
        self,
        requests: Sequence[Request],
        dead: Sequence[DeadLetter] = (),
        *,
        cursor: tuple[str, Mapping[str, Any]] | None = None,
        threads: Sequence[tuple[str, str]] = (),
        repaired: Mapping[str, Sequence[str]] | None = None,
    ) -> list[bool]:
        """Store requests and dead letters (and the source's cursor, and Message-ID → request links)
        in one transaction. Returns, per request, whether it was stored as new (False: stored before,
        or a dead letter because it cannot be encoded)."""
        now = self.clock()
        gateway = self.settings.gateway
        asked = list(requests)
        dead = list(dead)
        rows: list[tuple[str, str, bytes, str]] = []
        encodable: list[Request] = []
        for request in requests:
            try:
                rows.append((request.id, self.request_topic, self.envelope(request), request.source))
                encodable.append(request)
            except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\udcff") cannot be UTF-8
                original = repr(request).encode("utf-8", "backslashreplace")
                dead.append(
                    DeadLetter(
                        request.id, request.source, "invalid_utf8", f"not valid Unicode: {exc}", original
                    )
                )
        requests = encodable
        rows += [(d.id, gateway.dead_letter_topic, d.to_json(gateway.name, now), d.source) for d in dead]
        fresh = await self.store.store(rows, now, cursor=cursor, threads=threads)
        self.stored.set()
        for request, new in zip(requests, fresh, strict=False):
            if not new:
                log.info("gateway_request_duplicate", id=request.id, source=request.source)
                continue
            self.metrics.requests.labels(request.source, request.channel.value).inc()
            fixed = (repaired or {}).get(request.id, ())
            if fixed:
                self.metrics.repaired.labels(request.source).inc()
            log.info(
                "gateway_request_stored",
                id=request.id,
                source=request.source,
                channel=request.channel.value,
                sender=request.sender_email or request.sender_phone or request.sender_name,
                subject=request.subject[:80],
                repaired=list(fixed) or None,
            )
        for letter, new in zip(dead, fresh[len(requests) :], strict=False):
            if new:
                self.metrics.dead_letters.labels(letter.source, letter.kind).inc()
                log.warning(
                    "gateway_dead_letter",
                    id=letter.id,
                    source=letter.source,
                    kind=letter.kind,
                    reason=letter.reason,
                    size=len(letter.original),
                )
        stored = {r.id: new for r, new in zip(requests, fresh, strict=False)}
        return [stored.get(r.id, False) for r in asked]
