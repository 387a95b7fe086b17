"""The first audio of a reply goes first: process-wide hints to CPU-heavy background work.

On a 2-core board the voice that synthesises a reply's first clause competes for the
cores with the LLM that is still writing the rest of the reply, and the first audio,
the one thing the user is waiting for, comes later for it (Piper's first clause took
~76 ms with the LLM generating beside it, ~42 ms with both cores to itself). So while a
first clause is being synthesised (:meth:`Urgency.hold`, by
:mod:`edgeagent.tts.streaming`), work that can wait (each LLM token,
:mod:`edgeagent.llm.llama_gen`) calls :meth:`Urgency.wait` first. The wait is bounded
(:data:`MAX_WAIT_S`), so nothing ever stalls on a hold left behind.

The same holds one step earlier: from the moment a reply starts until its first audio
is synthesised (:data:`REPLY_START`, held by :class:`~edgeagent.voice.reply.Reply`),
the turn detector's voice model (:mod:`edgeagent.voice.audio_turn`) waits: run beside the
preemptive reply's LLM it took the cores from it (first token 110-177 ms after the
transcript instead of 60-97 ms, ``scripts/bench``), while its verdict is needed only
once the silence has lasted ``turn.min_delay_s``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

MAX_WAIT_S = 0.25
"""The longest one :meth:`Urgency.wait` blocks (a first clause takes 20-120 ms here)."""


class Urgency:
    """Holds nest and may come from any thread; :meth:`wait` returns when none is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds = 0
        self._free = threading.Event()
        self._free.set()

    @property
    def held(self) -> bool:
        return not self._free.is_set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Urgent work runs inside this block."""
        with self._lock:
            self._holds += 1
            self._free.clear()
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                if self._holds == 0:
                    self._free.set()

    def acquire(self) -> Callable[[], None]:
        """Hold until the returned function is called (calling it again does nothing)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.hold())
        return stack.close

    def wait(self, timeout: float = MAX_WAIT_S) -> bool:
        """Block until no urgent work runs (True) or ``timeout`` passes (False)."""
        return self._free.wait(timeout)


FIRST_AUDIO = Urgency()
"""Held while a reply's first clause is being synthesised."""

REPLY_START = Urgency()
"""Held from a reply's start until its first audio is synthesised (or it ends)."""

REPLY_START_WAIT_S = 0.4
"""The longest the voice model waits for :data:`REPLY_START` (a reply's first audio takes
~150-250 ms here after its transcript)."""
