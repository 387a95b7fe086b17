"""``livekit.mode = "worker+local"``: the agent on the local mic and speaker while no job runs.

    local = LocalAgent(models, lambda: store.config, life)   # the config in effect at each resume
    local.resume()            # between jobs: the agent of `edgeagent run` on the [audio] devices
    await local.pause()       # a job starts: the devices are closed (the job's room+local session opens them)

The local agent is the one of ``edgeagent run`` (:func:`edgeagent.local_job.run_local`: the wake
word as configured, echo cancellation, barge-in). A job takes the devices over: its
session is the room+local one of :func:`edgeagent.room.job.run_room`, so the local mic
and speaker keep working during the job, now in the room too. Devices that do not open
are one line; the worker goes on without them and tries again after the next job. Each
start reads the config in effect then (remote changes, a reloaded config file). With a
serving :class:`~edgeagent.device.lifecycle.Lifecycle`, the LED, buttons and ``STATUS=``
follow the local session while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgeagent.aio import wait_for
from edgeagent.errors import EdgeAgentError

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 20.0


class LocalAgent:
    """See the module docs."""

    def __init__(self, models: Models, config: Callable[[], Config], life: Lifecycle | None = None) -> None:
        self.models, self.config, self.life = models, config, life
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def resume(self) -> None:
        """Start the local agent (nothing when it runs, or after :meth:`aclose`)."""
        if not self.running and not self._closed:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stop), name="worker-local")

    async def pause(self) -> None:
        """Stop the local agent and wait until its devices are closed."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("worker: the local agent did not stop within %.0f s", CLOSE_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, stop: asyncio.Event) -> None:
        from edgeagent.local_job import run_local

        try:
            await run_local(self.models, self.config(), stop, None, None, fast=False, fallback=False, life=self.life)
        except EdgeAgentError as exc:
            log.error("worker: the local mic or speaker did not open (%s); the worker goes on without them "
                      "until the next job ends", exc)
        except Exception:
            log.exception("worker: the local agent failed; it starts again after the next job")
        finally:
            if self.life is not None:
                self.life.unfollow()

    async def aclose(self) -> None:
        """Stop it for good: :meth:`resume` does nothing after this."""
        self._closed = True
        await self.pause()
