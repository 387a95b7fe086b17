"""The audio of one utterance as the STT providers see it: 16 kHz int16, with levels.

Frames at another rate are converted on the way in with a streaming
:class:`~edgeagent.audio.resample.Resampler` (filter state kept across frames).
The buffer also keeps the RMS level of every 10 ms block, so a provider can ask
whether the audio after some point is only quiet tail (see :meth:`quiet_after`).
"""

from __future__ import annotations

import math

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Float32Array, Int16Array
from edgeagent.audio.resample import Resampler

BLOCK = RECOGNITION_RATE // 100
"""Samples per level block (10 ms)."""

SILENT_DBFS = -70.0
"""An utterance whose loudest block is below this level is treated as silence."""


class UtteranceBuffer:
    """Collects the frames of one utterance at 16 kHz."""

    def __init__(self) -> None:
        self._chunks: list[Int16Array] = []
        self._joined: Int16Array = np.zeros(0, np.int16)
        self._n = 0
        self._resampler: Resampler | None = None
        self._levels: list[float] = []  # RMS (0..1) of each full 10 ms block
        self._peak = 0.0  # the largest of them
        self._partial_block: Int16Array = np.zeros(0, np.int16)

    # -- input ------------------------------------------------------------------

    def push(self, frame: AudioFrame) -> Int16Array:
        """Add a frame (any rate); returns the 16 kHz samples it added (maybe none yet)."""
        if frame.sample_rate == RECOGNITION_RATE:
            out = self._drain_resampler() if self._resampler is not None else np.zeros(0, np.int16)
            samples = np.concatenate([out, frame.samples]) if out.size else frame.samples
        else:
            if self._resampler is not None and self._resampler.in_rate != frame.sample_rate:
                tail = self._drain_resampler()
            else:
                tail = np.zeros(0, np.int16)
            if self._resampler is None:
                self._resampler = Resampler(frame.sample_rate, RECOGNITION_RATE)
            got = self._resampler.push(frame).samples
            samples = np.concatenate([tail, got]) if tail.size else got
        self._append(samples)
        return samples

    def finish(self) -> Int16Array:
        """End of the utterance: add the resampler's tail; returns what it added."""
        tail = self._drain_resampler() if self._resampler is not None else np.zeros(0, np.int16)
        self._append(tail)
        return tail

    def _drain_resampler(self) -> Int16Array:
        assert self._resampler is not None
        tail = self._resampler.flush().samples
        self._resampler = None
        return tail

    def _append(self, samples: Int16Array) -> None:
        if samples.size == 0:
            return
        self._chunks.append(samples)
        self._n += int(samples.size)
        blocks = np.concatenate([self._partial_block, samples]) if self._partial_block.size else samples
        whole = blocks.size - blocks.size % BLOCK
        if whole:
            x = blocks[:whole].astype(np.float32).reshape(-1, BLOCK) / 32768.0
            levels = np.sqrt(np.mean(x * x, axis=1))
            self._levels.extend(levels.tolist())
            self._peak = max(self._peak, float(levels.max()))
        self._partial_block = blocks[whole:]

    # -- views ------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return self._n

    @property
    def duration(self) -> float:
        return self._n / RECOGNITION_RATE

    def int16(self) -> Int16Array:
        """All samples so far (joined lazily, cached)."""
        if self._chunks:
            self._joined = np.concatenate([self._joined, *self._chunks])
            self._chunks = []
        return self._joined

    def float32(self, n: int | None = None) -> Float32Array:
        """The first ``n`` samples (all by default) as float32 in [-1, 1)."""
        data = self.int16()[: self._n if n is None else n]
        out: Float32Array = data.astype(np.float32) / 32768.0
        return out

    def peak_dbfs(self) -> float:
        """Level of the loudest 10 ms block (-inf when there is none)."""
        return 20.0 * math.log10(self._peak) if self._peak > 0 else float("-inf")

    def is_silent(self) -> bool:
        """No block reaches :data:`SILENT_DBFS` (digital silence, or nothing at all)."""
        return self.peak_dbfs() < SILENT_DBFS

    def quiet_after(self, n: int, rel_db: float) -> bool:
        """True when every 10 ms block from sample ``n`` on is ``rel_db`` dB (negative)
        or more below the loudest block, or below :data:`SILENT_DBFS`.

        The last partial block (under 10 ms) is judged too. Used to tell a trailing
        pause from the end of a word that a decode of the first ``n`` samples missed.
        """
        limit = max(self._peak * 10.0 ** (rel_db / 20.0), 10.0 ** (SILENT_DBFS / 20.0))
        first = max(0, n // BLOCK)
        if any(level > limit for level in self._levels[first:]):
            return False
        if self._partial_block.size:
            x = self._partial_block.astype(np.float32) / 32768.0
            return bool(float(np.sqrt(np.mean(x * x))) <= limit)
        return True
