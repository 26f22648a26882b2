"""The one reconnect policy: capped, jittered, reset by success, interruptible by a stop."""

from __future__ import annotations

import asyncio

import pytest

from pbxlink.toolkit.reconnect import Backoff, Reconnect


def test_backoff_doubles_up_to_the_cap_and_jitters_within_half_to_full() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(2, 0.0) == 1.0
    assert backoff.delay(2, 0.999) == pytest.approx(1.999)
    assert backoff.delay(10_000, 0.5) == 3.0  # a huge attempt number neither overflows nor passes the cap


def test_backoff_refuses_a_cap_below_the_initial_delay() -> None:
    with pytest.raises(ValueError, match="initial <= cap"):
        Backoff(5.0, 1.0)


def test_failures_grow_the_delay_and_a_success_starts_over() -> None:
    policy = Reconnect(Backoff(1.0, 8.0), transient=(OSError,), unit_random=lambda: 1.0)
    assert [policy.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    policy.succeeded()
    assert policy.failed() == 1.0
    assert policy.failed(attempt=3) == 8.0  # an explicit exponent (refusals in a row)
    assert policy.failures == 4


def test_only_the_named_errors_are_transient() -> None:
    policy = Reconnect(Backoff(), transient=(ConnectionError, TimeoutError))
    assert policy.is_transient(ConnectionRefusedError())
    assert not policy.is_transient(ValueError("a bug is not retried"))


async def test_a_stop_ends_the_wait_at_once_and_says_so() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await Reconnect.wait(3600.0, stop) is False
    assert await Reconnect.wait(0.0, asyncio.Event()) is True
