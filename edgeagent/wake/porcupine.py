"""Picovoice Porcupine wake words (optional; needs the user's own AccessKey).

Porcupine activates online with an AccessKey from https://console.picovoice.ai/
(option ``access_key`` or env ``PICOVOICE_ACCESS_KEY``). It is never the default:
the key is checked first, so a missing key gives the same clear error whether
or not ``pvporcupine`` is installed.

The engine keeps its own state, so one Porcupine stage serves one stream at a
time (a second concurrent stream would share that state).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.resample import FrameAssembler, Resampler
from edgeagent.errors import ConfigError, EdgeAgentError
from edgeagent.metrics import WakeMetrics
from edgeagent.stage import Flush, InferenceThread, StageStream
from edgeagent.wake.base import WakeEvent, WakeWord

ENV_KEY = "PICOVOICE_ACCESS_KEY"
_NO_KEY = (
    "the porcupine wake word provider needs a Picovoice AccessKey: get one at "
    "https://console.picovoice.ai/, then set wake.porcupine.access_key or the "
    f"{ENV_KEY} environment variable; or use the default provider, openwakeword"
)


class PorcupineActivationError(EdgeAgentError):
    """Porcupine refused to start: the AccessKey was rejected or could not be checked."""


def _message(exc: Exception, key: str) -> str:
    """Porcupine's error with its message stack, the key itself blanked out."""
    stack = [str(s) for s in getattr(exc, "message_stack", ())]
    text = "; ".join([str(getattr(exc, "message", "")) or type(exc).__name__, *stack])
    return text.replace(key, "<access key>")


def _create(pv: Any, key: str, words: Sequence[str], sensitivity: float) -> Any:
    paths = [w for w in words if w.endswith(".ppn")]
    builtin = [w for w in words if not w.endswith(".ppn")]
    unknown = sorted(set(builtin) - set(pv.KEYWORDS))
    if unknown:
        raise ConfigError(
            f"porcupine has no built-in keyword {unknown}; built-in: {', '.join(sorted(pv.KEYWORDS))} "
            "(or give the path to a .ppn file made at console.picovoice.ai)"
        )
    for p in paths:
        if not Path(p).expanduser().is_file():
            raise ConfigError(f"porcupine keyword file {p} does not exist")
    keyword_paths = [
        str(Path(w).expanduser()) if w.endswith(".ppn") else pv.KEYWORD_PATHS[w] for w in words
    ]
    try:
        return pv.create(
            access_key=key,
            keyword_paths=keyword_paths,
            sensitivities=[sensitivity] * len(keyword_paths),
        )
    except pv.PorcupineError as exc:
        retryable = isinstance(
            exc, (pv.PorcupineActivationThrottledError, pv.PorcupineIOError, pv.PorcupineRuntimeError)
        )
        raise PorcupineActivationError(
            f"porcupine could not start ({type(exc).__name__}: {_message(exc, key)}); check that "
            f"the AccessKey in wake.porcupine.access_key or {ENV_KEY} is valid and active at "
            "https://console.picovoice.ai/ and that the device can reach Picovoice's servers "
            "once to activate, or use the default provider, openwakeword",
            retryable=retryable,
        ) from exc
    except (ValueError, OSError) as exc:
        raise ConfigError(f"porcupine: {_message(exc, key) or exc}") from exc


class PorcupineWakeWord(WakeWord):
    """Porcupine provider ("porcupine").

    Options: ``words`` (built-in keywords such as ``jarvis``, ``alexa``,
    ``computer``, or paths to .ppn files), ``access_key`` (else env
    PICOVOICE_ACCESS_KEY), ``sensitivity`` (0..1, default 0.5),
    ``refractory`` (seconds a word stays silent after firing),
    ``metrics_interval``.
    """

    provider = "porcupine"

    def __init__(
        self,
        words: Sequence[str] = ("jarvis",),
        *,
        access_key: str | None = None,
        sensitivity: float = 0.5,
        refractory: float = 2.0,
        metrics_interval: float = 1.0,
    ) -> None:
        super().__init__()
        key = (access_key or os.environ.get(ENV_KEY, "")).strip()
        if not key:
            raise ConfigError(_NO_KEY)
        if isinstance(words, str):
            words = (words,)
        if not words:
            raise ConfigError("wake.words: give at least one wake word")
        if not 0.0 <= sensitivity <= 1.0:
            raise ConfigError(f"wake.porcupine.sensitivity must be in [0, 1], got {sensitivity}")
        try:
            import pvporcupine
        except ImportError as exc:
            raise ConfigError(
                "the porcupine wake word provider needs the pvporcupine package: "
                "install it with .venv/bin/pip install -e '.[porcupine]', or use openwakeword"
            ) from exc
        self._engine: Any = _create(pvporcupine, key, list(words), sensitivity)
        self._words = tuple(
            Path(w).name.split("_")[0] if w.endswith(".ppn") else w for w in words
        )
        self.frame_length = int(self._engine.frame_length)
        self.refractory = refractory
        self.metrics_steps = max(1, round(metrics_interval * RECOGNITION_RATE / self.frame_length))
        self.thread = InferenceThread("wake-porcupine")

    @property
    def words(self) -> tuple[str, ...]:
        return self._words

    def process(self, samples: np.ndarray[Any, np.dtype[np.int16]]) -> int:
        """Index of the word heard in one ``frame_length`` frame, or -1."""
        return int(self._engine.process(samples.tolist()))

    def stream(self) -> PorcupineStream:
        return PorcupineStream(self)

    async def aclose(self) -> None:
        self.thread.shutdown()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.delete()


class PorcupineStream(StageStream[AudioFrame, WakeEvent]):
    """Frames of any rate and length in, :class:`WakeEvent` (score 1.0) out."""

    def __init__(self, owner: PorcupineWakeWord) -> None:
        self._owner = owner
        self._resampler: Resampler | None = None
        self._assembler = FrameAssembler(RECOGNITION_RATE, owner.frame_length)
        self._frames = 0
        self._last_fire: float | None = None
        self._stat_frames = 0
        self._stat_seconds = 0.0
        super().__init__()

    async def _run(self) -> None:
        async for item in self._inputs():
            if isinstance(item, Flush) or item.num_samples == 0:
                continue
            frames: list[AudioFrame] = []
            if self._resampler is not None and self._resampler.in_rate != item.sample_rate:
                frames = self._assembler.push(self._resampler.flush())  # the rate changed
                self._resampler = None
            if item.sample_rate != RECOGNITION_RATE:
                if self._resampler is None:
                    self._resampler = Resampler(item.sample_rate, RECOGNITION_RATE)
                item = self._resampler.push(item)
            frames += self._assembler.push(item)
            await self._process([f.samples for f in frames])
        await self._process([f.samples for f in self._assembler.flush(pad=True)])

    def _detect(self, frames: list[np.ndarray[Any, np.dtype[np.int16]]]) -> tuple[list[int], float]:
        t0 = time.perf_counter()
        found = [self._owner.process(f) for f in frames]
        return found, time.perf_counter() - t0

    async def _process(self, frames: list[np.ndarray[Any, np.dtype[np.int16]]]) -> None:
        if not frames:
            return
        found, seconds = await self._owner.thread.run(self._detect, frames)
        self._stat_frames += len(frames)
        self._stat_seconds += seconds
        step = self._owner.frame_length / RECOGNITION_RATE
        for index in found:
            self._frames += 1
            now = self._frames * step
            quiet = self._last_fire is not None and now - self._last_fire < self._owner.refractory
            if index >= 0 and not quiet:
                self._last_fire = now
                self._emit(WakeEvent(word=self._owner.words[index], score=1.0, timestamp=now))
        if self._stat_frames >= self._owner.metrics_steps:
            self._owner._report(
                WakeMetrics(
                    provider=self._owner.provider,
                    frames=self._stat_frames,
                    inference_ms_avg=1000.0 * self._stat_seconds / self._stat_frames,
                    window_ms=1000.0 * step,
                    words=len(self._owner.words),
                )
            )
            self._stat_frames = 0
            self._stat_seconds = 0.0
