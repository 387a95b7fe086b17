"""What the rest of the program may ask of a running voice session: :class:`VoiceSession`;
and what a session's own ears may ask of it: :class:`TurnTakingHost`.

Both :class:`~edgeagent.voice.session.AgentSession` (the local pipeline) and
:class:`~edgeagent.realtime.session.RealtimeSession` (a realtime model with the pipeline
behind it) are one; :class:`~edgeagent.control.live.LiveApplier` puts config changes into
effect through this and nothing else, and the service lifecycle (status, GPIO buttons)
drives it through this, so they work the same on either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgeagent.config.voice import ActivationConfig, InterruptionConfig, TurnConfig
    from edgeagent.llm.base import LLM
    from edgeagent.llm.chat import ChatContext
    from edgeagent.stt.base import STT
    from edgeagent.tts.base import TTS
    from edgeagent.vad.base import VAD
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.conversation import Conversation
    from edgeagent.voice.detectors import AudioTurnModel, TurnDetector
    from edgeagent.voice.events import AgentState, SessionEvent
    from edgeagent.voice.reply import Reply
    from edgeagent.voice.speech import SpeechHandle
    from edgeagent.voice.wake_check import WakeStats
    from edgeagent.wake.base import WakeWord


class VoiceSession(Protocol):
    """A running session as config changes, the service lifecycle and the GPIO panel see it."""

    @property
    def current_agent(self) -> Agent: ...
    @property
    def vad(self) -> VAD: ...
    @property
    def stt(self) -> STT: ...
    @property
    def llm(self) -> LLM: ...
    @property
    def tts(self) -> TTS: ...
    @property
    def wake(self) -> WakeWord | None: ...
    @property
    def audio_turn(self) -> AudioTurnModel | None: ...
    @property
    def interruption(self) -> InterruptionConfig: ...
    @interruption.setter
    def interruption(self, value: InterruptionConfig) -> None: ...
    @property
    def state(self) -> AgentState: ...
    @property
    def quiet(self) -> bool: ...
    @property
    def muted(self) -> bool: ...

    def mute(self, muted: bool) -> None: ...
    def push_to_talk(self, pressed: bool) -> None: ...
    def set_instructions(self, text: str) -> None: ...
    def set_activation(self, activation: ActivationConfig, wake: WakeWord | None = None) -> None: ...
    def set_turn(self, turn: TurnConfig) -> None: ...
    def use_stage(self, stage: VAD | STT | LLM | TTS) -> None: ...
    def llm_context(self) -> ChatContext: ...
    def on(self, name: str, handler: Any = None) -> Any: ...
    def off(self, name: str, handler: Any) -> None: ...
    def emit(self, event: SessionEvent) -> None: ...


class TurnTakingHost(Protocol):
    """The session as its hearing (:class:`~edgeagent.voice.turn_taking.TurnTaking`, its
    :class:`~edgeagent.voice.wake_gate.WakeGate` and :class:`~edgeagent.voice.preempt.Preemption`)
    sees it: the hearing turns what was heard into replies through this and nothing else, as
    a :class:`~edgeagent.voice.reply.Reply` reaches its session through ``ReplyHost``."""

    interruption: InterruptionConfig
    conversation: Conversation
    activation: ActivationConfig
    turn_options: TurnConfig
    detector: TurnDetector
    wake_stats: WakeStats

    @property
    def stt(self) -> STT: ...
    @property
    def current_reply(self) -> Reply | None: ...

    def emit(self, event: SessionEvent) -> None: ...
    def interrupt(self) -> None: ...
    def update_state(self) -> None:
        """Work out the agent's state again (listening, thinking, speaking, idle)."""
    def set_playing(self, playing: bool) -> None:
        """Tell the ears whether the agent's voice is playing (a paused reply is not)."""
    def report_failure(self, what: str) -> Any:
        """A done-callback for a background task: its failure becomes an error event."""
    def enqueue(self, handle: SpeechHandle, *, text: str | None = None, ctx: ChatContext | None = None,
                user_text: str | None = None, reply: Reply | None = None) -> SpeechHandle: ...
    def preempt(self, user_text: str, ctx: ChatContext) -> Reply | None: ...
