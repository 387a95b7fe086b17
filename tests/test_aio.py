"""edgeagent.aio.wait_for keeps a cancellation that meets the awaited result in one loop turn
(asyncio.wait_for before 3.12 drops it: the cause of a hung `edgeagent join` shutdown)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edgeagent.aio import wait_for


async def _cancel_as_the_result_arrives(bounded: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> str:
    """How a task ends that is cancelled in the loop turn its bounded await gets its result."""
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    carried_on = asyncio.Event()

    async def body() -> None:
        await bounded(inner, 5)
        carried_on.set()  # the cancellation was lost
        await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # the task now waits on inner
    inner.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        return "carried on" if carried_on.is_set() else "stuck"
    return "cancelled" if task.cancelled() else "ended"


async def test_a_cancellation_that_meets_the_result_is_kept() -> None:
    assert await _cancel_as_the_result_arrives(wait_for) == "cancelled"


async def test_control_asyncio_wait_for_loses_it_before_3_12() -> None:
    expected = "carried on" if sys.version_info < (3, 12) else "cancelled"
    assert await _cancel_as_the_result_arrives(asyncio.wait_for) == expected


async def test_a_result_in_time_and_a_time_out() -> None:
    assert await wait_for(asyncio.sleep(0.01, "ok"), 1) == "ok"
    slow = asyncio.ensure_future(asyncio.sleep(10))
    with pytest.raises(asyncio.TimeoutError):
        await wait_for(slow, 0.05)
    assert slow.cancelled()  # the awaited work is cancelled on a time-out, as before
    assert await wait_for(asyncio.sleep(0, 3), None) == 3
