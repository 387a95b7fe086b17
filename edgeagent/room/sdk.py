"""Closing the LiveKit SDK before a process ends (``edgeagent run|join|config``).

The SDK (``livekit.rtc``) runs a Rust runtime whose threads deliver events, log records
included, by calling into Python. Left alone, it closes itself in an ``atexit`` hook, right
before the interpreter finalizes. A native thread that fetched the event callback just before
that close, and is still waiting for the GIL when finalization begins, is ended by CPython
3.11 with ``pthread_exit``; its forced unwind through the SDK's Rust frames aborts the whole
process (``panic in a function that cannot unwind`` / ``thread caused non-unwinding panic.
aborting.``, SIGABRT, exit 134). :func:`close_sdk` does the close earlier, while the interpreter
is whole, and then lets such late deliveries finish: after the close no new delivery starts.

Only for a process that is about to end: the SDK cannot be used again after it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable

log = logging.getLogger(__name__)

SETTLE_S = 0.1
"""Time given to event deliveries that were already on their way when the SDK closed (they only
need the GIL, which the event loop releases while it waits)."""


async def close_sdk(settle_s: float = SETTLE_S) -> bool:
    """Close the SDK's native side now (every room it still has, then its event delivery).

    Call it once, last, after the rooms were disconnected. Returns whether there was anything
    to close (False: the SDK was never started, or this SDK version has no close to call, in
    which case its own ``atexit`` hook does it as before).
    """
    if "livekit.rtc._ffi_client" not in sys.modules:
        return False  # this process never used a room: nothing to close, nothing to import
    from livekit.rtc._ffi_client import FfiClient

    client = FfiClient._instance
    dispose = getattr(client, "_dispose", None)
    if client is None or dispose is None or FfiClient._ffi_disposed:
        return False
    await asyncio.to_thread(dispose)
    await asyncio.sleep(settle_s)
    log.debug("livekit SDK closed")
    return True


async def then_close_sdk(main: Awaitable[int]) -> int:
    """A command's whole run (``edgeagent run|join|config``): ``main``, then, however it
    ended, :func:`close_sdk`. Its rooms are left inside ``main``, so the close comes last."""
    try:
        return await main
    finally:
        await close_sdk()


def sdk_closed() -> bool:
    """Whether :func:`close_sdk` (or the SDK's own ``atexit`` hook) has run in this process."""
    from livekit.rtc._ffi_client import FfiClient

    return bool(FfiClient._ffi_disposed)
