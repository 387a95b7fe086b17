"""Whisper speech-to-text, packaged tiny.en by default: the stage and its stream.

Decoding itself (model loading, the encoder window, the hallucination guard) is
in :mod:`edgeagent.stt.whisper_decoder`; this module decides *when* to decode.
One decode costs about the same whatever the length (the encoder sees a padded
window), so a :class:`WhisperStream`:

- decodes the utterance so far every ``partial_interval`` seconds of new audio
  and emits INTERIM hypotheses, but only when the inference thread is idle (no
  backlog ever builds up), and never more than ``max_duty`` of the time. A due
  decode starts at the next 20 ms pause (at the latest after a second interval):
  one started mid-word just before the end of speech would hold the thread
  when the FINAL is needed, while one started in the final pause *is* the FINAL
  (in a simulation over 12 utterances at 350 ms per decode, this cut the share of
  FINALs delayed by a running partial from 26 % to 9 %);
- on :meth:`WhisperStream.reopen` (the user carried on after the flush) continues
  the last utterance, so the next FINAL is one decode of all of it;
- on ``flush()`` (the session calls it when the VAD first reports silence)
  starts the FINAL decode at once, or reuses a decode that already covers the
  utterance: one of exactly the current audio, or one whose only missing audio
  is a quiet tail (every 10 ms block ``reuse_quiet_db`` below the loudest) or
  audio the VAD heard as no speech (``flush(quiet_s)``): a partial begun as the
  speech ended is the FINAL even when the last word's fading tail is louder than
  that (it was decoded again after the partial, ~200 ms later, in scripts/bench).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Float32Array
from edgeagent.metrics import STTMetrics
from edgeagent.stage import Flush, InferenceThread, StageClosedError
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream
from edgeagent.stt.buffer import UtteranceBuffer
from edgeagent.stt.whisper_decoder import DEFAULT_MODEL, Transcript, WhisperDecoder

if TYPE_CHECKING:
    from edgeagent.config import Config

__all__ = ["DEFAULT_MODEL", "Transcript", "WhisperSTT", "WhisperStream"]

log = logging.getLogger(__name__)

PAUSE_SAMPLES = RECOGNITION_RATE // 50
"""A due partial decode waits for this much quiet (20 ms), so that it rarely
keeps the thread busy when speech ends (then the FINAL would wait for it)."""

END_GUESS_SAMPLES = 6 * RECOGNITION_RATE // 100
"""This much quiet (60 ms) after new sound may be the end of the utterance: decode it now."""

END_GUESS_SOUND = RECOGNITION_RATE // 4
"""... if at least this much audio (0.25 s) came since the last decode."""


@dataclass
class _Decode:
    samples: int
    """How many samples of the utterance this decode saw."""
    task: asyncio.Task[Transcript | None]


class _Reopen:
    """Input marker: continue the last utterance (see :meth:`WhisperStream.reopen`)."""


_REOPEN = _Reopen()


@dataclass
class _Utterance:
    buffer: UtteranceBuffer = field(default_factory=UtteranceBuffer)
    decode: _Decode | None = None
    """The latest decode started (running or finished)."""
    finalizing: bool = False
    partials: int = 0
    last_interim: str = ""
    processing_s: float = 0.0
    known: int = 0
    """Samples at its start whose words are known (the stream's prefix, a wake phrase): a decode
    of them alone would only write those words, so none starts before sound after them."""


class WhisperSTT(STT):
    """faster-whisper on the CPU; one inference thread shared by its streams."""

    provider = "whisper"
    default_model = ("model", "whisper-tiny-en")

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[stt]``: ``model`` and ``partials`` (Whisper's interim decodes cost CPU; vosk's do not)."""
        return {**super().config_options(cfg), "partials": cfg.stt.partials}

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        language: str = "en",
        cpu_threads: int | None = None,
        compute_type: str = "int8",
        beam_size: int = 1,
        partial_interval: float = 1.0,
        max_duty: float = 0.4,
        partials: bool = True,
        reuse_quiet_db: float = -35.0,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        encoder_window: float = 20.0,
        encoder_margin: float = 5.0,
    ) -> None:
        """
        Args:
            model: CTranslate2 model directory; default: the manifest's ``whisper-tiny-en``.
            language: language code passed to Whisper (tiny.en knows only "en").
            cpu_threads: CTranslate2 intra-op threads (default: cores, at most 4).
            compute_type: CTranslate2 quantisation ("int8" is fastest on ARM and x86).
            beam_size: 1 is greedy decoding, the fastest.
            partial_interval: seconds of new audio between INTERIM decodes.
            max_duty: most of the time partial decodes may keep the thread busy; the
                interval grows to ``last decode time / max_duty`` on slow boards.
            partials: False decodes only on flush (no INTERIM events).
            reuse_quiet_db: a decode missing only a tail this far below the loudest
                10 ms block is reused as the FINAL.
            no_speech_threshold, logprob_threshold: the hallucination guard
                (see :mod:`edgeagent.stt.whisper_decoder`).
            encoder_window: least seconds of the 30 s window the encoder sees (30: all of it;
                see :mod:`edgeagent.stt.whisper_decoder` for the accuracy measured).
            encoder_margin: seconds of padding the encoder sees after the audio.
        """
        super().__init__()
        self.language = language
        self.partial_interval = partial_interval
        self.max_duty = max_duty
        self.partials_enabled = partials
        self.reuse_quiet_db = reuse_quiet_db
        self.decoder = WhisperDecoder(
            model,
            language=language,
            cpu_threads=cpu_threads,
            compute_type=compute_type,
            beam_size=beam_size,
            no_speech_threshold=no_speech_threshold,
            logprob_threshold=logprob_threshold,
            encoder_window=encoder_window,
            encoder_margin=encoder_margin,
            quiet_db=reuse_quiet_db,
        )
        self._thread = InferenceThread("stt-whisper")

    # -- decoding (on the inference thread) ---------------------------------------

    def transcribe(self, audio: Float32Array, language: str | None = None, prefix: str = "") -> Transcript:
        """Decode 16 kHz float32 samples synchronously (call it off the event loop)."""
        return self.decoder.transcribe(audio, language, prefix)

    @property
    def last_decode_s(self) -> float:
        """Wall time of the latest decode; paces partials."""
        return self.decoder.last_decode_s

    async def _decode(self, audio: Float32Array, language: str | None, prefix: str = "") -> Transcript:
        return await self._thread.run(self.transcribe, audio, language, prefix)

    # -- the STT contract -------------------------------------------------------

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> WhisperStream:
        return WhisperStream(self, language or self.language, prefix, prefix_s)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        buf = UtteranceBuffer()
        buf.push(audio)
        buf.finish()
        start = time.monotonic()
        result = await self._decode(buf.float32(), language)
        delay = time.monotonic() - start
        self._report(STTMetrics(self.provider, buf.duration, result.seconds, delay, 0))
        lang = language or self.language
        return SpeechEvent(SpeechEventType.FINAL, result.text, lang, result.confidence, buf.duration, delay)

    async def warmup(self) -> None:
        """One decode of a short tone, so the first real decode is not the slow first one."""
        t = [0.1 * math.sin(2 * math.pi * 220 * i / RECOGNITION_RATE) for i in range(RECOGNITION_RATE)]
        await self._decode(AudioFrame.from_float(t, RECOGNITION_RATE).to_float32(), None)

    async def aclose(self) -> None:
        self._thread.shutdown()


class WhisperStream(STTStream):
    """One stream of utterances: INTERIM while audio arrives, FINAL on each flush()."""

    def __init__(self, stt: WhisperSTT, language: str, prefix: str = "", prefix_s: float = 0.0) -> None:
        self._stt = stt
        self._language = language
        self._prefix = prefix
        self._known = round(prefix_s * RECOGNITION_RATE) if prefix else 0
        self._flush_times: collections.deque[tuple[float, float]] = collections.deque()
        """(monotonic time, quiet_s) of each flush() not yet read from the input."""
        self._tasks: set[asyncio.Task[Transcript | None]] = set()
        super().__init__()

    def flush(self, quiet_s: float = 0.0) -> None:
        super().flush()
        self._flush_times.append((time.monotonic(), max(0.0, quiet_s)))

    def reopen(self) -> None:
        """The user carried on after flush(): the next FINAL covers the last utterance's
        audio as well as what follows (one decode of all of it, not two halves)."""
        if self._input_ended or self.closed:
            raise StageClosedError(f"{type(self).__name__}: reopen after end_input/aclose")
        self._in.put_nowait(_REOPEN)

    async def _run(self) -> None:
        utt = _Utterance(known=self._known)
        previous: _Utterance | None = None
        try:
            async for item in self._inputs():
                if isinstance(item, Flush):
                    flushed, quiet_s = self._flush_times.popleft() if self._flush_times else (time.monotonic(), 0.0)
                    await self._finalize(utt, flushed, round(quiet_s * RECOGNITION_RATE))
                    previous, utt = utt, _Utterance()
                elif isinstance(item, _Reopen):
                    if previous is not None:
                        utt, previous = _join(previous, utt), None
                else:
                    utt.buffer.push(item)
                    self._maybe_partial(utt)
            if utt.buffer.num_samples:  # end_input() ends the last utterance too
                await self._finalize(utt, time.monotonic(), 0)
        finally:
            for task in self._tasks:
                task.cancel()

    # -- partial hypotheses -----------------------------------------------------

    def _maybe_partial(self, utt: _Utterance) -> None:
        stt = self._stt
        last = utt.decode
        if last is not None and not last.task.done():
            return  # busy: skip, never queue
        done = last.samples if last is not None else utt.known
        buf = utt.buffer
        if buf.num_samples <= done or buf.quiet_after(done, stt.reuse_quiet_db):
            return  # nothing but quiet (or the known prefix) since the last decode
        new = buf.num_samples - done
        if new >= self._guess_gap() and buf.quiet_after(buf.num_samples - END_GUESS_SAMPLES, stt.reuse_quiet_db):
            self._start_decode(utt, partial=True)  # perhaps the end: the FINAL will reuse it
            return
        if not stt.partials_enabled:
            return
        interval = max(stt.partial_interval, stt.last_decode_s / stt.max_duty if stt.max_duty > 0 else 0.0)
        if new < interval * RECOGNITION_RATE:
            return  # too little new audio
        in_pause = buf.quiet_after(buf.num_samples - PAUSE_SAMPLES, stt.reuse_quiet_db)
        if not in_pause and new < 2 * interval * RECOGNITION_RATE:
            return  # due, but wait (up to one more interval) for a pause
        self._start_decode(utt, partial=True)

    def _guess_gap(self) -> float:
        """Least new audio (samples) between end guesses: :data:`END_GUESS_SOUND`, more on a
        board slow enough that guesses would keep the thread busy beyond ``max_duty``."""
        stt = self._stt
        if stt.max_duty <= 0:
            return END_GUESS_SOUND
        return max(END_GUESS_SOUND, stt.last_decode_s * (1 / stt.max_duty - 1) * RECOGNITION_RATE)

    def _start_decode(self, utt: _Utterance, *, partial: bool) -> _Decode:
        n = utt.buffer.num_samples
        log.debug("%s decode of %.2f s of audio", "partial" if partial else "final", n / RECOGNITION_RATE)
        task = asyncio.get_running_loop().create_task(self._decode(utt, n, partial))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        utt.decode = _Decode(n, task)
        return utt.decode

    async def _decode(self, utt: _Utterance, n: int, partial: bool) -> Transcript | None:
        try:
            result = await self._stt._decode(utt.buffer.float32(n), self._language, self._prefix)
        except Exception:
            if not partial:
                raise
            log.warning("partial whisper decode failed", exc_info=True)
            return None
        utt.processing_s += result.seconds
        if (partial and self._stt.partials_enabled and not utt.finalizing and result.text
                and result.text != utt.last_interim):
            utt.last_interim = result.text
            utt.partials += 1
            seconds = n / RECOGNITION_RATE
            self._emit(SpeechEvent(SpeechEventType.INTERIM, result.text, self._language, result.confidence, seconds))
        return result

    # -- the final transcript ---------------------------------------------------

    async def _finalize(self, utt: _Utterance, flushed: float, quiet: int) -> None:
        """The FINAL: the latest decode when it covers the utterance (all of its audio, or all but
        a quiet tail: one the VAD heard as no speech, ``quiet`` samples, or one every 10 ms
        block of which is ``reuse_quiet_db`` below the loudest); else a decode of it all."""
        utt.finalizing = True
        utt.buffer.finish()
        last = utt.decode
        result: Transcript | None = None
        buf = utt.buffer
        how = "decoded"
        if last is not None and (
            last.samples >= buf.num_samples - quiet or buf.quiet_after(last.samples, self._stt.reuse_quiet_db)
        ):
            how = "reused a finished decode" if last.task.done() else "reused a running decode"
            result = await last.task  # it covers the whole utterance: reuse it
        if result is None:
            if last is not None and not last.task.done():
                how = "decoded after a running partial"
            result = await self._start_decode(utt, partial=False).task
            assert result is not None
        delay = time.monotonic() - flushed
        audio_s = buf.duration
        log.debug("FINAL %.0f ms after flush (%s): %r", 1000 * delay, how, result.text)
        self._emit(
            SpeechEvent(SpeechEventType.FINAL, result.text, self._language, result.confidence, audio_s, delay)
        )
        self._stt._report(STTMetrics(self._stt.provider, audio_s, utt.processing_s, delay, utt.partials))


def _join(previous: _Utterance, current: _Utterance) -> _Utterance:
    """``previous`` (finalized) reopened, with any audio of ``current`` appended."""
    previous.finalizing = False
    current.finalizing = True  # a partial decode of it still running must not emit
    if current.buffer.num_samples:
        current.buffer.finish()
        previous.buffer.push(AudioFrame.from_int16(current.buffer.int16(), RECOGNITION_RATE))
        previous.processing_s += current.processing_s
        previous.partials += current.partials
    return previous
