"""A handle on one spoken reply: wait for it, or interrupt it.

    handle = session.say("Hello there.")
    await handle                 # until it has played out (or was interrupted)
    handle.interrupt()           # LLM and TTS stop, queued audio is dropped at once
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Generator
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
        self.spoken_text = ""
        """The text whose audio has been handed to the output so far."""
        self.text = ""
        """All the text of the reply generated so far."""
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._interrupted = False
        self._on_interrupt: list[Callable[[], None]] = []

    @property
    def interrupted(self) -> bool:
        return self._interrupted

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

    def __repr__(self) -> str:
        state = "interrupted" if self._interrupted else "done" if self.done() else "active"
        return f"SpeechHandle({self.id}, {self.source}, {state})"
