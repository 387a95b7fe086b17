"""The ears of a session: the mic in, echo cancelled, into wake word, VAD and STT, events out.

Every 16 kHz frame goes, in order, through the echo canceller (when there is
one) to the VAD, to the wake word stream (when wake mode has one; through a noise
suppressor of its own when ``wake_noise_suppression``, :mod:`edgeagent.audio.denoise`) and to the
history ring; while an utterance is open, to its STT stream too. What the
streams report comes out of one queue, :attr:`Listener.heard`, in arrival order,
as ``("vad", VADEvent)``, ``("wake", WakeEvent)``, ``("stt", (utterance id,
SpeechEvent))``, ``("error", (source, exception))`` and ``("end", None)`` when
the input ran out.

All streams see the same frames from the same first sample, so their stream
times (seconds of audio pushed) agree; :meth:`Listener.capture_time` turns one
into the monotonic time the microphone captured it.

Without echo cancellation the agent would hear itself: while it plays (and for
:data:`ECHO_TAIL_S` after), silence is fed instead of the mic, so neither the VAD
nor the wake word reacts to our own voice (and there is no barge-in).

The stages can change while it runs (remote configuration): :meth:`Listener.use_stt`
for the next utterance, :meth:`Listener.use_vad` and :meth:`Listener.use_wake` with a new
stream from the next frame on, whose times are shifted to the listener's stream time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np

from edgeagent.audio.denoise import NoiseSuppressor
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.resample import Resampler
from edgeagent.stage import StageStream
from edgeagent.stt.base import STT, SpeechEvent, STTStream
from edgeagent.vad.base import VAD
from edgeagent.voice.audio_history import AudioHistory
from edgeagent.wake.base import WakeWord

log = logging.getLogger(__name__)

HISTORY_S = 12.0
"""Audio kept for the STT before an utterance opens (wake word lag, VAD lag, prefix)."""
ECHO_TAIL_S = 0.35
"""Without echo cancellation: how long after playback the mic stays ignored (room echo,
device latency)."""
MAX_BACKLOG = 4
"""Frames an input read faster than real time may run ahead of the VAD and the wake word."""


class Listener:
    """Runs the input side until :meth:`aclose`; see the module docs."""

    def __init__(self, inp: AudioInput, vad: VAD, stt: STT, wake: WakeWord | None, *, echo: Any = None,
                 ignore_own_playback: bool = True, wake_noise_suppression: bool = False) -> None:
        self.ignore_own_playback = ignore_own_playback
        self.wake_noise_suppression = wake_noise_suppression
        self._wake_ns: NoiseSuppressor | None = None
        self._in = inp
        self._vad_stage = vad
        self._stt_stage = stt
        self._wake_stage = wake
        self.echo = echo
        """An :class:`~edgeagent.audio.echo.EchoCanceller`, or None."""
        self.heard: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.history = AudioHistory(HISTORY_S)
        self._pushed = 0  # 16 kHz samples fed to the streams
        self._origin: float | None = None  # capture time of stream sample 0
        self._vad: StageStream[AudioFrame, Any] | None = None
        self._wake: StageStream[AudioFrame, Any] | None = None
        self._stt: STTStream | None = None
        self._stt_reader: asyncio.Task[None] | None = None
        self.utterance_id = 0
        self._readers: dict[str, asyncio.Task[None]] = {}  # "vad", "wake"
        self._pump_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._playing = False
        self._played_until = 0.0  # monotonic end of the last playback
        self.muted = False
        """Muted: silence is fed instead of the mic (the streams and the clock keep going)."""
        self.ended = False

    @classmethod
    def build(cls, inp: AudioInput, out: AudioOutput, vad: VAD, stt: STT, wake: WakeWord | None, *,
              echo_cancellation: bool, noise_suppression: bool, ignore_own_playback: bool,
              wake_noise_suppression: bool) -> Listener:
        """The ears of a session on ``inp``, with an echo canceller that hears ``out`` (when
        ``echo_cancellation``; with WebRTC's noise suppression when ``noise_suppression``)."""
        echo = None
        if echo_cancellation:
            from edgeagent.audio.echo import EchoCanceller

            echo = EchoCanceller(noise_suppression=noise_suppression)
            if isinstance(out, BufferedOutput):
                echo.attach(out)
        return cls(inp, vad, stt, wake, echo=echo, ignore_own_playback=ignore_own_playback,
                   wake_noise_suppression=wake_noise_suppression)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._vad = self._start_stream("vad", self._vad_stage.stream())
        if self._wake_stage is not None:
            self._wake = self._start_wake(self._wake_stage)
        self._pump_task = asyncio.ensure_future(self._pump())

    def _start_stream(self, name: str, stream: StageStream[AudioFrame, Any]) -> StageStream[AudioFrame, Any]:
        """Read ``stream``'s events into :attr:`heard`, their times shifted by the stream time now."""
        self._readers[name] = asyncio.ensure_future(self._read(name, stream, self.now))
        return stream

    def _retire(self, name: str, stream: StageStream[AudioFrame, Any] | None) -> None:
        """Stop reading ``stream`` now and close it in the background."""
        reader = self._readers.pop(name, None)
        if stream is None and reader is None:
            return
        task = asyncio.ensure_future(_close(stream, reader))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- changing stages -------------------------------------------------------

    def use_stt(self, stt: STT) -> None:
        """Recognise the next utterances with ``stt`` (one open now finishes on the old stage)."""
        self._stt_stage = stt

    def use_vad(self, vad: VAD) -> None:
        """Detect speech with ``vad`` from the next frame on (a new stream)."""
        self._vad_stage = vad
        if self._vad is None or self.ended:
            return
        old, self._vad = self._vad, None
        self._retire("vad", old)
        self._vad = self._start_stream("vad", vad.stream())

    def use_wake(self, wake: WakeWord | None) -> None:
        """Listen for ``wake`` from the next frame on; None: no wake word stream."""
        if wake is self._wake_stage and (wake is None or self._wake is not None or self._vad is None):
            return
        self._wake_stage = wake
        if self._vad is None or self.ended:
            return  # not started (start() opens it) or over
        old, self._wake = self._wake, None
        self._retire("wake", old)
        if wake is not None:
            self._wake = self._start_wake(wake)

    def _start_wake(self, wake: WakeWord) -> StageStream[AudioFrame, Any]:
        """A stream of ``wake``, behind a fresh noise suppressor when it has one."""
        self._wake_ns = NoiseSuppressor.optional() if self.wake_noise_suppression else None
        return self._start_stream("wake", wake.stream())

    async def aclose(self) -> None:
        tasks = [*self._readers.values(), *([self._pump_task] if self._pump_task is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.close_utterance()
        for stream in (self._vad, self._wake):
            if stream is not None:
                await stream.aclose()
        if self.echo is not None:
            self.echo.close()  # the echo canceller it was given is closed with it

    # -- time ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Stream time: seconds of audio fed so far."""
        return self._pushed / RECOGNITION_RATE

    def capture_time(self, stream_time: float) -> float:
        """Monotonic capture time of stream time ``stream_time`` (now, without timestamps)."""
        if self._origin is None:
            return time.monotonic() - (self.now - stream_time)
        return self._origin + stream_time

    # -- playback (echo without a canceller) -------------------------------------

    def set_playing(self, playing: bool) -> None:
        if self._playing and not playing:
            self._played_until = time.monotonic()
        self._playing = playing

    @property
    def deaf(self) -> bool:
        """Ignoring the mic because our own voice may be in it: while the agent plays and
        for a tail after, without an echo canceller; with one, only while it is unsettled."""
        if not self.ignore_own_playback:
            return False
        if self.echo is not None:
            return bool(self.echo.unsettled)
        return self._playing or time.monotonic() < self._played_until + ECHO_TAIL_S

    # -- utterances --------------------------------------------------------------

    def open_utterance(self, start: float, prefix: str = "", prefix_end: float = -math.inf) -> int:
        """A new STT stream fed from stream time ``start`` on (``prefix``: words it begins with,
        said until ``prefix_end``, see :meth:`STT.stream`); returns its id."""
        self.drop_utterance()
        self.utterance_id += 1
        stream = self._stt_stage.stream(prefix=prefix, prefix_s=max(0.0, prefix_end - start))
        self._stt = stream
        for frame in self.history.after(start):
            stream.push(frame)
        uid = self.utterance_id
        self._stt_reader = asyncio.ensure_future(self._read_stt(uid, stream))
        return uid

    def flush(self, quiet_s: float = 0.0) -> None:
        """The open utterance's FINAL is due; the VAD heard its last ``quiet_s`` as no speech."""
        if self._stt is not None and not self._stt.closed:
            self._stt.flush(quiet_s)

    def reopen(self) -> None:
        if self._stt is not None and not self._stt.closed:
            self._stt.reopen()

    async def close_utterance(self) -> None:
        stream, reader = self._stt, self._stt_reader
        self._stt = self._stt_reader = None
        await _close(stream, reader)

    def drop_utterance(self) -> None:
        """Stop feeding the open utterance now and close its stream in the background."""
        if self._stt is None:
            return
        stream, reader = self._stt, self._stt_reader
        self._stt = self._stt_reader = None
        task = asyncio.ensure_future(_close(stream, reader))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- the pump ----------------------------------------------------------------

    async def _pump(self) -> None:
        rate = getattr(self._in, "sample_rate", RECOGNITION_RATE)
        resampler = None if rate == RECOGNITION_RATE else Resampler(rate, RECOGNITION_RATE)
        try:
            async for frame in self._in:
                if resampler is not None:
                    frame = resampler.push(frame)
                if frame.num_samples:
                    self._feed(frame)
                    if not self._in.realtime:
                        await self._keep_up()
        except Exception as exc:
            log.exception("the audio input failed")
            self.heard.put_nowait(("error", ("input", exc)))
        finally:
            # The streams finish what they have (their last events come first), then "end".
            for stream in (self._vad, self._wake):
                if stream is not None:
                    stream.end_input()
            await asyncio.gather(*self._readers.values(), return_exceptions=True)
            self.ended = True
            self.heard.put_nowait(("end", None))

    async def _keep_up(self) -> None:
        """Wait while the VAD or the wake word is more than :data:`MAX_BACKLOG` frames behind: an
        input read faster than real time (``run --input --fast``) would otherwise queue a whole
        file in their streams (a 2-hour file: 1.28 GB peak RSS) and report a wake word only after
        the question's audio had left the history (none of its 4 questions was heard)."""
        for stream in (self._vad, self._wake):
            if stream is not None:
                await stream.caught_up(MAX_BACKLOG)

    def _feed(self, frame: AudioFrame) -> None:
        if frame.timestamp is not None:
            self._origin = frame.timestamp - self.now
        if self.echo is not None:
            frame = self.echo.process_capture(frame)
        if self.muted or self.deaf:
            frame = AudioFrame.from_int16(np.zeros(frame.num_samples, np.int16), RECOGNITION_RATE, frame.timestamp)
        self._pushed += frame.num_samples
        self.history.add(frame)
        assert self._vad is not None
        self._vad.push(frame)
        if self._wake is not None:
            self._wake.push(frame if self._wake_ns is None else self._wake_ns.process(frame))
        if self._stt is not None and not self._stt.closed:
            self._stt.push(frame)

    async def _read(self, name: str, stream: StageStream[AudioFrame, Any], offset: float = 0.0) -> None:
        try:
            async for event in stream:
                if offset:  # a stream started after the first frame counts from its own start
                    event = dataclasses.replace(event, timestamp=event.timestamp + offset)
                self.heard.put_nowait((name, event))
        except Exception as exc:
            log.exception("the %s stream failed", name)
            self.heard.put_nowait(("error", (name, exc)))

    async def _read_stt(self, uid: int, stream: StageStream[AudioFrame, SpeechEvent]) -> None:
        try:
            async for event in stream:
                self.heard.put_nowait(("stt", (uid, event)))
        except Exception as exc:
            log.warning("speech recognition failed: %s", exc)
            self.heard.put_nowait(("error", ("stt", exc)))


async def _close(stream: StageStream[AudioFrame, Any] | None, reader: asyncio.Task[None] | None) -> None:
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    if stream is not None:
        await stream.aclose()
