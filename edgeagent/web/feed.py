"""What the console sees of the session, and the text it types: :class:`SessionFeed`.

The same things the room conventions carry (:mod:`edgeagent.room.conventions`), as
JSON messages for the browsers' data channels:

- ``{"type": "state", "state": "listening"}`` on every change of the agent's state
  (``lk.agent.state``);
- ``{"type": "transcript", "role": "user", "segment", "text", "final"}``: each user
  transcript, interim or final (``lk.transcription`` of the user), one segment per turn;
- ``{"type": "transcript", "role": "agent", "segment", "text", "final"}``: the reply's
  text as far as its voice has been handed to the output (clause by clause), the whole
  text so far in each message, ``final`` once the reply is over (``lk.transcription``
  of the agent; an interrupted reply stops where its voice stopped);
- ``{"type": "metrics", "turn_id", "transcript", "e2e_ms", ...}``: the per-turn latency
  figures (:class:`~edgeagent.voice.events.TurnMetrics`, in ms).

Typed text (:meth:`SessionFeed.chat`, ``lk.chat``) is answered by voice and shown as the
agent's transcript; a newer message interrupts the reply to an older one and replaces
one still waiting.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from edgeagent.voice.events import (
    AgentState,
    AgentStateChangedEvent,
    SpeechCreatedEvent,
    TurnMetrics,
    UserInputTranscribedEvent,
)
from edgeagent.voice.session import AgentSession
from edgeagent.voice.speech import SpeechHandle, reply_text
from edgeagent.voice.typed import TypedReplies

log = logging.getLogger(__name__)

Message = dict[str, Any]
METRIC_FIELDS = ("end_of_utterance_delay", "transcription_delay", "llm_ttft", "tts_ttfa", "e2e_latency",
                 "llm_ttft_after_speech", "tts_ttfa_after_speech")


class ChatRefused(ValueError):
    """A chat message that is not answered (too big, empty)."""


def _segment() -> str:
    return f"SG_{uuid.uuid4().hex[:12]}"


def metrics_message(m: TurnMetrics) -> Message:
    out: Message = {"type": "metrics", "turn_id": m.turn_id, "transcript": m.transcript,
                    "interrupted": m.interrupted}
    for name in METRIC_FIELDS:
        value = getattr(m, name)
        out[f"{name}_ms"] = None if value is None else round(1000 * value)
    return out


class SessionFeed:
    """Follows ``session`` and hands every message to ``send``; see the module docs."""

    def __init__(self, session: AgentSession, send: Callable[[Message], None], *, max_chat_bytes: int = 4096) -> None:
        self.session, self.send, self.max_chat_bytes = session, send, max_chat_bytes
        self._user_segment: str | None = None
        self._chat = TypedReplies(session, log, "web chat")
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: set[asyncio.Task[None]] = set()
        session.on("agent_state_changed", self._on_state)
        session.on("speech_created", self._on_speech)
        session.on("user_input_transcribed", self._on_user)
        session.on("metrics_collected", self._on_metrics)

    @property
    def state(self) -> AgentState:
        return self.session.state

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._chat.run())]

    async def aclose(self) -> None:
        self.session.off("agent_state_changed", self._on_state)
        self.session.off("user_input_transcribed", self._on_user)
        self.session.off("metrics_collected", self._on_metrics)
        self.session.off("speech_created", self._on_speech)
        tasks = [*self._tasks, *self._replies]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- the session ---------------------------------------------------------------------

    def _on_state(self, ev: AgentStateChangedEvent) -> None:
        self.send({"type": "state", "state": ev.new_state.value})

    def _on_user(self, ev: UserInputTranscribedEvent) -> None:
        text = ev.transcript.strip()
        if not text:
            return
        if self._user_segment is None:
            self._user_segment = _segment()
        self.send({"type": "transcript", "role": "user", "segment": self._user_segment, "text": text,
                   "final": ev.is_final})
        if ev.is_final:
            self._user_segment = None

    def _on_metrics(self, ev: Any) -> None:
        if isinstance(ev.metrics, TurnMetrics):
            self.send(metrics_message(ev.metrics))

    def _on_speech(self, ev: SpeechCreatedEvent) -> None:
        task = asyncio.ensure_future(self._stream_reply(ev.speech_handle))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _stream_reply(self, handle: SpeechHandle) -> None:
        segment, sent = _segment(), ""
        async for text, over in reply_text(handle):
            if text != sent or over:
                self.send({"type": "transcript", "role": "agent", "segment": segment, "text": text.strip(),
                           "final": over, "interrupted": over and handle.interrupted})
                sent = text

    # -- chat ----------------------------------------------------------------------------

    def chat(self, text: Any) -> None:
        """Answer typed ``text``; :class:`ChatRefused` when it is not answered."""
        if not isinstance(text, str):
            raise ChatRefused("chat text must be a string")
        if len(text.encode("utf-8", "surrogatepass")) > self.max_chat_bytes:
            raise ChatRefused(f"over the limit of {self.max_chat_bytes} bytes (web.max_chat_bytes)")
        text = text.strip()
        if not text:
            raise ChatRefused("empty")
        self._chat.offer(text)
