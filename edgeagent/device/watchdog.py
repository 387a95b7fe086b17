"""The systemd watchdog: ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2``, sent from the event loop.

    interval = watchdog_interval()                  # seconds, or None when systemd wants no pings
    dog = Watchdog(notifier, interval); dog.start() # in the running loop
    ...
    await dog.aclose()

The pings are timer callbacks of the agent's own asyncio loop, not of a thread: when
the loop is blocked (a hang, a deadlock, CPU work that should have gone to a worker
thread) the pings stop, and after ``WatchdogSec=`` systemd kills and restarts the
service. ``healthy`` (optional) is asked before each ping: False skips it, so a
part of the agent that is stuck without blocking the loop can also stop the pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping

from edgeagent.device.notify import Notifier

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds that systemd asks for (``WATCHDOG_USEC``), or None.

    As sd_watchdog_enabled(3): ``WATCHDOG_PID``, when set, must be this process.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    try:
        timeout = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number: no watchdog pings", usec)
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process
    return timeout / 1e6 if timeout > 0 else None


class Watchdog:
    """Pings ``notifier`` every ``timeout / 2`` seconds from the event loop; see the module docs."""

    def __init__(self, notifier: Notifier, timeout: float, healthy: Callable[[], bool] | None = None) -> None:
        if timeout <= 0:
            raise ValueError("the watchdog timeout must be positive")
        self.notifier = notifier
        self.timeout = timeout
        self.interval = timeout / 2
        self.healthy = healthy
        self.pings = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Ping now and then every :attr:`interval` (call in the running loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            log.info("watchdog: pinging every %.1f s (timeout %.1f s)", self.interval, self.timeout)

    async def _run(self) -> None:
        while True:
            if self.healthy is None or self.healthy():
                if self.notifier.watchdog():
                    self.pings += 1
            else:
                log.warning("watchdog: not healthy, ping skipped")
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
