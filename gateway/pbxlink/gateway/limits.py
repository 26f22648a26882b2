"""Token buckets: a web source's rate limit and the flood limit per sender (pure; time is an input)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    """``per_minute`` requests a minute per key, ``burst`` at once. Keys idle long enough to be
    full again are forgotten, so a flood of distinct keys cannot grow it without bound."""

    per_minute: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` at monotonic time ``now``; False when there is none."""
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if len(self._buckets) > 10000:
            self._forget_full(now)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again."""
        bucket = self._buckets.get(key)
        missing = 0.0 if bucket is None else max(0.0, 1.0 - bucket.tokens)
        return missing * 60.0 / self.per_minute

    def _forget_full(self, now: float) -> None:
        rate = self.per_minute / 60.0
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * rate >= self.burst]
        for key in full:
            del self._buckets[key]
