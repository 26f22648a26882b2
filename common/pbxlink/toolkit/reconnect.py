"""The one reconnect policy: capped exponential backoff with jitter on named transient errors.

Every long-lived connection (MQTT publisher, directory feed, CRM adapter consumer, AMI shell)
runs the same loop shape::

    policy = Reconnect(Backoff(0.5, 30.0), transient=MQTT_TRANSIENT)
    while True:
        try:
            async with connect() as link:
                policy.succeeded()
                ...
        except policy.transient as exc:
            delay = policy.failed()
            log.warning("..._reconnect_wait", retry_in=delay, error=str(exc))
        if not await policy.wait(delay, stop):   # False when `stop` was set while waiting
            break

Why one small class and not stamina/tenacity (docs/layout.md): those retry a *call* a bounded
number of times; these loops run forever until shutdown, reset after a good connection, must be
interruptible by a shutdown event while they wait, and the publisher grows the delay on refused
publishes although its connects succeed. Jitter is "equal jitter": attempt n waits a uniformly
drawn time in [d/2, d] with d = min(cap, initial * 2**n), so a fleet restarting together spreads
out yet never retries sooner than half the nominal delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Backoff", "Reconnect"]

_MAX_EXPONENT: Final = 32


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, initial·2ⁿ)."""

    initial: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not self.initial > 0 or self.cap < self.initial:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {self.initial} and {self.cap}")

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.initial * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int, unit_random: float) -> float:
        """The wait before retry number ``attempt`` (0-based); ``unit_random`` is in [0, 1)."""
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + ceiling / 2 * unit_random


class Reconnect:
    """The state of one reconnect loop: how many failures in a row, and the next wait.

    ``transient`` names the errors the loop retries on; anything else ends the loop (a bug or a
    configuration problem must not be retried forever).
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        transient: tuple[type[BaseException], ...],
        unit_random: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = backoff
        self.transient = transient
        self._random = unit_random
        self.failures = 0  # failures since the last success: the next attempt's exponent

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, self.transient)

    def succeeded(self) -> None:
        """A connection came up: the next failure starts from the initial delay again."""
        self.failures = 0

    def failed(self, *, attempt: int | None = None) -> float:
        """Count a failure and return the delay to wait before the next attempt.

        ``attempt`` overrides the exponent (the publisher keeps growing it over refusals).
        """
        exponent = self.failures if attempt is None else attempt
        self.failures = exponent + 1
        return self.backoff.delay(exponent, self._random())

    @staticmethod
    async def wait(delay: float, stop: asyncio.Event | None = None) -> bool:
        """Wait ``delay`` seconds; return False (at once) when ``stop`` is set meanwhile."""
        if stop is None:
            await asyncio.sleep(delay)
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        return not stop.is_set()
