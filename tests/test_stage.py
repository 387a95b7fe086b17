"""The inference thread's bookkeeping (no model needed)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from edgeagent.stage import InferenceThread


async def test_a_cancelled_callers_job_counts_as_busy_until_it_ends() -> None:
    """Cancelling the caller does not stop a job that runs on the thread: work that waits for an
    idle thread must still see it busy until the job itself has ended."""
    thread = InferenceThread("test-busy")
    started, release = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        release.wait(10)

    try:
        caller = asyncio.ensure_future(thread.run(job))
        assert await asyncio.to_thread(started.wait, 10)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        assert caller.cancelled()
        await asyncio.sleep(0.05)
        assert thread.busy  # the job still runs
        release.set()
        for _ in range(200):
            if not thread.busy:
                break
            await asyncio.sleep(0.01)
        assert not thread.busy
    finally:
        release.set()
        thread.shutdown()


async def test_busy_counts_queued_jobs_and_clears_after_them() -> None:
    thread = InferenceThread("test-queue")
    release = threading.Event()
    try:
        first = asyncio.ensure_future(thread.run(release.wait, 10))
        second = asyncio.ensure_future(thread.run(lambda: 42))
        await asyncio.sleep(0)
        assert thread.busy
        release.set()
        assert await second == 42 and await first is True
        assert not thread.busy
    finally:
        release.set()
        thread.shutdown()


def test_the_thread_starts_with_the_stage() -> None:
    """Not at its first job: a thread that starts at some turn of a long run reads as a leak
    (scripts/soak counts the process's threads; the Smart Turn stage's came at a random step)."""
    thread = InferenceThread("test-eager")
    try:
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith("test-eager") for n in names), names
        assert not thread.busy
    finally:
        thread.shutdown()
