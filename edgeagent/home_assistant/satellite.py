"""The board as Home Assistant's voice satellite: local ears and mouth, Home Assistant's pipeline between.

    sat = Satellite(vad=models.vad, wake=models.wake, activation=cfg.activation, ...)
    await sat.start(DeviceInput(...), DeviceOutput(...))
    server = SatelliteServer(sat, cfg.home_assistant)      # edgeagent.home_assistant.server
    await server.start()                                   # Home Assistant connects, run-satellite

The microphone goes through the same :class:`~edgeagent.voice.listener.Listener` as a local
session (echo cancelled against what plays, into the VAD and the wake word). A wake word opens
a pipeline run: ``detection`` and ``run-pipeline`` (asr → tts) go to Home Assistant, then the
question as ``audio-start``, ``audio-chunk``s (16 kHz, 16-bit mono, from just before the end of
the wake word) and ``audio-stop`` once the local VAD hears the end of speech (or after
``listen_s``; a ``transcript`` or ``voice-stopped`` from Home Assistant ends it too).

Home Assistant's answer (``transcript``, ``synthesize``, ``audio-start``/``audio-chunk``/
``audio-stop``) is played on the same output as a local reply, so the echo canceller hears it as
the far end; once it has played, ``played`` goes back. Barge-in stays local: the wake word, or
speech over the reply for ``interruption.min_duration_s`` (at least :data:`BARGE_IN_S`), stops
the reply at once and streams what the user says as the next question. States (idle, listening,
thinking, speaking) are ``agent_state_changed`` events, as a session's, for the LED and
``STATUS=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.audio.playback import BufferedOutput
from edgeagent.config.voice import ActivationConfig, InterruptionConfig
from edgeagent.home_assistant.relay import QuestionRelay, Send, chunk_frame, send_or_log
from edgeagent.vad.base import VAD, VADEvent, VADEventType
from edgeagent.voice.events import AgentState, AgentStateChangedEvent, EventEmitter, UserInputTranscribedEvent
from edgeagent.voice.listener import Listener
from edgeagent.wake.base import WakeEvent, WakeWord

log = logging.getLogger(__name__)

WAKE_OVERLAP_S = 0.16
"""The question's audio starts this long before the wake phrase's peak score (about its end)."""
UNCHECKED_WAKE_SCORE = 0.5
"""The satellite hands the question to Home Assistant and has no transcript to check the wake
phrase by (the session's words check, voice/wake_check.py): a firing whose peak stays under
openWakeWord's own threshold is ignored, whatever the configured (lower) threshold."""
BARGE_IN_S = 0.25
"""Speech over a reply must last at least this long to stop it: with no words heard locally,
a cough must not stop Home Assistant's answer."""
BARGE_IN_PREFIX_S = 0.8
"""The question after a barge-in starts this long before the VAD's speech start: while the echo
canceller adapts to the user's voice over the reply (double talk) it damps their first syllables,
and the VAD starts late (with 0.3 s, "Please stop talking now" was sent as "talking now" in 2 of 5
runs of tests/test_home_assistant_satellite.py)."""
WAKE_TAIL_S = 0.5
"""An end of speech this soon after the wake word is the wake word's own end, not the question's."""

@dataclass(frozen=True)
class _Event:
    """A wyoming Event queued for Home Assistant between the question's frames."""

    event: Any


class Satellite:
    """Runs the satellite's side; Home Assistant's connection is :meth:`attach`-ed by the server."""

    def __init__(self, *, vad: VAD, wake: WakeWord | None, activation: ActivationConfig | None = None,
                 interruption: InterruptionConfig | None = None, echo_cancellation: bool = True,
                 noise_suppression: bool = False, listen_s: float = 8.0, answer_s: float = 30.0) -> None:
        self.activation = activation or ActivationConfig()
        self.interruption = interruption or InterruptionConfig()
        self.vad, self.wake = vad, wake
        self.echo_cancellation, self.noise_suppression = echo_cancellation, noise_suppression
        self.listen_s, self.answer_s = listen_s, answer_s
        self.state = AgentState.INITIALIZING
        self.muted = False
        self._events = EventEmitter()
        self._send: Send | None = None
        self._listener: Listener | None = None
        self._out: AudioOutput | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._phase = "idle"  # idle, streaming, answering, playing
        self._run_id = 0
        self._chunks: asyncio.Queue[AudioFrame | _Event | None] = asyncio.Queue()  # to Home Assistant, in order
        self._stream_start = 0.0  # stream time the question's audio starts
        self._question_started = False
        self._reply: asyncio.Queue[AudioFrame | None] | None = None  # the answer, to the speaker
        self._deadline: asyncio.TimerHandle | None = None

    # -- the session-like surface (LED, STATUS=, GPIO) --------------------------------

    def on(self, name: str, handler: Any = None) -> Any:
        return self._events.on(name, handler)

    def off(self, name: str, handler: Any) -> None:
        self._events.off(name, handler)

    def mute(self, muted: bool) -> None:
        self.muted = muted
        if self._listener is not None:
            self._listener.muted = muted
        if muted and self._phase == "streaming":
            self._end_question("muted")

    def push_to_talk(self, pressed: bool) -> None:
        """The talk button: pressed starts a question as a wake word would."""
        if pressed and self._listener is not None and self._phase != "streaming":
            self._begin(self._listener.now, "the talk button")

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, inp: AudioInput, out: AudioOutput) -> None:
        echo = None
        if self.echo_cancellation:
            from edgeagent.audio.echo import EchoCanceller

            echo = EchoCanceller(noise_suppression=self.noise_suppression)
            if isinstance(out, BufferedOutput):
                echo.attach(out)
        wake = self.wake if self.activation.wake_words else None
        self._listener = Listener(inp, self.vad, QuestionRelay(self._relay), wake, echo=echo)
        self._out = out
        self._listener.start()
        self._tasks = [asyncio.ensure_future(self._hear()), asyncio.ensure_future(self._stream_question())]
        self._set_state(AgentState.IDLE)

    async def wait_until_done(self) -> None:
        """Until the microphone ends."""
        await asyncio.gather(*self._tasks[:1], return_exceptions=True)

    async def aclose(self) -> None:
        self._stop_reply()
        for task in list(self._tasks):  # a player's done callback removes it from the list
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            await self._listener.aclose()

    # -- Home Assistant's connection --------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._send is not None

    def attach(self, send: Send | None) -> None:
        """Home Assistant sent run-satellite on a connection (``send``), or left (None)."""
        if send is None and self._phase in ("streaming", "answering"):
            self._finish("Home Assistant disconnected")
        self._send = send

    async def from_server(self, event: Any) -> None:
        """One event Home Assistant sent (a wyoming Event; the server has checked its framing)."""
        from wyoming.asr import Transcript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.error import Error
        from wyoming.tts import Synthesize
        from wyoming.vad import VoiceStopped

        if Transcript.is_type(event.type):
            text = Transcript.from_event(event).text
            log.info("user (Home Assistant heard): %s", text)
            self._events.emit(UserInputTranscribedEvent(text, is_final=True))
            if self._phase == "streaming":
                self._end_question("Home Assistant has the transcript", send_stop=False)
        elif VoiceStopped.is_type(event.type):
            if self._phase == "streaming":
                self._end_question("Home Assistant heard the end of speech", send_stop=False)
        elif Synthesize.is_type(event.type):
            log.info("agent (Home Assistant): %s", Synthesize.from_event(event).text)
        elif AudioStart.is_type(event.type):
            AudioStart.from_event(event)  # its fields are checked: the chunks carry their own format
            self._reply_starts()
        elif AudioChunk.is_type(event.type):
            self._reply_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            if self._reply is not None:
                self._reply.put_nowait(None)
        elif Error.is_type(event.type):
            err = Error.from_event(event)
            log.warning("Home Assistant: %s (%s)", err.text, err.code)
            if self._phase in ("streaming", "answering"):
                self._finish("Home Assistant reported an error")
        else:
            log.debug("Home Assistant sent %s: nothing to do", event.type)

    # -- hearing ----------------------------------------------------------------------

    async def _hear(self) -> None:
        assert self._listener is not None
        while True:
            kind, payload = await self._listener.heard.get()
            try:
                if kind == "wake":
                    self._on_wake(payload)
                elif kind == "vad":
                    self._on_vad(payload)
                elif kind == "error":
                    log.warning("the %s stream failed: %s", *payload)
                elif kind == "end":
                    return
            except Exception:  # one bad event must not stop the ears
                log.exception("handling a %s event failed", kind)

    def _on_wake(self, ev: WakeEvent) -> None:
        if self.muted:
            return
        if ev.score < UNCHECKED_WAKE_SCORE:  # nothing here can check its words: the model alone decides
            log.debug("wake word %s (score %.2f) under %.2f: ignored", ev.word, ev.score, UNCHECKED_WAKE_SCORE)
            return
        log.info("wake word %s (score %.2f)", ev.word, ev.score)
        if self._phase == "streaming":
            return  # said again inside the question
        if self._phase == "playing":
            log.info("wake word during the reply: stopped")
        self._begin(max(0.0, ev.phrase_end - WAKE_OVERLAP_S), f"wake word {ev.word}", word=ev.word)

    def _on_vad(self, ev: VADEvent) -> None:
        listener = self._listener
        assert listener is not None
        if self._phase == "streaming":
            if ev.type is VADEventType.START_OF_SPEECH and ev.timestamp > self._stream_start + WAKE_OVERLAP_S:
                self._question_started = True
            elif ev.type is VADEventType.END_OF_SPEECH and (
                    self._question_started or ev.timestamp - ev.silence_duration > self._stream_start + WAKE_TAIL_S):
                self._end_question("end of speech")
            elif listener.now - self._stream_start > self.listen_s:
                self._end_question(f"{self.listen_s:g} s of listening")
        elif (self._phase == "playing" and self.interruption.enabled and ev.speaking
              and ev.speech_duration >= max(self.interruption.min_duration_s, BARGE_IN_S)):
            log.info("user speech over the reply (%.2f s): stopped", ev.speech_duration)
            self._begin(max(0.0, ev.timestamp - ev.speech_duration - BARGE_IN_PREFIX_S), "speech over the reply")

    # -- one pipeline run ---------------------------------------------------------------

    def _begin(self, start: float, why: str, *, word: str | None = None) -> None:
        """A new run: the question from stream time ``start``; any reply stops now."""
        from wyoming.pipeline import PipelineStage, RunPipeline
        from wyoming.wake import Detection

        self._stop_reply()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._send is None:
            log.warning("%s, but no Home Assistant is connected (waiting for run-satellite)", why)
            self._finish("no Home Assistant")
            return
        assert self._listener is not None
        self._run_id += 1
        self._phase, self._stream_start, self._question_started = "streaming", start, False
        while not self._chunks.empty():
            self._chunks.get_nowait()
        if word is not None:
            self._chunks.put_nowait(_Event(Detection(name=word).event()))
        self._chunks.put_nowait(_Event(RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS,
                                                   wake_word_name=word).event()))
        self._listener.open_utterance(start)  # its frames come to _relay
        self._set_state(AgentState.LISTENING)
        log.info("run %d: streaming the question to Home Assistant (%s)", self._run_id, why)

    def _relay(self, frame: AudioFrame) -> None:
        if self._phase == "streaming":
            self._chunks.put_nowait(frame)

    def _end_question(self, why: str, *, send_stop: bool = True) -> None:
        assert self._listener is not None
        log.info("run %d: question ended (%s)", self._run_id, why)
        self._listener.drop_utterance()
        self._phase = "answering"
        if send_stop:
            self._chunks.put_nowait(None)
        self._set_state(AgentState.THINKING)
        run = self._run_id
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.answer_s, self._too_late, run)

    def _too_late(self, run: int) -> None:
        if run == self._run_id and self._phase == "answering":
            log.warning("run %d: no answer from Home Assistant within %g s", run, self.answer_s)
            self._finish("no answer")

    def _finish(self, why: str) -> None:
        if self._listener is not None:
            self._listener.drop_utterance()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._phase != "idle":
            log.info("run %d: over (%s)", self._run_id, why)
        self._phase = "idle"
        self._set_state(AgentState.IDLE)

    async def _stream_question(self) -> None:
        """Sends the question's frames as they come: audio-start, audio-chunks, audio-stop."""
        from wyoming.audio import AudioChunk, AudioStart, AudioStop

        started_for = 0
        while True:
            item = await self._chunks.get()
            send = self._send
            if isinstance(item, _Event):  # queued by _begin, in order with the audio
                if send is not None:
                    await send_or_log(send, item.event)
                continue
            if send is None:
                continue
            if item is None:
                await send_or_log(send, AudioStop().event())
                started_for = 0
                continue
            if started_for != self._run_id:
                started_for = self._run_id
                await send_or_log(send, AudioStart(rate=RECOGNITION_RATE, width=2, channels=1).event())
            chunk = AudioChunk(rate=RECOGNITION_RATE, width=2, channels=1, audio=item.to_bytes())
            await send_or_log(send, chunk.event())

    # -- the answer ---------------------------------------------------------------------

    def _reply_starts(self) -> None:
        if self._phase not in ("answering", "streaming"):
            log.info("Home Assistant's audio outside a run (or after a barge-in): not played")
            return
        if self._phase == "streaming":
            self._end_question("Home Assistant answers", send_stop=False)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = "playing"
        queue: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        self._reply = queue
        task = asyncio.ensure_future(self._play(queue, self._run_id))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _reply_chunk(self, chunk: Any) -> None:
        if self._reply is not None and (frame := chunk_frame(chunk)) is not None:
            self._reply.put_nowait(frame)

    async def _play(self, queue: asyncio.Queue[AudioFrame | None], run: int) -> None:
        from wyoming.snd import Played

        out = self._out
        assert out is not None and self._listener is not None
        first = True
        while (frame := await queue.get()) is not None and queue is self._reply:  # else: stopped
            if first:
                self._listener.set_playing(True)
                self._set_state(AgentState.SPEAKING)
                first = False
            await out.write(frame)
        await out.drain()
        if run != self._run_id or queue is not self._reply:
            return  # stopped by a barge-in: that run is over
        self._reply = None
        self._listener.set_playing(False)
        if self._send is not None:
            await send_or_log(self._send, Played().event())
        self._finish("the answer has played")

    def _stop_reply(self) -> None:
        if self._reply is None:
            return
        self._reply.put_nowait(None)  # its player ends (and sends no played)
        self._reply = None
        if self._out is not None:
            self._out.clear()
        if self._listener is not None:
            self._listener.set_playing(False)

    def _set_state(self, state: AgentState) -> None:
        if state is not self.state:
            old, self.state = self.state, state
            self._events.emit(AgentStateChangedEvent(old, state))

