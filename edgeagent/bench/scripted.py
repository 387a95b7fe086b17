"""The scripted world of the voice benchmark: questions, a real-time mic, a timed speaker.

- :func:`make_questions` speaks the questions with espeak-ng (not the agent's Piper
  voice), each preceded by the wake word, after a short pause or in one breath.
- :func:`speech_end` finds the true end of speech: the end of the last 10 ms block
  above an energy threshold, not the length of the synthesised audio.
- :class:`ScriptedMic` is an :class:`AudioInput` that emits 20 ms frames on an
  absolute real-time schedule (room noise by default); :meth:`ScriptedMic.speak`
  puts a question into it at the current capture time and knows the capture time
  of its last non-silent sample.
- :class:`TimedSpeaker` is a sound-card stand-in (a real-time :class:`WavFileOutput`)
  that records when the first reply sample after :meth:`TimedSpeaker.arm` was
  handed to the sink.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Int16Array
from edgeagent.audio.io import AudioInput, IOCounters
from edgeagent.audio.resample import float_to_int16, resample
from edgeagent.audio.wav import PathLike, WavFileOutput
from edgeagent.errors import ConfigError

QUESTIONS = (  # ones whisper tiny.en gets right in espeak-ng's voice at 150 wpm (most do not)
    "How many legs does a spider have?",
    "What color is the sky?",
    "Who wrote Hamlet?",
    "What is the boiling point of water?",
    "What is the largest planet in the solar system?",
    "What is the tallest mountain in the world?",
    "How far away is the moon?",
    "What is the capital of Japan?",
    "Who painted the Mona Lisa?",
    "What language is spoken in Brazil?",
    "How many continents are there?",
    "Can you tell me a joke?",
    "How do plants make food?",
    "What is the chemical symbol for gold?",
)
WAKE_PHRASE = "Hey Jarvis."  # openWakeWord's hey_jarvis fires on espeak-ng's rendering
WAKE_PAUSE_S = 0.5
ONE_BREATH_EVERY = 4
"""Every fourth question follows the wake word in one breath ("Hey Jarvis, what ...")."""
SILENCE_DBFS = -45.0
"""A 10 ms block quieter than this counts as silence (espeak-ng pads with digital zeros)."""
BLOCK_S = 0.01


@dataclass(frozen=True)
class Question:
    text: str
    audio: AudioFrame
    """Wake word and question at 16 kHz, as the mic will hear it."""
    question_audio: AudioFrame
    """The question alone (the sequential baseline has no wake word)."""
    one_breath: bool


def espeak(text: str, voice: str = "en-us", wpm: int = 150, rate: int = RECOGNITION_RATE) -> AudioFrame:
    """``text`` spoken by espeak-ng at ``rate``; ConfigError when espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("espeak-ng is not installed (sudo apt-get install espeak-ng, or run scripts/setup)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(wpm), "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    data, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(AudioFrame.from_int16(float_to_int16(data), int(sr)), rate)


def make_questions(n: int, texts: Sequence[str] = QUESTIONS) -> list[Question]:
    """``n`` questions (cycling through ``texts``), each preceded by the wake word."""
    if n < 1:
        raise ValueError("at least one question")
    wake = espeak(WAKE_PHRASE)
    pause = AudioFrame.silence(WAKE_PAUSE_S, RECOGNITION_RATE)
    out = []
    for i in range(n):
        text = texts[i % len(texts)]
        alone = espeak(text)
        one_breath = i % ONE_BREATH_EVERY == ONE_BREATH_EVERY - 1
        if one_breath:
            audio = espeak(f"Hey Jarvis, {text[0].lower()}{text[1:]}")
        else:
            audio = AudioFrame.concat([trim(wake), pause, trim(alone)])
        out.append(Question(text, trim(audio), trim(alone), one_breath))
    return out


def _loud_blocks(frame: AudioFrame, threshold_dbfs: float) -> npt.NDArray[np.intp]:
    """Indices of the 10 ms blocks louder than ``threshold_dbfs``."""
    block = max(1, round(BLOCK_S * frame.sample_rate))
    n = frame.num_samples // block + (frame.num_samples % block > 0)
    padded = np.zeros(n * block, np.float64)
    padded[: frame.num_samples] = frame.samples / 32768.0
    rms = np.sqrt(np.mean(padded.reshape(n, block) ** 2, axis=1))
    limit = 10.0 ** (threshold_dbfs / 20.0)
    return np.flatnonzero(rms > limit)


def speech_end(frame: AudioFrame, threshold_dbfs: float = SILENCE_DBFS) -> float:
    """Seconds from the start of ``frame`` to the end of its last non-silent 10 ms block
    (0.0 when it is all silence)."""
    loud = _loud_blocks(frame, threshold_dbfs)
    if not len(loud):
        return 0.0
    block = max(1, round(BLOCK_S * frame.sample_rate))
    return min(frame.num_samples, (int(loud[-1]) + 1) * block) / frame.sample_rate


def trim(frame: AudioFrame, threshold_dbfs: float = SILENCE_DBFS) -> AudioFrame:
    """``frame`` without the silence before its first and after its last loud block."""
    loud = _loud_blocks(frame, threshold_dbfs)
    if not len(loud):
        return frame
    block = max(1, round(BLOCK_S * frame.sample_rate))
    return frame.slice(int(loud[0]) * block, (int(loud[-1]) + 1) * block)


@dataclass(frozen=True)
class Spoken:
    """A question put into the mic: capture times on the monotonic clock."""

    start: float
    end: float
    """The capture time of the end of its last non-silent block: the true end of speech."""
    done: float
    """The capture time of its last sample."""


class ScriptedMic(AudioInput):
    """A microphone that hears what :meth:`speak` is given, over room noise, in real time.

    Frame ``i`` holds samples ``[i*N, (i+1)*N)``, captured from ``start + i*N/rate``
    (its ``timestamp``) and released at the end of that span, on an absolute
    schedule: a consumer that falls behind gets the frames late, with their true
    capture times, as from a sound card's buffer. ``noise_dbfs`` is the level of
    the white room noise (None: digital silence).
    """

    def __init__(self, rate: int = RECOGNITION_RATE, frame_ms: float = 20.0, *,
                 noise_dbfs: float | None = -65.0, seed: int = 0) -> None:
        self.sample_rate = rate
        self.frame_samples = round(rate * frame_ms / 1000)
        self.counters = IOCounters()
        self.noise = None if noise_dbfs is None else 10.0 ** (noise_dbfs / 20.0) * 32768.0
        self.max_lateness = 0.0
        """The longest a frame waited for its consumer after it was due (s)."""
        self._rng = np.random.default_rng(seed)
        self._script: list[tuple[int, Int16Array]] = []  # (first sample index, samples)
        self._start: float | None = None
        self._emitted = 0  # samples handed out so far
        self._closed = False

    @property
    def start(self) -> float:
        """Capture time of sample 0 (fixed by the first read)."""
        if self._start is None:
            self._start = time.monotonic()
        return self._start

    def speak(self, audio: AudioFrame) -> Spoken:
        """Start saying ``audio`` now (from the first sample not yet handed out)."""
        if audio.sample_rate != self.sample_rate:
            audio = resample(audio, self.sample_rate)
        now_index = round((time.monotonic() - self.start) * self.sample_rate)
        first = max(self._emitted, now_index)
        self._script.append((first, audio.samples))
        t0 = self.start + first / self.sample_rate
        return Spoken(t0, t0 + speech_end(audio), t0 + audio.duration)

    @property
    def busy(self) -> bool:
        """Something spoken has not been handed out in full yet."""
        return any(first + len(s) > self._emitted for first, s in self._script)

    def _frame(self, index: int) -> Int16Array:
        n = self.frame_samples
        lo, hi = index * n, (index + 1) * n
        mix = np.zeros(n, np.float64) if self.noise is None else self._rng.normal(0.0, self.noise, n)
        for first, samples in self._script:
            a, b = max(lo, first), min(hi, first + len(samples))
            if a < b:
                mix[a - lo : b - lo] += samples[a - first : b - first]
        self._script = [(f, s) for f, s in self._script if f + len(s) > hi]
        return np.clip(np.round(mix), -32768, 32767).astype(np.int16)

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        frame_s = self.frame_samples / self.sample_rate
        start = self.start
        while not self._closed:
            index = self._emitted // self.frame_samples
            due = start + (index + 1) * frame_s  # the frame exists once captured in full
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_lateness = max(self.max_lateness, -delay)
            if self._closed:
                return
            samples = self._frame(index)
            self._emitted += self.frame_samples
            self.counters.frames += 1
            yield AudioFrame.from_int16(samples, self.sample_rate, start + index * frame_s)

    async def aclose(self) -> None:
        self._closed = True


class TimedSpeaker(WavFileOutput):
    """A real-time stand-in speaker that records (to ``path``) what the agent says.

    After :meth:`arm`, the monotonic time the first block holding a non-zero sample
    (with ``first_dbfs``: the first block louder than that, RMS) is handed to the sink
    becomes :attr:`first_sample`; :attr:`last_sound` is when the latest non-zero block was.
    """

    def __init__(self, path: PathLike, rate: int = RECOGNITION_RATE, *, buffer_ms: float = 60.0,
                 first_dbfs: float | None = None) -> None:
        super().__init__(path, rate, realtime=True, buffer_ms=buffer_ms, block_ms=10.0)
        self.first_level = None if first_dbfs is None else 32768.0 * 10.0 ** (first_dbfs / 20.0)
        self.first_sample: float | None = None
        self.last_sound: float | None = None
        self._armed = False

    def arm(self) -> None:
        """Time the next reply."""
        self.first_sample = None
        self._armed = True

    def render(self, out: Int16Array, now: float) -> None:
        super().render(out, now)
        if np.any(out):
            self.last_sound = now
            if self._armed and (self.first_level is None
                                or np.sqrt(np.mean(np.square(out, dtype=np.float64))) > self.first_level):
                self.first_sample = now
                self._armed = False

    def quiet_for(self) -> float:
        """Seconds since the last non-silent block (inf before any)."""
        return float("inf") if self.last_sound is None else time.monotonic() - self.last_sound
