"""The webhook signature: `X-Pbxlink-Signature: t=<unix time>,v1=<hex>[,v1=<hex>]` (pure).

v1 = HMAC-SHA256(secret, "<t>." + body) in lowercase hex. While a secret is rotated, one v1 per
secret is sent (the new one first); a receiver accepts the request if any v1 matches a secret it
holds and `t` is within its replay window (docs/webhook.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "X-Pbxlink-Signature"
REPLAY_WINDOW_SECONDS = 300


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def header(secrets: Sequence[bytes], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets)])


def verify(
    value: str, body: bytes, secrets: Sequence[bytes], now: int, window: int = REPLAY_WINDOW_SECONDS
) -> bool:
    """What a receiver does: a v1 matching one of its secrets, and a timestamp within the window."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isdigit():
            timestamp = int(item)
        elif key == "v1":
            candidates.append(item)
    if timestamp is None or abs(now - timestamp) > window:
        return False
    expected = [signature(s, timestamp, body) for s in secrets]
    return any(hmac.compare_digest(c, e) for c in candidates for e in expected)
