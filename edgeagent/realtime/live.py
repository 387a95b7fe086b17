"""What :class:`~edgeagent.control.live.LiveApplier` changes on a realtime session.

A :class:`~edgeagent.realtime.session.RealtimeSession` talks through the model while its
socket is up and through a pipeline :class:`~edgeagent.voice.session.AgentSession` after a
drop. A live change (SIGHUP, the room, the console) reaches both: the agent is shared (new
instructions also go to the model in a ``session.update``), the turn, activation and
barge-in options are kept for the pipeline and handed to it when it runs, and the stages are
the loaded :class:`~edgeagent.voice.stages.Models` that the applier swaps (the pipeline's
own, once it runs). So the applier works the same on either kind of session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from edgeagent.config.voice import ActivationConfig, InterruptionConfig, TurnConfig
from edgeagent.llm.chat import ChatContext
from edgeagent.realtime.protocol import RealtimeClient, RealtimeError, SessionOptions, session_update
from edgeagent.voice.events import AgentState, EventEmitter, SessionEvent

if TYPE_CHECKING:
    from edgeagent.llm.base import LLM
    from edgeagent.stt.base import STT
    from edgeagent.tts.base import TTS
    from edgeagent.vad.base import VAD
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.detectors import AudioTurnModel
    from edgeagent.voice.session import AgentSession
    from edgeagent.voice.stages import Models
    from edgeagent.wake.base import WakeWord

log = logging.getLogger(__name__)


class RealtimeLive:
    """The live-change side of :class:`~edgeagent.realtime.session.RealtimeSession`."""

    models: Models
    pipeline: AgentSession | None
    client: RealtimeClient
    voice: str
    server_vad: bool
    history: ChatContext
    turn: TurnConfig
    activation: ActivationConfig
    _agent: Agent | None
    _events: EventEmitter
    _interruption: InterruptionConfig
    _sending: set[asyncio.Task[None]]
    _muted: bool
    _barging: asyncio.Future[None] | None

    @property
    def speaking(self) -> bool:
        raise NotImplementedError

    @property
    def current_agent(self) -> Agent:
        assert self._agent is not None, "start() the session first"
        return self._agent

    @property
    def vad(self) -> VAD:
        return self.pipeline.vad if self.pipeline is not None else self.models.vad

    @property
    def stt(self) -> STT:
        return self.pipeline.stt if self.pipeline is not None else self.models.stt

    @property
    def llm(self) -> LLM:
        return self.pipeline.llm if self.pipeline is not None else self.models.llm

    @property
    def tts(self) -> TTS:
        return self.pipeline.tts if self.pipeline is not None else self.models.tts

    @property
    def audio_turn(self) -> AudioTurnModel | None:
        return self.models.audio_turn

    @property
    def wake(self) -> WakeWord | None:
        return None  # the model listens all the time

    @property
    def interruption(self) -> InterruptionConfig:
        return self._interruption

    @interruption.setter
    def interruption(self, value: InterruptionConfig) -> None:
        old, self._interruption = self._interruption, value
        if self.pipeline is not None:
            self.pipeline.interruption = value
        elif value.enabled != old.enabled:
            self._update_model()  # the server's own interrupt_response follows

    def options(self) -> SessionOptions:
        """The model's session as the config has it now."""
        agent = self.current_agent
        return SessionOptions(instructions=agent.instructions, voice=self.voice, tools=agent.tools,
                              server_vad=self.server_vad, interrupt_response=self._interruption.enabled)

    # -- barge-in, as [interruption] says ---------------------------------------------------

    async def _barge_in(self) -> None:
        raise NotImplementedError

    def _speech_started(self) -> None:
        """The user started talking: over a reply, it stops once the speech has lasted
        ``interruption.min_duration_s``; never with ``interruption.enabled`` off."""
        if not self._interruption.enabled:
            return
        self._speech_stopped()
        self._barging = asyncio.ensure_future(self._barge_in_after(self._interruption.min_duration_s))

    def _speech_stopped(self) -> None:
        if self._barging is not None and not self._barging.done():
            self._barging.cancel()  # shorter than min_duration_s: a cough, not a barge-in
        self._barging = None

    async def _barge_in_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._barge_in()

    def set_turn(self, turn: TurnConfig) -> None:
        self.turn = turn
        if self.pipeline is not None:
            self.pipeline.set_turn(turn)

    def set_activation(self, activation: ActivationConfig, wake: WakeWord | None = None) -> None:
        # The model listens all the time, and so does the pipeline behind it (stop words etc. apply).
        self.activation = dataclasses.replace(activation, mode="always")
        if self.pipeline is not None:
            self.pipeline.set_activation(self.activation, wake)

    def set_instructions(self, text: str) -> None:
        """The agent's new instructions, for the pipeline and, in a ``session.update``, the model."""
        self.current_agent.instructions = text
        self._update_model()

    def _update_model(self) -> None:
        """A ``session.update`` with :meth:`options`, when the model is the one talking."""
        if self.pipeline is not None or self._agent is None or not self.client.connected:
            return
        task = asyncio.ensure_future(self._send_update(session_update(self.options())))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_update(self, event: dict[str, object]) -> None:
        try:
            await self.client.send(dict(event))
        except RealtimeError as exc:  # the drop is seen by the receiver; the pipeline has the agent
            log.warning("realtime: the new instructions did not reach the model: %s", exc)

    def use_stage(self, stage: VAD | STT | LLM | TTS) -> None:
        if self.pipeline is not None:
            self.pipeline.use_stage(stage)

    def llm_context(self) -> ChatContext:
        """The conversation as the local LLM would get it (system prompt and history)."""
        if self.pipeline is not None:
            return self.pipeline.llm_context()
        ctx = ChatContext()
        ctx.add("system", self.current_agent.instructions)
        ctx.messages.extend(self.history.messages)
        return ctx

    @property
    def state(self) -> AgentState:
        if self.pipeline is not None:
            return self.pipeline.state
        return AgentState.SPEAKING if self.speaking else AgentState.LISTENING

    @property
    def quiet(self) -> bool:
        return self.pipeline.quiet if self.pipeline is not None else not self.speaking

    @property
    def muted(self) -> bool:
        return self._muted

    def mute(self, muted: bool) -> None:
        """Muted, no audio goes to the model (nor to the pipeline)."""
        self._muted = muted
        if self.pipeline is not None:
            self.pipeline.mute(muted)

    def push_to_talk(self, pressed: bool) -> None:
        if self.pipeline is not None:
            self.pipeline.push_to_talk(pressed)
        else:
            log.debug("push-to-talk: the realtime model listens all the time")

    def emit(self, event: SessionEvent) -> None:
        self._events.emit(event)
