"""What an :class:`~edgeagent.voice.session.AgentSession` tells the world: typed events.

    session.on("agent_state_changed", lambda ev: print(ev.old_state, "->", ev.new_state))

Event names and payloads follow LiveKit Agents: ``agent_state_changed``,
``user_input_transcribed``, ``conversation_item_added``, ``metrics_collected``,
``error``, ``speech_created``, plus ``wake_word_detected`` and ``agent_handoff``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edgeagent.fallback.chain import FallbackEvent
from edgeagent.llm.chat import ChatMessage

if TYPE_CHECKING:
    from edgeagent.voice.speech import SpeechHandle

log = logging.getLogger(__name__)

#: ``extra`` of the log records that say what a transcript shows (a user's turn, a reply, a
#: turn's metrics): ``edgeagent run`` prints those lines on stdout and keeps them out of the
#: stderr log (:mod:`edgeagent.terminal`).
TRANSCRIPT: dict[str, Any] = {"transcript": True}


class AgentState(str, enum.Enum):
    """The states of ``lk.agent.state``."""

    INITIALIZING = "initializing"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass(frozen=True)
class AgentStateChangedEvent:
    old_state: AgentState
    new_state: AgentState
    type: Literal["agent_state_changed"] = "agent_state_changed"


@dataclass(frozen=True)
class UserInputTranscribedEvent:
    transcript: str
    is_final: bool
    type: Literal["user_input_transcribed"] = "user_input_transcribed"


@dataclass(frozen=True)
class ConversationItemAddedEvent:
    item: ChatMessage
    """A user message, an assistant reply (``interrupted`` when cut off), a tool call or result."""
    agent: str = ""
    """The agent (class name or label) that owned the conversation when it was added."""
    type: Literal["conversation_item_added"] = "conversation_item_added"


@dataclass(frozen=True)
class TurnMetrics:
    """One user turn and the reply to it; times in seconds.

    The reference point is the end of the user's speech as the VAD placed it (capture
    time). Any of them is None when that step did not happen (e.g. interrupted early).
    """

    turn_id: str
    transcript: str
    end_of_utterance_delay: float | None
    """End of speech → the turn was declared over."""
    transcription_delay: float | None
    """End of speech → final transcript."""
    llm_ttft: float | None
    """LLM request → first token."""
    tts_ttfa: float | None
    """First text handed to TTS → its first audio."""
    e2e_latency: float | None
    """End of speech → first reply sample handed to the output device."""
    eot_probability: float | None = None
    """Text turn detection: the LLM's probability that the turn was finished."""
    interrupted: bool = False
    audio_eot_probability: float | None = None
    """Audio turn detection (Smart Turn): the probability that the voice had finished."""
    end_of_turn_delay: float | None = None
    """The silence the detectors asked for before the turn ended (adaptive endpointing)."""
    preempt_hit: bool | None = None
    """The reply was generated preemptively, while the turn decision was pending, and kept
    (None: preemptive generation was off or not possible for this turn)."""
    preempt_misses: int = 0
    """Preemptive replies dropped while this turn was heard (the user carried on)."""
    llm_ttft_after_speech: float | None = None
    """End of speech → first LLM token."""
    tts_ttfa_after_speech: float | None = None
    """End of speech → first TTS audio."""
    stt_provider: str | None = None
    """The provider that transcribed the turn (a fallback chain's member label, e.g. ``whisper``)."""
    llm_provider: str | None = None
    """The provider whose text was spoken (the last one, if one took over mid-reply)."""
    tts_provider: str | None = None
    """The voice that spoke the reply."""
    type: Literal["turn_metrics"] = "turn_metrics"

    def as_log(self) -> str:
        """One ``key=value`` line, times in ms."""
        parts = [f"turn={self.turn_id}"]
        for name in ("end_of_utterance_delay", "transcription_delay", "llm_ttft", "tts_ttfa", "e2e_latency",
                     "llm_ttft_after_speech", "tts_ttfa_after_speech"):
            value = getattr(self, name)
            parts.append(f"{name}_ms={'-' if value is None else round(1000 * value)}")
        if self.eot_probability is not None:
            parts.append(f"eot_probability={self.eot_probability:.3f}")
        if self.audio_eot_probability is not None:
            parts.append(f"audio_eot_probability={self.audio_eot_probability:.3f}")
        if self.end_of_turn_delay is not None:
            parts.append(f"end_of_turn_delay_ms={round(1000 * self.end_of_turn_delay)}")
        if self.preempt_hit is not None:
            parts.append(f"preempt={'hit' if self.preempt_hit else 'none'} preempt_misses={self.preempt_misses}")
        parts.append(f"interrupted={str(self.interrupted).lower()}")
        for kind in ("stt", "llm", "tts"):
            if (served := getattr(self, f"{kind}_provider")) is not None:
                parts.append(f"{kind}_provider={served}")
        return " ".join(parts)

    def log_fields(self) -> dict[str, Any]:
        """Upper-case fields for a log record's ``extra`` (the journal keeps them): ``TURN_ID``,
        ``E2E_LATENCY_MS`` and the other times in ms, ``EOT_PROBABILITY``, ``INTERRUPTED``."""
        fields: dict[str, Any] = {"TURN_ID": self.turn_id, "INTERRUPTED": int(self.interrupted)}
        for name in ("end_of_utterance_delay", "transcription_delay", "llm_ttft", "tts_ttfa", "e2e_latency",
                     "llm_ttft_after_speech", "tts_ttfa_after_speech"):
            value = getattr(self, name)
            if value is not None:
                fields[f"{name.upper()}_MS"] = round(1000 * value)
        if self.eot_probability is not None:
            fields["EOT_PROBABILITY"] = f"{self.eot_probability:.3f}"
        return fields


@dataclass(frozen=True)
class MetricsCollectedEvent:
    metrics: Any
    """A :class:`TurnMetrics`, or a stage's record from :mod:`edgeagent.metrics`."""
    type: Literal["metrics_collected"] = "metrics_collected"


@dataclass(frozen=True)
class SpeechCreatedEvent:
    """A reply was queued: follow it with :func:`edgeagent.voice.speech.reply_text`. A reply
    begun ahead of its turn (preemptive) is announced only once the turn is committed."""

    speech_handle: SpeechHandle
    source: str
    """"say", "generate_reply" or "user_turn"."""
    user_initiated: bool
    """Asked for in code (``say``, ``generate_reply``), not by a user turn."""
    type: Literal["speech_created"] = "speech_created"


@dataclass(frozen=True)
class ErrorEvent:
    error: BaseException
    source: str
    """Which part failed: "stt", "llm", "tts", "tool", "input", "output", ..."""
    recoverable: bool = True
    type: Literal["error"] = "error"


@dataclass(frozen=True)
class WakeWordDetectedEvent:
    word: str
    score: float
    type: Literal["wake_word_detected"] = "wake_word_detected"


@dataclass(frozen=True)
class AgentHandoffEvent:
    old_agent: str
    new_agent: str
    type: Literal["agent_handoff"] = "agent_handoff"


SessionEvent = (AgentStateChangedEvent | UserInputTranscribedEvent | ConversationItemAddedEvent
                | MetricsCollectedEvent | ErrorEvent | WakeWordDetectedEvent | AgentHandoffEvent
                | SpeechCreatedEvent | FallbackEvent)
EVENT_NAMES = ("agent_state_changed", "user_input_transcribed", "conversation_item_added",
               "metrics_collected", "error", "wake_word_detected", "agent_handoff", "speech_created",
               "provider_fallback")

Handler = Callable[[Any], Any]


@dataclass
class EventEmitter:
    """``on(name, handler)``; handlers run synchronously, and one that raises is logged, not fatal."""

    _handlers: dict[str, list[Handler]] = field(default_factory=dict)

    def on(self, name: str, handler: Handler | None = None) -> Any:
        """Register ``handler`` for event ``name``; without a handler, a decorator."""
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(EVENT_NAMES)}")

        def add(h: Handler) -> Handler:
            self._handlers.setdefault(name, []).append(h)
            return h

        return add(handler) if handler is not None else add

    def off(self, name: str, handler: Handler) -> None:
        if handler in self._handlers.get(name, []):
            self._handlers[name].remove(handler)

    def emit(self, event: SessionEvent) -> None:
        for handler in list(self._handlers.get(event.type, [])):
            try:
                handler(event)
            except Exception:
                log.exception("%s handler failed", event.type)
