"""A handle on one spoken reply: wait for it, or interrupt it.

    handle = session.say("Hello there.")
    await handle                 # until it has played out (or was interrupted)
    handle.interrupt()           # LLM and TTS stop, queued audio is dropped at once

Who shows a reply as it is spoken (the room's ``lk.transcription``, the web console) hears
of it from the session's ``speech_created`` event and follows it with :func:`reply_text`,
which wakes on each change of the handle (no polling).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

_ids = itertools.count(1)


class SpeechHandle:
    """One reply (from ``say``, ``generate_reply`` or a user turn)."""

    def __init__(self, *, allow_interruptions: bool = True, source: str = "reply",
                 add_to_chat_ctx: bool = True, turn: Any = None) -> None:
        self.id = f"speech_{next(_ids)}"
        self.add_to_chat_ctx = add_to_chat_ctx
        """The reply goes into the conversation history."""
        self.turn = turn
        """The user turn it answers (a :class:`~edgeagent.voice.conversation.TurnRecord`), if any."""
        self.allow_interruptions = allow_interruptions
        self.source = source
        """"say", "generate_reply" or "user_turn"."""
        self._spoken_text = ""
        self._text = ""
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._interrupted = False
        self._on_interrupt: list[Callable[[], None]] = []
        self._updates = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def spoken_text(self) -> str:
        """The text whose audio has been handed to the output so far."""
        return self._spoken_text

    @spoken_text.setter
    def spoken_text(self, value: str) -> None:
        self._spoken_text = value
        self._updated()

    @property
    def text(self) -> str:
        """All the text of the reply generated so far."""
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value
        self._updated()

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    @property
    def updates(self) -> int:
        """How often :attr:`text`, :attr:`spoken_text` or the end of the reply changed so far."""
        return self._updates

    async def wait_for_update(self, seen: int) -> int:
        """Until :attr:`updates` is above ``seen`` or the reply is over (at once if so now);
        returns :attr:`updates`."""
        while self._updates <= seen and not self.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._updates

    def done(self) -> bool:
        return self._done.done()

    def interrupt(self, *, force: bool = False) -> SpeechHandle:
        """Stop this reply now (unless it does not allow interruptions and ``force`` is False)."""
        if self.done() or self._interrupted or not (self.allow_interruptions or force):
            return self
        self._interrupted = True
        for cb in self._on_interrupt:
            cb()
        return self

    async def wait_for_playout(self) -> None:
        await asyncio.shield(self._done)

    def __await__(self) -> Generator[Any, None, SpeechHandle]:
        yield from asyncio.shield(self._done).__await__()
        return self

    # -- for the session ---------------------------------------------------------

    def _add_interrupt_callback(self, cb: Callable[[], None]) -> None:
        self._on_interrupt.append(cb)

    def _mark_done(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
            self._updated()

    def _updated(self) -> None:
        self._updates += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        state = "interrupted" if self._interrupted else "done" if self.done() else "active"
        return f"SpeechHandle({self.id}, {self.source}, {state})"


async def reply_text(handle: SpeechHandle) -> AsyncIterator[tuple[str, bool]]:
    """What a listener should read of ``handle``, each time it may have changed: (the text so
    far, whether the reply is over). The text is what was voiced; a reply that ends without
    being voiced or interrupted (no audio) shows all its text."""
    while True:
        seen = handle.updates
        over = handle.done()  # read before the text: nothing is added after it is done
        text = handle.spoken_text
        if over and not handle.interrupted and not text.strip():
            text = handle.text.strip()
        yield text, over
        if over:
            return
        await handle.wait_for_update(seen)
