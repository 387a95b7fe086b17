"""``lk.chat`` ordering (issue 18 item 1, "the lost chat message"), driven step by step.

The LiveKit SDK finishes reading text streams that arrived together in any order (each reader
is fed by a native task of its own): measured on the loopback server, 9 of 100 floods of 4
messages finished reading out of the order sent. The agent used to take the message whose
read finished last as the newest, so a flood ending "Count to three.", QUESTION could be
answered with "Count to three." (test_room_conventions' flood test failed so once).

Here a fake room hands the conventions their ``lk.chat`` streams and the test decides when
each read ends, so each interleaving happens every time, not by luck of timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from edgeagent.room.conventions import RoomConventions
from edgeagent.voice.events import AgentState
from edgeagent.voice.speech import SpeechHandle

QUESTION = "What is the capital of France?"
FLOOD = ["Say hello.", "Say goodbye.", "Count to three.", QUESTION]
STEP = 5.0


class FakeReader:
    """A text stream whose single chunk arrives when the test says so."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.info = SimpleNamespace(size=None, attributes={})
        self.release = asyncio.Event()
        self.closed = False

    async def _chunks(self) -> AsyncIterator[str]:
        await self.release.wait()
        yield self.text

    def __aiter__(self) -> AsyncIterator[str]:
        return self._chunks()

    def close(self) -> None:
        self.closed = True


class FakeRoom:
    def __init__(self) -> None:
        self.text_handlers: dict[str, Callable[[Any, str], None]] = {}

    def register_text_stream_handler(self, topic: str, handler: Callable[[Any, str], None]) -> None:
        self.text_handlers[topic] = handler

    def register_byte_stream_handler(self, topic: str, handler: Callable[[Any, str], None]) -> None:
        pass

    def unregister_text_stream_handler(self, topic: str) -> None:
        self.text_handlers.pop(topic, None)

    def unregister_byte_stream_handler(self, topic: str) -> None:
        pass

    def on(self, event: str, cb: Callable[..., None]) -> None:
        pass

    def off(self, event: str, cb: Callable[..., None]) -> None:
        pass

    def isconnected(self) -> bool:
        return False  # nothing goes out: only lk.chat in is tested here

    @property
    def local_participant(self) -> Any:
        async def set_attributes(attributes: dict[str, str]) -> None:
            pass

        return SimpleNamespace(set_attributes=set_attributes)


class FakeSession:
    """Replies are handles the test ends. ``playing``: a reply plays at once, so interrupting its
    handle ends it (the session cancels it); else it waits in the queue, where only
    ``interrupt()`` drops it (the session's queue). ``interrupt()`` ends every reply."""

    def __init__(self, playing: bool = True) -> None:
        self.playing = playing
        self.state = AgentState.LISTENING
        self.current_reply = None
        self.replies: list[tuple[str, SpeechHandle]] = []

    def on(self, event: str, cb: Callable[..., None]) -> None:
        pass

    def off(self, event: str, cb: Callable[..., None]) -> None:
        pass

    def interrupt(self) -> None:
        for _, handle in self.replies:
            if not handle.done():
                handle.interrupt(force=True)
                handle._mark_done()

    def generate_reply(self, *, user_input: str | None = None) -> SpeechHandle:
        handle = SpeechHandle(source="generate_reply")
        if self.playing:
            handle._add_interrupt_callback(handle._mark_done)
        self.replies.append((user_input or "", handle))
        return handle

    def taken(self) -> list[str]:
        return [text for text, _ in self.replies]


async def settle() -> None:
    """Let every task that can run, run (the reads, the chat loop)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def flood(readers: list[FakeReader], playing: bool = True) -> tuple[RoomConventions, FakeSession, FakeRoom]:
    room, session = FakeRoom(), FakeSession(playing)
    conv = RoomConventions(room, session, listen="all")  # type: ignore[arg-type]
    conv.attach()
    for reader in readers:  # the streams open in the order they were sent
        room.text_handlers["lk.chat"](reader, "user")
    await settle()
    return conv, session, room


@pytest.mark.parametrize("finish", [(0, 1, 3, 2), (3, 2, 1, 0), (1, 3, 0, 2), (0, 1, 2, 3)],
                         ids=["last-two-swapped", "reversed", "mixed", "in-order"])
async def test_the_newest_sent_is_answered_whatever_order_the_reads_end(
        finish: tuple[int, ...], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edgeagent.room.conventions")
    readers = [FakeReader(text) for text in FLOOD]
    conv, session, _ = await flood(readers)
    try:
        for i in finish:
            readers[i].release.set()
            await settle()
        assert session.taken()[-1] == QUESTION, session.taken()
        assert session.taken().count(QUESTION) == 1
        # Everything taken was taken in the order sent: nothing older after something newer.
        places = [FLOOD.index(text) for text in session.taken()]
        assert places == sorted(places), session.taken()
        # Only the last reply plays on; each message is answered, replaced or said to be superseded.
        assert [h.done() for _, h in session.replies] == [True] * (len(session.replies) - 1) + [False]
        said = " ".join(r.getMessage() for r in caplog.records)
        for text in FLOOD:
            assert f"lk.chat from user: {text}" in said
            assert text in session.taken() or repr(text[:40]) in said, (text, said)
        assert all(r.closed for r in readers)
    finally:
        await asyncio.wait_for(conv.aclose(), STEP)


async def test_a_message_that_ends_its_read_as_a_reply_ends_is_answered() -> None:
    """The reply to the first message ends (its handle done) while the second is being read;
    the second finishes reading before the chat loop has seen the first end."""
    readers = [FakeReader(FLOOD[0]), FakeReader(QUESTION)]
    conv, session, _ = await flood(readers)
    try:
        readers[0].release.set()
        await settle()
        assert session.taken() == [FLOOD[0]]
        session.replies[0][1]._mark_done()  # the reply ends ...
        readers[1].release.set()  # ... and, before the loop resumes, the newer message is complete
        await settle()
        assert session.taken() == [FLOOD[0], QUESTION]
        assert not session.replies[1][1].done()
    finally:
        await asyncio.wait_for(conv.aclose(), STEP)


async def test_a_newer_message_stops_a_reply_still_queued() -> None:
    """The first reply has not started (still queued in the session) when the newer message
    comes: it must not play (the session drops queued replies on interrupt())."""
    readers = [FakeReader(FLOOD[0]), FakeReader(QUESTION)]
    conv, session, _ = await flood(readers, playing=False)
    interrupts = 0
    real = session.interrupt

    def counting() -> None:
        nonlocal interrupts
        interrupts += 1
        real()

    session.interrupt = counting  # type: ignore[method-assign]
    try:
        readers[0].release.set()
        await settle()
        first = session.replies[0][1]
        before = interrupts
        readers[1].release.set()
        await settle()
        assert first.done() and first.interrupted
        assert interrupts > before
        assert session.taken() == [FLOOD[0], QUESTION]
    finally:
        await asyncio.wait_for(conv.aclose(), STEP)
