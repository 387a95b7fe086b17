"""A minimal talking agent: wake word → listen → transcribe → answer → speak, one turn at a time.

    models = await Models.load()
    agent = VoiceLoop(models, DeviceInput(rate=16_000), DeviceOutput(), on_event=print)
    await agent.run()        # until the input ends or the task is cancelled

The sequential precursor of issue 4's AgentSession:

- **idle**: every mic frame goes to the wake word stream. The frames of the last
  few seconds are kept, so what was said right after the wake word ("hey jarvis,
  what time is it" in one breath) starts the next phase.
- **listening**: frames go to a fresh VAD stream; from its START_OF_SPEECH on
  (with the prefix padding it hands over) to an STT stream too, which is flushed
  at END_OF_SPEECH. Nothing said within :data:`LISTEN_S` → idle.
- **thinking / speaking**: the transcript goes to the LLM; its text deltas are
  pushed into a TTS stream as they come and its audio is written to the output
  while the LLM still generates. The mic is ignored (frames dropped) from the end
  of the user's speech until the reply has played: no barge-in yet.
- then a follow-up window (:data:`FOLLOW_UP_S`) in which no wake word is needed.

Each state change, transcript and reply is logged at INFO, and per turn when each
step first produced something, in ms after the end of speech: ``vad`` (its
END_OF_SPEECH, after the silence), ``stt`` (the FINAL), ``llm`` (first text),
``tts`` (first audio) and ``out`` (first sample handed to the device).

Not here (issue 4): barge-in and echo cancellation, semantic turn detection,
early STT decodes, tools and handoff, providers and options from the config.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.resample import Resampler
from edgeagent.errors import EdgeAgentError
from edgeagent.llm.chat import ChatChunk
from edgeagent.stage import StageStream
from edgeagent.tts.base import SynthesizedAudio
from edgeagent.voice.listen import HISTORY_S, AudioHistory, Utterance, bounded, cancel, speech_end
from edgeagent.voice.stages import INSTRUCTIONS, Models, new_context

__all__ = ["AgentReply", "AgentState", "LoopEvent", "Models", "StateChanged", "UserTranscript",
           "VoiceLoop", "WakeDetected"]

log = logging.getLogger(__name__)

LISTEN_S = 8.0
"""After the wake word: how long to wait for speech to start."""
FOLLOW_UP_S = 5.0
"""After a reply: how long a follow-up may start without the wake word (0: none)."""
WAKE_OVERLAP_S = 0.16
"""The next phase starts this long (two wake word steps) before the wake word fired: it
fires at the end of an 80 ms step, sometimes after the next word began. Measured on 32
one-breath questions (Piper and espeak-ng, 5 phrasings, several alignments): cut at the
firing time, whisper misheard 3 ("capital of friends", "how many lands") that it got right
with the overlap; never the reverse, and "jarvis" never leaked into the transcript."""
MAX_REPLY_TOKENS = 120
REPLY_TIMEOUT_S = 120.0


class AgentState(str, enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass(frozen=True)
class StateChanged:
    state: AgentState


@dataclass(frozen=True)
class WakeDetected:
    word: str
    score: float


@dataclass(frozen=True)
class UserTranscript:
    text: str


@dataclass(frozen=True)
class AgentReply:
    text: str
    latency_s: float | None
    """End of the user's speech (capture time, as the VAD placed it) to the first reply
    sample handed to the output device (to write() for outputs without that hook)."""


LoopEvent = StateChanged | WakeDetected | UserTranscript | AgentReply


class VoiceLoop:
    """The agent on one input and one output; ``on_event`` hears every :data:`LoopEvent`."""

    def __init__(
        self,
        models: Models,
        inp: AudioInput,
        out: AudioOutput,
        *,
        on_event: Callable[[LoopEvent], None] | None = None,
        instructions: str = INSTRUCTIONS,
        follow_up: float = FOLLOW_UP_S,
    ) -> None:
        self._m = models
        self._in = inp
        self._out = out
        self._on_event = on_event
        self._follow_up = follow_up
        self.ctx = new_context(instructions)
        """The conversation so far (kept across turns)."""
        self.state: AgentState | None = None
        self._mic: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        self._muted = False
        self._ended = False
        self._marks: dict[str, float] = {}  # this turn: monotonic time of each step's first result
        self._output_timed = False  # the output reports when a sample reaches the device

    async def run(self) -> None:
        """Serve turns until the input ends; cancel the task to stop."""
        pump = asyncio.ensure_future(self._pump())
        try:
            while (tail := await self._wait_for_wake()) is not None:
                await self._conversation(tail)
        finally:
            await cancel(pump)  # raises an input error

    # -- the mic ---------------------------------------------------------------------

    async def _pump(self) -> None:
        """Input frames (at 16 kHz) into the mic queue; dropped while muted; None at the end."""
        rate = self._in.sample_rate
        resampler = None if rate == RECOGNITION_RATE else Resampler(rate, RECOGNITION_RATE)
        try:
            async for frame in self._in:
                if resampler is not None:
                    frame = resampler.push(frame)
                if not self._muted and frame.num_samples:
                    self._mic.put_nowait(frame)
        finally:
            self._mic.put_nowait(None)

    async def _next_frame(self) -> AudioFrame | None:
        frame = await self._mic.get()
        if frame is None:
            self._ended = True
            self._mic.put_nowait(None)  # every later reader sees the end too
        return frame

    def _unmute(self) -> None:
        """Hear the mic again, without what it heard while the agent was busy."""
        if not self._muted:
            return
        self._muted = False
        while not self._mic.empty():
            if self._mic.get_nowait() is None:
                self._mic.put_nowait(None)
                return

    # -- the phases ------------------------------------------------------------------

    async def _wait_for_wake(self) -> list[AudioFrame] | None:
        """Idle until the wake word; returns the audio captured after it (None: input ended)."""
        self._set_state(AgentState.IDLE)
        wake = self._m.wake.stream()
        history = AudioHistory(HISTORY_S)

        def push(frame: AudioFrame) -> None:
            history.add(frame)
            wake.push(frame)

        feeder = asyncio.ensure_future(self._feed(wake, push))
        try:
            async for event in wake:
                log.info("wake word %s (score %.2f)", event.word, event.score)
                self._emit(WakeDetected(event.word, event.score))
                return history.after(event.timestamp - WAKE_OVERLAP_S)
            return None
        finally:
            await cancel(feeder)
            await wake.aclose()

    async def _feed(self, stream: StageStream[AudioFrame, Any], push: Callable[[AudioFrame], None]) -> None:
        while (frame := await self._next_frame()) is not None:
            push(frame)
        stream.end_input()

    async def _conversation(self, tail: list[AudioFrame]) -> None:
        """The turn after a wake word, then follow-ups without one, until nobody speaks."""
        timeout = LISTEN_S
        while not self._ended:
            try:
                heard = await self._listen(tail, timeout)
                if heard is None:
                    return
                await self._answer(*heard)
            except EdgeAgentError:
                log.exception("the turn failed")
                self._out.clear()
                return
            finally:
                self._unmute()
            if self._follow_up <= 0:
                return
            tail, timeout = [], self._follow_up

    async def _listen(self, tail: list[AudioFrame], timeout: float) -> tuple[str, float] | None:
        """(transcript, capture time the speech ended) of one utterance; None when none came.

        A segment with no words (a cough, the tail of the wake word) does not end the
        listening window: the mic stays live while it is transcribed, and listening
        goes on, from the audio after that segment, until ``timeout`` runs out.
        """
        self._set_state(AgentState.LISTENING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            utt = Utterance(self._m.vad.stream(), self._m.stt.stream())
            for frame in tail:
                utt.push(frame)
            feeder = asyncio.ensure_future(self._feed(utt.vad, utt.push))
            try:
                end = await utt.wait_for_end(max(0.0, deadline - loop.time()))
                if end is None:
                    log.info("nothing said")
                    return None
                self._marks = {"vad": time.monotonic()}
                await cancel(feeder)
                text = await utt.transcript()
                self._mark("stt")
                tail = utt.pushed_after(end.timestamp)
            finally:
                await cancel(feeder)
                await utt.aclose()
            if text:
                self._muted = True  # no barge-in: the mic is ignored until the reply has played
                log.info("user: %s", text)
                return text, speech_end(end)
            log.info("user: (nothing recognised), still listening")

    async def _answer(self, text: str, speech_end: float) -> None:
        """The LLM's reply to ``text``, spoken as it is generated."""
        self._emit(UserTranscript(text))
        self.ctx.add("user", text)
        self._set_state(AgentState.THINKING)
        llm = self._m.llm.chat(self.ctx, max_tokens=MAX_REPLY_TOKENS)
        tts = self._m.tts.stream()
        parts: list[str] = []
        out = self._out
        timed = out if isinstance(out, BufferedOutput) and out.on_frame_started is None else None
        if timed is not None:  # the time the first sample reaches the device, not write()
            timed.on_frame_started = self._frame_started
        self._output_timed = timed is not None
        speaker = asyncio.ensure_future(self._speak(tts))
        try:
            await bounded(self._generate(llm, tts, parts), REPLY_TIMEOUT_S, "the LLM reply")
            await bounded(speaker, REPLY_TIMEOUT_S, "speaking the reply")
        finally:
            await cancel(speaker)
            await llm.aclose()
            await tts.aclose()
            if timed is not None:
                timed.on_frame_started = None
        reply = "".join(parts).strip()
        self.ctx.add("assistant", reply)
        log.info("agent: %s", reply or "(nothing)")
        log.info("turn timing, ms after the end of speech: %s", ", ".join(
            f"{step} {1000 * (t - speech_end):.0f}" for step, t in self._marks.items()))
        first = self._marks.get("out")
        self._emit(AgentReply(reply, None if first is None else first - speech_end))

    async def _generate(self, llm: StageStream[None, ChatChunk], tts: StageStream[str, SynthesizedAudio],
                        parts: list[str]) -> None:
        async for chunk in llm:
            if chunk.text:
                self._mark("llm")
                parts.append(chunk.text)
                tts.push(chunk.text)
        tts.flush()

    async def _speak(self, tts: StageStream[str, SynthesizedAudio]) -> None:
        async for audio in tts:
            if audio.frame.num_samples:
                if self.state is not AgentState.SPEAKING:
                    self._set_state(AgentState.SPEAKING)
                self._mark("tts")
                if not self._output_timed:
                    self._mark("out")
                await self._out.write(audio.frame)
            if audio.is_final:
                break
        await self._out.drain()

    def _frame_started(self, frame: AudioFrame, handed_over: float) -> None:
        self._mark("out", handed_over)

    def _mark(self, step: str, at: float | None = None) -> None:
        """Note when ``step`` (vad, stt, llm, tts, out) first produced something this turn."""
        if step not in self._marks:
            self._marks[step] = time.monotonic() if at is None else at

    # -- events ----------------------------------------------------------------------

    def _set_state(self, state: AgentState) -> None:
        if state is not self.state:
            self.state = state
            log.info("state: %s", state.value)
            self._emit(StateChanged(state))

    def _emit(self, event: LoopEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a broken listener must not stop the agent
                log.exception("on_event handler failed")
