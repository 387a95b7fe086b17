"""A join attempt that times out is waited for before the next: the SDK goes on connecting after its
``connect()`` is cancelled, and a late join would throw the next attempt (same identity) out of the
room with DUPLICATE_IDENTITY (seen after a watchdog restart by scripts/check-service)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from livekit import rtc

from edgeagent.config_room import LiveKitConfig
from edgeagent.room import connection
from edgeagent.room.connection import RoomLink


async def test_a_join_that_times_out_is_waited_for_before_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[float] = []

    async def slow_connect(self: rtc.Room, url: str, token: str, options: Any = None) -> None:
        try:
            await asyncio.sleep(0.5)  # the SDK, still trying after the link gave up on it
        finally:
            ended.append(time.monotonic())
        raise rtc.ConnectError("engine: connection error: late")

    monkeypatch.setattr(rtc.Room, "connect", slow_connect)
    cfg = LiveKitConfig(url="ws://127.0.0.1:9", api_key="devkey", api_secret="s" * 32, room="r")
    link = RoomLink(cfg, connect_timeout_s=0.1)
    start = time.monotonic()
    assert await link._join() is None
    assert ended and ended[0] - start >= 0.45, "the next attempt could start while this one goes on"


async def test_an_abandoned_join_that_never_ends_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled: list[bool] = []

    async def hung_connect(self: rtc.Room, url: str, token: str, options: Any = None) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    monkeypatch.setattr(rtc.Room, "connect", hung_connect)
    monkeypatch.setattr(connection, "ABANDONED_JOIN_S", 0.2)
    cfg = LiveKitConfig(url="ws://127.0.0.1:9", api_key="devkey", api_secret="s" * 32, room="r")
    link = RoomLink(cfg, connect_timeout_s=0.1)
    assert await asyncio.wait_for(link._join(), 5) is None
    await asyncio.sleep(0)
    assert cancelled == [True]
