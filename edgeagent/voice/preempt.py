"""Preemptive replies: the answer is generated while the turn decision is still pending.

When the transcript of a pause is final, :class:`Preemption` begins the reply to it
at once (LLM and TTS work ahead, see :meth:`edgeagent.voice.reply.Reply.begin`);
nothing of it is heard, published or kept until the turn is committed. At the
commit :meth:`Preemption.take` hands the reply over when it answers exactly the
committed text in an unchanged conversation (a *hit*); otherwise, and whenever the
user carries on, it is dropped (a *miss*): no audio, no transcript, no history
entry, no tool call. The LLM's KV cache keeps only the prefix that the next prompt
shares (:meth:`edgeagent.llm.llama_engine.LlamaEngine.prefill`), so a dropped reply
leaves nothing behind in it either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgeagent.llm.chat import ChatContext
from edgeagent.voice.reply import Reply

if TYPE_CHECKING:
    from edgeagent.voice.protocol import TurnTakingHost

log = logging.getLogger(__name__)


class Preemption:
    """At most one reply begun ahead of its turn; ``began`` and ``misses`` count, for the turn
    being heard (:meth:`new_turn`), the replies begun and the ones dropped."""

    def __init__(self, session: TurnTakingHost) -> None:
        self._s = session
        self._reply: Reply | None = None
        self._text = ""
        self._ctx: ChatContext | None = None
        self.misses = 0
        self.began = 0
        self.last_dropped: Reply | None = None
        """The reply dropped last (for tests and logs: what it had generated when dropped)."""

    @property
    def pending(self) -> bool:
        return self._reply is not None

    def new_turn(self) -> None:
        """A user turn opens: drop what is pending and count afresh."""
        self.drop()
        self.misses = self.began = 0

    def start(self, text: str) -> bool:
        """Begin the reply to ``text`` (dropping any other); False when it cannot begin now."""
        self.drop()
        conversation = self._s.conversation
        ctx = conversation.preempt_context(text)
        if ctx is None:
            return False
        reply = self._s.preempt(text, ctx)
        if reply is None:
            return False
        self._reply, self._text, self._ctx = reply, text, ctx
        self.began += 1
        log.debug("preemptive reply begun for %r", text)
        return True

    def take(self, text: str) -> Reply | None:
        """The begun reply if it answers ``text`` in the conversation as it is now; else drop it."""
        reply, ctx = self._reply, self._ctx
        if reply is None or ctx is None:
            return None
        if self._text == text and self._s.conversation.still_fits(ctx, text):
            self._reply = self._ctx = None
            return reply
        self.drop()
        return None

    def drop(self) -> None:
        """Throw the begun reply away (the user carried on, or the turn went another way)."""
        reply, self._reply, self._ctx = self._reply, None, None
        if reply is not None:
            reply.drop()
            self.last_dropped = reply
            self.misses += 1
            log.info("preemptive reply to %r dropped", self._text)
