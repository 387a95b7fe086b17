"""Text the user types (room ``lk.chat``, the web console): answered one message at a time,
the newest first.

A new message interrupts the reply to an older one (queued or playing) and replaces one
still waiting, so a flood of messages costs at most one reply; like LiveKit Agents, taking
typed text cuts the agent short.
"""

from __future__ import annotations

import asyncio
import logging

from edgeagent.voice.session import AgentSession
from edgeagent.voice.speech import SpeechHandle


class TypedReplies:
    """Answers :meth:`offer`-ed text in :meth:`run` (a task its owner runs and cancels)."""

    def __init__(self, session: AgentSession, log: logging.Logger, label: str) -> None:
        self.session, self._log, self._label = session, log, label
        self._wake = asyncio.Event()
        self._pending: str | None = None
        self._handle: SpeechHandle | None = None

    def offer(self, text: str) -> None:
        """``text`` is the one to answer next: the reply to an older message stops."""
        if self._pending is not None:
            self._log.info("%s: a newer message replaces %r", self._label, self._pending[:40])
        self._pending = text
        if self._handle is not None and not self._handle.done():
            self.session.interrupt()  # the reply to the older one, also while it is still queued
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            text, self._pending = self._pending, None
            if text is None:
                continue
            self.session.interrupt()
            self._handle = self.session.generate_reply(user_input=text)
            await self._handle.wait_for_playout()
