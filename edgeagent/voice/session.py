"""AgentSession: the talking agent on one audio input and output, in the spirit of LiveKit Agents.

    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
                           audio_turn=models.audio_turn)
    session.on("agent_state_changed", lambda ev: print(ev.new_state))
    await session.start(Assistant(), input=DeviceInput(), output=DeviceOutput())
    ...
    await session.aclose()

The session owns the state (initializing → idle → listening → thinking →
speaking), the replies and the conversation history. Its ears are a
:class:`~edgeagent.voice.listener.Listener`; wake words, turn taking and
barge-in are :class:`~edgeagent.voice.turn_taking.TurnTaking`'s (one task reads what the
listener heard); each reply is a :class:`~edgeagent.voice.reply.Reply`, played in
order by :meth:`AgentSession._speak_loop`.

Activation: ``wake`` opens a listening window (``listen_s``) at the wake word,
and a follow-up window (``follow_up_s``) after each reply; ``always`` listens all
the time; ``ptt`` listens while :meth:`push_to_talk` is held. During a reply the
user may always barge in: speech that lasts ``interruption.min_duration_s``
pauses it; words (or the wake word) stop it; no words resume it. A stop word
said alone stops the agent without an answer.

Options and stages change while it runs (:mod:`edgeagent.control.live`): the options at
once, a stage (:meth:`AgentSession.use_stage`) while the session is :attr:`~AgentSession.quiet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.config.voice import ActivationConfig, InterruptionConfig, TurnConfig
from edgeagent.fallback.chain import chain_of
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS
from edgeagent.vad.base import VAD
from edgeagent.voice.agent import Agent
from edgeagent.voice.conversation import Conversation
from edgeagent.voice.detectors import AudioTurnModel, make_detector
from edgeagent.voice.events import AgentState, ErrorEvent, EventEmitter, SessionEvent, SpeechCreatedEvent
from edgeagent.voice.listener import Listener
from edgeagent.voice.reply import Reply
from edgeagent.voice.speech import SpeechHandle
from edgeagent.voice.turn_taking import TurnTaking
from edgeagent.voice.wake_check import WakeStats
from edgeagent.wake.base import WakeWord

log = logging.getLogger(__name__)

class AgentSession:
    """See the module docs. Options are the config sections of :mod:`edgeagent.config.voice`."""

    def __init__(
        self,
        *,
        vad: VAD,
        stt: STT,
        llm: LLM,
        tts: TTS,
        wake: WakeWord | None = None,
        audio_turn: AudioTurnModel | None = None,
        activation: ActivationConfig | None = None,
        turn: TurnConfig | None = None,
        interruption: InterruptionConfig | None = None,
        echo_cancellation: bool = True,
        noise_suppression: bool = False,
        wake_noise_suppression: bool = True,
        ignore_own_playback: bool = True,
        max_reply_tokens: int | None = None,
        userdata: Any = None,
    ) -> None:
        self.activation = activation or ActivationConfig()
        self.turn_options = turn or TurnConfig()
        self.interruption = interruption or InterruptionConfig()
        if self.activation.mode == "wake" and wake is None:
            raise ValueError("activation mode 'wake' needs a wake word stage (wake=...)")
        self.vad, self.stt, self.llm, self.tts, self.wake = vad, stt, llm, tts, wake
        self.audio_turn = audio_turn
        """The audio end-of-turn model (Smart Turn) of the ``audio`` and ``combined`` detectors."""
        self.echo_cancellation, self.ignore_own_playback = echo_cancellation, ignore_own_playback
        self.noise_suppression, self.wake_noise_suppression = noise_suppression, wake_noise_suppression
        self.max_reply_tokens = max_reply_tokens
        self.userdata: Any = {} if userdata is None else userdata
        self.wake_stats = WakeStats()  # what became of the wake word's firings (voice/wake_check.py)
        self.conversation = Conversation(self)
        self._events = EventEmitter()
        self.detector = make_detector(self.turn_options, llm, audio_turn)  # a bad turn.detection fails here
        self._listener: Listener | None = None
        self._turn_taking: TurnTaking | None = None
        self._out: AudioOutput | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[SpeechHandle, Reply]] = asyncio.Queue()
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._closed = False
        for stage in (stt, llm, tts):
            self._watch_fallback(stage)

    # -- public API ----------------------------------------------------------------

    def on(self, name: str, handler: Any = None) -> Any:
        """Listen to an event: ``agent_state_changed``, ``user_input_transcribed``,
        ``conversation_item_added``, ``metrics_collected``, ``error``, ``wake_word_detected``,
        ``agent_handoff``, ``provider_fallback`` (a :class:`~edgeagent.fallback.chain.FallbackEvent`).
        Without a handler, a decorator."""
        return self._events.on(name, handler)

    def off(self, name: str, handler: Any) -> None:
        self._events.off(name, handler)

    @property
    def current_agent(self) -> Agent:
        return self.conversation.agent

    @property
    def state(self) -> AgentState:
        """The agent's state (``listening``, ``thinking``, ``speaking``, ...), as the conversation set it."""
        return self.conversation.state

    @property
    def history(self) -> ChatContext:
        """The conversation so far (without the system prompt)."""
        return self.conversation.history

    async def start(self, agent: Agent, *, input: AudioInput, output: AudioOutput) -> None:
        """Start listening and speaking; returns once the session runs."""
        if self._listener is not None:
            raise RuntimeError("the session is already started")
        wake = self.wake if self.activation.mode == "wake" else None
        self._listener = Listener.build(
            input, output, self.vad, self.stt, wake, echo_cancellation=self.echo_cancellation,
            noise_suppression=self.noise_suppression, ignore_own_playback=self.ignore_own_playback,
            wake_noise_suppression=self.wake_noise_suppression)
        self._out = output
        self._turn_taking = TurnTaking(self, self._listener)
        await self.conversation.set_agent(agent)
        self._listener.start()
        self._tasks = [asyncio.ensure_future(self._turn_taking.run()), asyncio.ensure_future(self._speak_loop())]
        self.update_state()

    def say(self, text: str, *, allow_interruptions: bool = True, add_to_chat_ctx: bool = True) -> SpeechHandle:
        """Speak ``text`` (after any reply already queued)."""
        handle = SpeechHandle(allow_interruptions=allow_interruptions, source="say", add_to_chat_ctx=add_to_chat_ctx)
        return self.enqueue(handle, text=text)

    def generate_reply(self, *, user_input: str | None = None, instructions: str | None = None,
                       allow_interruptions: bool = True) -> SpeechHandle:
        """Let the LLM speak now: to ``user_input`` (added as a user message) or unprompted;
        ``instructions`` are added for this reply only."""
        if user_input:
            self.conversation.add(ChatMessage("user", user_input))
        ctx = self.conversation.llm_context()
        if instructions:
            ctx.add("system", instructions)
        return self.enqueue(SpeechHandle(allow_interruptions=allow_interruptions, source="generate_reply"), ctx=ctx)

    def interrupt(self) -> None:
        """Stop the current reply and drop the queued ones."""
        while not self._queue.empty():
            handle, _ = self._queue.get_nowait()
            handle.interrupt(force=True)
            handle._mark_done()
        if self._reply is not None:
            self._reply.handle.interrupt()

    def update_agent(self, agent: Agent) -> None:
        """Hand the conversation over to ``agent`` (its on_enter runs; the history stays)."""
        task = asyncio.ensure_future(self.conversation.set_agent(agent))
        task.add_done_callback(self.report_failure("handoff"))

    def push_to_talk(self, pressed: bool) -> None:
        """Push-to-talk: pressed opens the user's turn (stopping any reply), released ends it."""
        if self._turn_taking is not None:
            self._turn_taking.push_to_talk(pressed)
            self.update_state()

    @property
    def muted(self) -> bool:
        """The microphone is muted (:meth:`mute`)."""
        return self._turn_taking is not None and self._turn_taking.muted

    def mute(self, muted: bool) -> None:
        """Mute or unmute the microphone: muted, nothing is heard (no wake word, no turn, no
        barge-in) and the turn being heard is dropped; a reply already under way plays on."""
        if self._turn_taking is not None:
            self._turn_taking.mute(muted)
            self.update_state()

    @property
    def current_reply(self) -> Reply | None:
        """The reply being generated or played, if any."""
        return self._reply

    async def wait_until_done(self) -> None:
        """Until the input has ended and every turn and reply is over."""
        while True:
            self._idle.clear()
            if self._listener is not None and self._listener.ended and self._quiet():
                return
            await self._idle.wait()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.interrupt()
        if self._turn_taking is not None:
            self._turn_taking.preemption.drop()
        for task in [*self._tasks, self._reply_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._listener is not None:
            await self._listener.aclose()
        with contextlib.suppress(Exception):
            await self.conversation.exit()

    # -- live changes ---------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """No reply playing or waiting and no user turn being heard: a stage may be swapped."""
        return self._quiet()

    def set_activation(self, activation: ActivationConfig, wake: WakeWord | None = None) -> None:
        """New activation options from the next event on; wake mode listens with ``wake``
        (default the session's wake stage). Raises (changing nothing) without a wake stage."""
        wake = wake or self.wake
        if activation.mode == "wake" and wake is None:
            raise ValueError("activation mode 'wake' needs a wake word stage")
        self.activation, self.wake = activation, wake
        if self._turn_taking is not None:
            self._turn_taking.set_activation(activation)
        if self._listener is not None:
            self._listener.use_wake(wake if activation.mode == "wake" else None)
        self.update_state()

    def set_instructions(self, text: str) -> None:
        """New instructions for the agent in charge (its next reply follows them)."""
        self.current_agent.instructions = text

    def llm_context(self) -> ChatContext:
        """The conversation as the LLM gets it now (system prompt, history)."""
        return self.conversation.llm_context()

    def set_turn(self, turn: TurnConfig) -> None:
        """New turn-taking options (and detector), for the turn being heard too."""
        detector = make_detector(turn, self.llm, self.audio_turn)  # one the stages cannot serve raises
        self.turn_options, self.detector = turn, detector
        if self._turn_taking is not None:
            self._turn_taking.set_turn(turn, detector)

    def _watch_fallback(self, stage: object) -> None:
        """A fallback chain's switches and recoveries become ``provider_fallback`` events."""
        chain = chain_of(stage)
        if chain is not None:
            chain.on_event(self.emit)

    def use_stage(self, stage: VAD | STT | LLM | TTS) -> None:
        """Use ``stage`` instead of the session's stage of its kind, from the next reply or
        utterance on; call it while :attr:`quiet`. The old stage is the caller's to close."""
        self._watch_fallback(stage)
        if isinstance(stage, LLM):
            detector = make_detector(self.turn_options, stage, self.audio_turn)  # raises before any change
            self.llm, self.detector = stage, detector
            if self._turn_taking is not None:
                self._turn_taking.set_turn(self.turn_options, detector)
        elif isinstance(stage, TTS):
            self.tts = stage
        elif isinstance(stage, STT):
            self.stt = stage
            if self._listener is not None:
                self._listener.use_stt(stage)
        else:
            self.vad = stage
            if self._listener is not None:
                self._listener.use_vad(stage)

    # -- speaking ------------------------------------------------------------------

    def enqueue(self, handle: SpeechHandle, *, text: str | None = None, ctx: ChatContext | None = None,
                 user_text: str | None = None, reply: Reply | None = None) -> SpeechHandle:
        """Queue a reply: a new one from ``text``/``ctx``/``user_text``, or ``reply`` (begun
        preemptively, see :meth:`preempt`)."""
        assert self._out is not None, "start() the session first"
        if reply is None:
            reply = self._new_reply(handle, text=text, ctx=ctx, user_text=user_text)
        self._queue.put_nowait((handle, reply))
        self.emit(SpeechCreatedEvent(handle, handle.source, user_initiated=handle.source != "user_turn"))
        self.update_state()
        return handle

    def preempt(self, user_text: str, ctx: ChatContext) -> Reply | None:
        """Begin the reply to ``user_text`` on ``ctx`` now, held back until the turn is committed
        (or dropped); None when no reply may begin now (one is playing or queued, or
        ``turn.preemptive_generation`` is off)."""
        if (self._out is None or self._reply is not None or not self._queue.empty()
                or not self.turn_options.preemptive_generation):
            return None
        reply = self._new_reply(SpeechHandle(source="user_turn"), ctx=ctx, user_text=user_text)
        reply.begin()
        return reply

    def _new_reply(self, handle: SpeechHandle, *, text: str | None = None, ctx: ChatContext | None = None,
                   user_text: str | None = None) -> Reply:
        assert self._out is not None, "start() the session first"
        return Reply(handle, self.conversation, self.llm, self.tts, self._out, text=text, ctx=ctx,
                     user_text=user_text, max_tokens=self.max_reply_tokens)

    async def _speak_loop(self) -> None:
        while True:
            handle, reply = await self._queue.get()
            if handle.done() or handle.interrupted:  # interrupted while it waited: never heard
                reply.drop()
                handle._mark_done()
                continue
            self._reply = reply
            self.update_state()
            task = asyncio.ensure_future(self.conversation.play(reply))
            self._reply_task = task
            handle._add_interrupt_callback(_canceller(task))
            try:
                await task
            except asyncio.CancelledError:
                # The reply was interrupted (its task cancelled): carry on with the next one. But
                # aclose() during an interrupted reply cancels this loop too: that must end it.
                if self._closed or not handle.interrupted:
                    raise
            except Exception as exc:
                log.exception("the reply failed")
                self.emit(ErrorEvent(exc, "reply"))
            finally:
                self._reply = self._reply_task = None
                self.set_playing(False)
                await self.conversation.finish(reply)
                handle._mark_done()
                if self._turn_taking is not None and self._queue.empty() and not handle.interrupted:
                    self._turn_taking.follow_up()
                self.update_state()

    def set_playing(self, playing: bool) -> None:
        if self._listener is not None:
            self._listener.set_playing(playing)

    # -- state and events ------------------------------------------------------------

    def _quiet(self) -> bool:
        hearing = self._turn_taking
        return self._reply is None and self._queue.empty() and not (hearing and hearing.tracker.active)

    def update_state(self) -> None:
        hearing = self._turn_taking
        if hearing is None or self._closed:
            return
        reply = self._reply
        if reply is not None and reply.audible and not reply.paused:
            state = AgentState.SPEAKING
        elif (reply is not None and not reply.paused) or not self._queue.empty():
            state = AgentState.THINKING
        elif hearing.listening or (reply is not None and reply.paused):
            state = AgentState.LISTENING
        else:
            state = AgentState.IDLE
        self.conversation.set_state(state)
        if self._quiet():
            self._idle.set()

    def on_first_audio(self) -> None:
        self.set_playing(True)
        self.update_state()

    def emit(self, event: SessionEvent) -> None:
        self._events.emit(event)

    def report_failure(self, what: str) -> Any:
        def done(task: asyncio.Future[Any]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("%s failed: %s", what, exc)
                assert exc is not None
                self.emit(ErrorEvent(exc, what))
        return done


def _canceller(task: asyncio.Task[None]) -> Callable[[], None]:
    def cancel() -> None:
        task.cancel()
    return cancel
