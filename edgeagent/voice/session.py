"""AgentSession: the talking agent on one audio input and output, in the spirit of LiveKit Agents.

    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake)
    session.on("agent_state_changed", lambda ev: print(ev.new_state))
    await session.start(Assistant(), input=DeviceInput(), output=DeviceOutput())
    ...
    await session.aclose()

The session owns the state (initializing → idle → listening → thinking →
speaking), the conversation history, turn taking and interruptions. Its ears
are a :class:`~edgeagent.voice.listener.Listener`, the turn decision a
:class:`~edgeagent.voice.turns.TurnTracker` with a detector, each reply a
:class:`~edgeagent.voice.reply.Reply`. One task reads what the listener heard
(:meth:`_hear`), one plays replies in order (:meth:`_speak_loop`).

Activation: ``wake`` opens a listening window (``listen_s``) at the wake word,
and a follow-up window (``follow_up_s``) after each reply; ``always`` listens all
the time; ``ptt`` listens while :meth:`push_to_talk` is held. During a reply the
user may always barge in: speech that lasts ``interruption.min_duration_s``
pauses it; words (or the wake word) stop it; no words resume it. A stop word
said alone stops the agent without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.audio.playback import BufferedOutput
from edgeagent.config_voice import ActivationConfig, InterruptionConfig, TurnConfig
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType
from edgeagent.tts.base import TTS
from edgeagent.vad.base import VAD, VADEvent
from edgeagent.voice.agent import Agent
from edgeagent.voice.conversation import Conversation, TurnRecord
from edgeagent.voice.events import (
    AgentState,
    ErrorEvent,
    EventEmitter,
    SessionEvent,
    UserInputTranscribedEvent,
    WakeWordDetectedEvent,
)
from edgeagent.voice.listener import Listener
from edgeagent.voice.reply import Reply
from edgeagent.voice.speech import SpeechHandle
from edgeagent.voice.turns import Action, Phase, Step, TurnTracker, make_detector
from edgeagent.wake.base import WakeEvent, WakeWord

log = logging.getLogger(__name__)

WAKE_OVERLAP_S = 0.16
"""The question's audio starts this long before the wake word fired (it fires at the end of
an 80 ms step, sometimes after the next word began; see the issue 3 notes)."""


class AgentSession:
    """See the module docs. Options are the config sections of :mod:`edgeagent.config_voice`."""

    def __init__(
        self,
        *,
        vad: VAD,
        stt: STT,
        llm: LLM,
        tts: TTS,
        wake: WakeWord | None = None,
        activation: ActivationConfig | None = None,
        turn: TurnConfig | None = None,
        interruption: InterruptionConfig | None = None,
        echo_cancellation: bool = True,
        noise_suppression: bool = False,
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
        self.echo_cancellation = echo_cancellation
        self.noise_suppression = noise_suppression
        self.ignore_own_playback = ignore_own_playback
        self.max_reply_tokens = max_reply_tokens
        self.userdata: Any = {} if userdata is None else userdata
        self.state = AgentState.INITIALIZING
        self.conversation = Conversation(self)
        self._events = EventEmitter()
        self._detector = make_detector(self.turn_options, llm)
        self._tracker = TurnTracker(self.turn_options)
        self._listener: Listener | None = None
        self._out: AudioOutput | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[SpeechHandle, Reply]] = asyncio.Queue()
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._armed_until = -math.inf  # stream time until which speech may open a turn
        self._ptt = False
        self._turn: TurnRecord | None = None  # the user turn being heard
        self._barge_paused_at: float | None = None  # stream time a reply was paused for speech
        self._idle = asyncio.Event()
        self._vad_in_speech = False
        self._closed = False

    # -- public API ----------------------------------------------------------------

    def on(self, name: str, handler: Any = None) -> Any:
        """Listen to an event: ``agent_state_changed``, ``user_input_transcribed``,
        ``conversation_item_added``, ``metrics_collected``, ``error``, ``wake_word_detected``,
        ``agent_handoff``. Without a handler, a decorator."""
        return self._events.on(name, handler)

    def off(self, name: str, handler: Any) -> None:
        self._events.off(name, handler)

    @property
    def current_agent(self) -> Agent:
        return self.conversation.agent

    @property
    def history(self) -> ChatContext:
        """The conversation so far (without the system prompt)."""
        return self.conversation.history

    async def start(self, agent: Agent, *, input: AudioInput, output: AudioOutput) -> None:
        """Start listening and speaking; returns once the session runs."""
        if self._listener is not None:
            raise RuntimeError("the session is already started")
        echo = None
        if self.echo_cancellation:
            from edgeagent.audio.echo import EchoCanceller

            echo = EchoCanceller(noise_suppression=self.noise_suppression)
            if isinstance(output, BufferedOutput):
                echo.attach(output)
        wake = self.wake if self.activation.mode == "wake" else None
        self._listener = Listener(input, self.vad, self.stt, wake, echo=echo,
                                  ignore_own_playback=self.ignore_own_playback)
        self._out = output
        await self.conversation.set_agent(agent)
        if self.activation.mode == "always":
            self._armed_until = math.inf
        self._listener.start()
        self._tasks = [asyncio.ensure_future(self._hear()), asyncio.ensure_future(self._speak_loop())]
        self._update_state()

    def say(self, text: str, *, allow_interruptions: bool = True, add_to_chat_ctx: bool = True) -> SpeechHandle:
        """Speak ``text`` (after any reply already queued)."""
        handle = SpeechHandle(allow_interruptions=allow_interruptions, source="say", add_to_chat_ctx=add_to_chat_ctx)
        return self._enqueue(handle, text=text)

    def generate_reply(self, *, user_input: str | None = None, instructions: str | None = None,
                       allow_interruptions: bool = True) -> SpeechHandle:
        """Let the LLM speak now: to ``user_input`` (added as a user message) or unprompted;
        ``instructions`` are added for this reply only."""
        if user_input:
            self.conversation.add(ChatMessage("user", user_input))
        ctx = self.conversation.llm_context()
        if instructions:
            ctx.add("system", instructions)
        return self._enqueue(SpeechHandle(allow_interruptions=allow_interruptions, source="generate_reply"), ctx=ctx)

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
        task.add_done_callback(self._report_failure("handoff"))

    def push_to_talk(self, pressed: bool) -> None:
        """Push-to-talk: pressed opens the user's turn (stopping any reply), released ends it."""
        listener = self._listener
        if listener is None or pressed == self._ptt:
            return
        self._ptt = pressed
        if pressed:
            self.interrupt()
            self._apply(self._tracker.open_at(max(0.0, listener.now - 0.1), speaking=True))
        else:
            self._apply(self._tracker.end_speech(listener.now))
        self._update_state()

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
        for task in [*self._tasks, self._reply_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._listener is not None:
            await self._listener.aclose()
            if self._listener.echo is not None:
                self._listener.echo.close()
        with contextlib.suppress(Exception):
            await self.conversation.exit()

    # -- hearing -------------------------------------------------------------------

    async def _hear(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            kind, payload = await listener.heard.get()
            try:
                if kind == "vad":
                    self._on_vad(payload)
                elif kind == "wake":
                    self._on_wake(payload)
                elif kind == "stt":
                    self._on_stt(*payload)
                elif kind == "error":
                    source, exc = payload
                    self.emit(ErrorEvent(exc, source, recoverable=source != "input"))
                elif kind == "end":
                    self._apply(self._tracker.end_speech(listener.now))
            except Exception as exc:  # one bad event must not stop the ears
                log.exception("handling a %s event failed", kind)
                self.emit(ErrorEvent(exc, "session"))
            self._update_state()

    def _accepting(self) -> bool:
        """May speech open a user turn now?"""
        if self.activation.mode == "ptt":
            return False  # the button opens turns
        listener = self._listener
        assert listener is not None
        return listener.now <= self._armed_until or self._reply is not None

    def _on_vad(self, ev: VADEvent) -> None:
        self._vad_in_speech = ev.speaking
        if self.activation.mode == "ptt" and not self._tracker.active:
            return
        if self._tracker.phase is Phase.NONE and not self._accepting():
            return
        if self.activation.mode != "ptt":
            self._apply(self._tracker.on_vad(ev))
        self._tracker.now = ev.timestamp
        self._check_barge_in(ev.timestamp)

    def _check_barge_in(self, now: float) -> None:
        reply = self._reply
        if reply is None or not self.interruption.enabled or not reply.handle.allow_interruptions:
            return
        if (not reply.paused and self._tracker.phase is Phase.SPEAKING
                and self._tracker.speech_duration >= self.interruption.min_duration_s):
            assert self._listener is not None
            lag = time.monotonic() - self._listener.capture_time(self._tracker.speech_start)
            log.info("user speech over the reply: paused %.0f ms after it began (at %.3f)",
                     1000 * lag, time.monotonic())
            reply.pause()
            self._barge_paused_at = now
            self._set_playing(False)
        elif (reply.paused and self._barge_paused_at is not None and not self._tracker.active
              and now - self._barge_paused_at >= self.interruption.false_timeout_s):
            self._resume("no words within the false interruption timeout")

    def _resume(self, why: str) -> None:
        reply = self._reply
        self._barge_paused_at = None
        if reply is not None and reply.paused:
            log.info("false interruption (%s): the reply resumes", why)
            reply.resume()

    def _on_wake(self, ev: WakeEvent) -> None:
        listener = self._listener
        assert listener is not None
        log.info("wake word %s (score %.2f)", ev.word, ev.score)
        self.emit(WakeWordDetectedEvent(ev.word, ev.score))
        if self._reply is not None:
            log.info("wake word during the reply: stopped")
            self.interrupt()
        self._armed_until = listener.now + self.activation.listen_s
        if not self._tracker.active and self._vad_speaking(ev.timestamp):
            self._apply(self._tracker.open_at(max(0.0, ev.timestamp - WAKE_OVERLAP_S), speaking=True))

    def _vad_speaking(self, at: float) -> bool:
        """Is the VAD inside an utterance (speech or its short pauses) at stream time ``at``?"""
        return self._tracker.phase is not Phase.NONE or self._vad_in_speech

    def _on_stt(self, uid: int, ev: SpeechEvent) -> None:
        listener = self._listener
        if listener is None or uid != listener.utterance_id or self._turn is None:
            return
        if ev.type is SpeechEventType.INTERIM:
            self.emit(UserInputTranscribedEvent(ev.text, is_final=False))
            return
        self._turn.final_at = time.monotonic()
        steps = self._tracker.on_final(ev.text)
        self._apply(steps)
        text = self._tracker.pending_text
        if text:
            task = asyncio.ensure_future(self._judge(text))
            task.add_done_callback(self._report_failure("turn detection"))

    async def _judge(self, text: str) -> None:
        delay = await self._detector.delay(self.conversation.llm_context(), text)
        if self._turn is not None:
            self._turn.eot_probability = self._detector.last_probability
        self._apply(self._tracker.set_delay(text, delay))
        self._update_state()

    def _apply(self, steps: Sequence[Step]) -> None:
        listener = self._listener
        assert listener is not None
        for step in steps:
            if step.action is Action.OPEN:
                listener.open_utterance(step.start)
                self._turn = TurnRecord()
            elif step.action is Action.FLUSH:
                listener.flush()
            elif step.action is Action.REOPEN:
                listener.reopen()
            elif step.action is Action.COMMIT:
                self._commit(step)
            elif step.action is Action.DISCARD:
                log.info("user: (nothing recognised)")
                self._turn = None
                listener.drop_utterance()
                if self._reply is not None and self._reply.paused:
                    self._resume("no words")

    def _commit(self, step: Step) -> None:
        listener = self._listener
        assert listener is not None
        turn, self._turn = self._turn or TurnRecord(), None
        listener.drop_utterance()
        turn.speech_end = listener.capture_time(step.speech_end)
        turn.committed_at = time.monotonic()
        turn.transcript = step.text
        self._barge_paused_at = None
        reply = self._reply
        if reply is not None and reply.audible and not reply.paused:
            # Speech over the reply too short to pause it (a word, a cough): not an interruption.
            log.info("user: %s (too short to interrupt the reply: ignored)", step.text)
            return
        if reply is not None and reply.paused and _only_fillers(step.text):
            self._resume(f"only {step.text!r}")  # a backchannel ("mm-hmm"), not a turn
            return
        self.emit(UserInputTranscribedEvent(step.text, is_final=True))
        log.info("user: %s", step.text)
        if _is_stop(step.text, self.activation.stop_words):
            log.info("stop word: the agent stops")
            self.interrupt()
            if self.activation.mode == "wake":
                self._armed_until = -math.inf
            return
        self.interrupt()
        handle = SpeechHandle(source="user_turn", turn=turn)
        self._enqueue(handle, user_text=step.text)

    # -- speaking ------------------------------------------------------------------

    def _enqueue(self, handle: SpeechHandle, *, text: str | None = None, ctx: ChatContext | None = None,
                 user_text: str | None = None) -> SpeechHandle:
        assert self._out is not None, "start() the session first"
        reply = Reply(handle, self.conversation, self.llm, self.tts, self._out, text=text, ctx=ctx,
                      user_text=user_text, max_tokens=self.max_reply_tokens)
        self._queue.put_nowait((handle, reply))
        self._update_state()
        return handle

    async def _speak_loop(self) -> None:
        while True:
            handle, reply = await self._queue.get()
            if handle.done():
                continue
            self._reply = reply
            self._update_state()
            task = asyncio.ensure_future(self.conversation.play(reply))
            self._reply_task = task
            handle._add_interrupt_callback(_canceller(task))
            try:
                await task
            except asyncio.CancelledError:
                if not handle.interrupted:
                    raise
            except Exception as exc:
                log.exception("the reply failed")
                self.emit(ErrorEvent(exc, "reply"))
            finally:
                self._reply = self._reply_task = None
                self._set_playing(False)
                await self.conversation.finish(reply)
                handle._mark_done()
                if (self._listener is not None and self.activation.mode == "wake" and self._queue.empty()
                        and not handle.interrupted):
                    self._armed_until = self._listener.now + self.activation.follow_up_s
                self._update_state()

    def _set_playing(self, playing: bool) -> None:
        if self._listener is not None:
            self._listener.set_playing(playing)

    # -- state and events ------------------------------------------------------------

    def _quiet(self) -> bool:
        return self._reply is None and self._queue.empty() and not self._tracker.active

    def _update_state(self) -> None:
        if self._listener is None or self._closed:
            return
        reply = self._reply
        if reply is not None and reply.audible and not reply.paused:
            state = AgentState.SPEAKING
        elif (reply is not None and not reply.paused) or not self._queue.empty():
            state = AgentState.THINKING
        elif (self._tracker.active or self._ptt or (reply is not None and reply.paused)
              or self._listener.now <= self._armed_until):
            state = AgentState.LISTENING
        else:
            state = AgentState.IDLE
        self.conversation.set_state(state)
        if self._quiet():
            self._idle.set()

    def on_first_audio(self) -> None:
        self._set_playing(True)
        self._update_state()

    def emit(self, event: SessionEvent) -> None:
        self._events.emit(event)

    def _report_failure(self, what: str) -> Any:
        def done(task: asyncio.Future[Any]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("%s failed: %s", what, exc)
                assert exc is not None
                self.emit(ErrorEvent(exc, what))
        return done


FILLERS = frozenset(("uh", "um", "umm", "ah", "aah", "oh", "hm", "hmm", "hmmm", "mm", "mhm", "mm-hmm", "uh-huh"))
"""Sounds that are not words: said over the agent's reply, they do not interrupt it."""


def _only_fillers(text: str) -> bool:
    said = re.findall(r"[a-z'-]+", text.lower())
    return all(w.strip("-") in FILLERS for w in said)


def _is_stop(text: str, stop_words: Sequence[str]) -> bool:
    said = " ".join(re.findall(r"[a-z']+", text.lower()))
    return bool(said) and said in {" ".join(re.findall(r"[a-z']+", w.lower())) for w in stop_words}


def _canceller(task: asyncio.Task[None]) -> Callable[[], None]:
    def cancel() -> None:
        task.cancel()
    return cancel
