"""Which provider goes first: the policies, and the connectivity check ``cloud-when-online`` uses.

- ``local-first``: the board's own models; cloud providers only when a local one fails.
- ``cloud-first``: cloud providers first; the local ones catch every failure or stall.
- ``cloud-when-online``: cloud first while the connectivity check says the network is
  up, local only (no deadline spent on a dead link) while it says it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from edgeagent.aio import wait_for

log = logging.getLogger(__name__)

POLICIES = ("local-first", "cloud-first", "cloud-when-online")


def check_policy(policy: str) -> str | None:
    """A problem with ``policy``, or None."""
    if policy not in POLICIES:
        return f"cloud.policy: expected one of {', '.join(POLICIES)}, got {policy!r}"
    return None


def cloud_goes_first(policy: str, online: bool) -> bool:
    """Whether cloud providers are tried before local ones now."""
    if policy == "cloud-first":
        return True
    if policy == "cloud-when-online":
        return online
    return False


def host_port(url: str) -> tuple[str, int]:
    """The host and port a URL connects to (http/ws: 80, https/wss: 443 by default)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if parts.scheme in ("https", "wss") else 80
    return parts.hostname, parts.port or default


class Connectivity:
    """Is the cloud reachable? A TCP connect to ``url``'s host, repeated every ``interval_s``.

    :attr:`online` is the last answer (None before the first check ends). A DNS
    failure, a refused or timed-out connect all count as offline. Listeners get
    every change.
    """

    def __init__(self, url: str, *, interval_s: float = 10.0, timeout_s: float = 2.0) -> None:
        self.host, self.port = host_port(url)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.online: bool | None = None
        self.checked_at: float | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on_change(self, callback: Callable[[bool], None]) -> None:
        self._listeners.append(callback)

    async def check(self) -> bool:
        """Check now; returns (and records) the answer."""
        try:
            _, writer = await wait_for(asyncio.open_connection(self.host, self.port), self.timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            up = False
            log.debug("connectivity %s:%d: %r", self.host, self.port, exc)
        else:
            up = True
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        changed = up != self.online
        self.online, self.checked_at = up, time.monotonic()
        if changed:
            log.info("cloud %s:%d is %s", self.host, self.port, "reachable" if up else "unreachable")
            for cb in list(self._listeners):
                cb(up)
        return up

    def start(self) -> None:
        """Check in the background from now on (the first check at once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
