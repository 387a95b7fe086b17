"""A join attempt that times out is waited for before the next: the SDK goes on connecting after its
``connect()`` is cancelled, and a late join would throw the next attempt (same identity) out of the
room with DUPLICATE_IDENTITY (seen after a watchdog restart by scripts/check-service).

The server here is a real socket on 127.0.0.1 that accepts the SDK's connection and answers
nothing, so the real SDK's join hangs as it did behind a stalled server; the socket sees when
the SDK lets go of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from edgeagent.config.room import LiveKitConfig
from edgeagent.room.connection import RoomLink


class SilentServer:
    """Accepts connections, reads and answers nothing; closes each after ``hold_s`` (None: never)."""

    def __init__(self, hold_s: float | None) -> None:
        self.hold_s = hold_s
        self.accepted: list[float] = []
        self.ended: list[float] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        try:
            if self.hold_s is None:
                await reader.read()  # until the SDK closes it
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(), self.hold_s)
        finally:
            self.ended.append(time.monotonic())
            writer.close()


@contextlib.asynccontextmanager
async def silent_server(hold_s: float | None) -> AsyncIterator[tuple[SilentServer, str]]:
    srv = SilentServer(hold_s)
    server = await asyncio.start_server(srv._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield srv, f"ws://127.0.0.1:{port}"
    finally:
        server.close()


def link_to(url: str, **options: float) -> RoomLink:
    cfg = LiveKitConfig(url=url, api_key="devkey", api_secret="s" * 32, room="r", identity="agent")
    return RoomLink(cfg, connect_timeout_s=0.3, **options)


@pytest.mark.reliability  # a fault test: with the others in `scripts/test -m reliability`
async def test_a_join_that_times_out_is_waited_for_before_the_next() -> None:
    async with silent_server(hold_s=1.5) as (srv, url):
        link = link_to(url, abandon_s=20.0)
        assert await asyncio.wait_for(link._join(), 30) is None
        returned = time.monotonic()
    assert srv.accepted, "the SDK never reached the server"
    assert srv.ended and returned >= srv.ended[0], (
        "the join returned while the SDK still held its connection: the next attempt could start beside it")


async def test_an_abandoned_join_that_never_ends_is_cancelled() -> None:
    async with silent_server(hold_s=None) as (srv, url):
        link = link_to(url, abandon_s=0.5)
        start = time.monotonic()
        assert await asyncio.wait_for(link._join(), 30) is None
        took = time.monotonic() - start
    assert srv.accepted, "the SDK never reached the server"
    assert 0.3 + 0.5 <= took < 10, f"the abandoned join was not given up after abandon_s: {took:.1f} s"
