"""A bounded await that never loses a cancellation: :func:`wait_for`.

``asyncio.wait_for`` before Python 3.12 swallows a cancellation that arrives in the same
loop turn as the awaited result: it sees the result ready and returns it, and the task that
was told to stop carries on. A task that loops on a short ``wait_for`` (the room's 10 ms
audio pacer, a frame reader, a poll) is sooner or later cancelled at exactly that moment
and then never ends; whoever awaits its end (a shutdown) waits for ever. This was seen:
``edgeagent join`` hung after SIGTERM in about 1 of 6 runs, its ``room-out`` pacer
"cancelling" but idle (tests/test_room_job.py).

Python 3.12 rebuilt ``asyncio.wait_for`` on ``asyncio.timeout``, which keeps the
cancellation; 3.11 has ``asyncio.timeout`` itself; 3.10 gets an equivalent built on
``asyncio.wait``. Every bounded await in ``edgeagent`` goes through :func:`wait_for`
(ruff bans ``asyncio.wait_for`` outside this module).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw`` for at most ``timeout`` seconds (None: no limit); on time-out ``aw`` is
    cancelled and :class:`TimeoutError` raised. A cancellation of the caller always
    propagates, even when ``aw`` finished in the same loop turn."""
    if sys.version_info >= (3, 12):
        return await asyncio.wait_for(aw, timeout)  # noqa: TID251 - correct from 3.12 on
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await aw
    return await _wait_for_310(aw, timeout)


async def _wait_for_310(aw: Awaitable[T], timeout: float | None) -> T:
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        await asyncio.wait({fut})  # let it finish its cancellation, as asyncio.wait_for does
        raise asyncio.TimeoutError
    return fut.result()


async def until_first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set (the waits on the others are cancelled)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def exit_status(failed: asyncio.Event, stop: asyncio.Event, error: object) -> int:
    """1 (with ``error`` on stderr) when ``failed`` ended a run that ``stop`` did not, else 0."""
    if failed.is_set() and not stop.is_set():
        print(f"edgeagent: {error}", file=sys.stderr)
        return 1
    return 0
