"""The one audio type inside the pipeline: an immutable block of mono int16 PCM.

Everything between the edges (devices, files, LiveKit, Piper) moves
:class:`AudioFrame` objects. Conversion of rate, width and channel count
happens only at the edges (see :mod:`edgeagent.audio.resample`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgeagent.errors import AudioFormatError

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

#: The rate every recognition stage (VAD, wake word, STT) works at.
RECOGNITION_RATE = 16_000


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Mono 16-bit PCM with its sample rate.

    ``samples`` is a read-only 1-D ``int16`` array; build frames with
    :meth:`from_int16`, :meth:`from_float` or :meth:`from_bytes`, which copy
    and check their input. ``timestamp`` is the capture time in seconds on
    the monotonic clock, when known.
    """

    samples: Int16Array
    sample_rate: int
    timestamp: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray) or s.dtype != np.int16 or s.ndim != 1:
            raise AudioFormatError(
                "AudioFrame needs a 1-D int16 array; "
                f"got {getattr(s, 'dtype', type(s).__name__)} with shape {getattr(s, 'shape', '?')}"
            )
        if s.flags.writeable:
            raise AudioFormatError(
                "AudioFrame samples must be read-only; build frames with AudioFrame.from_int16()"
            )
        if not isinstance(self.sample_rate, int) or not 1000 <= self.sample_rate <= 384_000:
            raise AudioFormatError(f"unusable sample rate {self.sample_rate!r} Hz")

    # -- construction -------------------------------------------------------

    @classmethod
    def from_int16(
        cls, samples: npt.ArrayLike, sample_rate: int, timestamp: float | None = None
    ) -> AudioFrame:
        arr = np.array(samples, dtype=np.int16, copy=True).reshape(-1)
        arr.flags.writeable = False
        return cls(arr, int(sample_rate), timestamp)

    @classmethod
    def from_float(
        cls, samples: npt.ArrayLike, sample_rate: int, timestamp: float | None = None
    ) -> AudioFrame:
        """From floats in [-1, 1]; NaN becomes 0 and values beyond are clipped."""
        f = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1), nan=0.0)
        arr = np.clip(np.round(f * 32768.0), -32768, 32767).astype(np.int16)
        arr.flags.writeable = False
        return cls(arr, int(sample_rate), timestamp)

    @classmethod
    def from_bytes(
        cls, data: bytes, sample_rate: int, timestamp: float | None = None
    ) -> AudioFrame:
        """From little-endian 16-bit mono PCM bytes."""
        if len(data) % 2:
            raise AudioFormatError(f"16-bit PCM needs an even byte count, got {len(data)}")
        arr = np.frombuffer(data, dtype="<i2").astype(np.int16)
        arr.flags.writeable = False
        return cls(arr, int(sample_rate), timestamp)

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> AudioFrame:
        return cls.from_int16(np.zeros(round(seconds * sample_rate), np.int16), sample_rate)

    @classmethod
    def concat(cls, frames: Iterable[AudioFrame]) -> AudioFrame:
        """Join frames of one rate; the result keeps the first timestamp."""
        items = list(frames)
        if not items:
            raise AudioFormatError("cannot concatenate zero frames")
        rate = items[0].sample_rate
        if any(f.sample_rate != rate for f in items):
            rates = sorted({f.sample_rate for f in items})
            raise AudioFormatError(f"cannot concatenate frames of different rates {rates}")
        arr = np.concatenate([f.samples for f in items])
        arr.flags.writeable = False
        return cls(arr, rate, items[0].timestamp)

    # -- views --------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    def to_float32(self) -> Float32Array:
        """A new float32 array in [-1, 1)."""
        return self.samples.astype(np.float32) / 32768.0

    def to_bytes(self) -> bytes:
        return self.samples.astype("<i2").tobytes()

    def rms_dbfs(self) -> float:
        """Level in dB relative to full scale (-inf for digital silence)."""
        if self.num_samples == 0:
            return float("-inf")
        rms = float(np.sqrt(np.mean(self.to_float32().astype(np.float64) ** 2)))
        return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")

    def slice(self, start: int, stop: int | None = None) -> AudioFrame:
        """Samples ``start:stop`` as a new frame (shares memory, still read-only)."""
        ts = self.timestamp + start / self.sample_rate if self.timestamp is not None else None
        return AudioFrame(self.samples[start:stop], self.sample_rate, ts)

    def chunks(self, samples_per_chunk: int) -> list[AudioFrame]:
        """Split into chunks of ``samples_per_chunk``; the last one may be shorter."""
        if samples_per_chunk <= 0:
            raise ValueError("samples_per_chunk must be positive")
        return [
            self.slice(i, i + samples_per_chunk)
            for i in range(0, self.num_samples, samples_per_chunk)
        ]

    def __repr__(self) -> str:
        return f"AudioFrame({self.num_samples} samples @ {self.sample_rate} Hz, {self.duration:.3f} s)"
