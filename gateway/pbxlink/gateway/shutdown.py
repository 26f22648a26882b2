"""Waiting on the network without delaying shutdown (a long poll or an IDLE can last minutes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["unless_stopped"]

T = TypeVar("T")


async def unless_stopped(coro: Coroutine[Any, Any, T], stop: asyncio.Event, *, name: str) -> T | None:
    """``await coro``, unless ``stop`` is set first: then ``coro`` is cancelled and None returned.

    Only network waits go through here; database writes are never cancelled half-way.
    """
    work = asyncio.create_task(coro, name=name)
    waiter = asyncio.create_task(stop.wait(), name=f"{name}:stop")
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        return None
    return work.result()
