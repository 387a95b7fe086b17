"""Conversion at the edges: sample rate, channel count and sample width.

Everything inside the pipeline is an :class:`~edgeagent.audio.frame.AudioFrame`
(mono int16). Devices (44.1/48 kHz, often stereo), Piper (22.05 kHz), LiveKit
(48 kHz) and WAV files (any width) are converted here, once, on the way in or out.

Two ways to change the rate:

- :func:`resample` for a whole, finished signal (a file, a synthesized clause);
- :class:`Resampler` for a stream of chunks (a device, a TTS stream): it keeps the
  filter state across chunks, so the joined output equals the one-shot result
  and has no clicks at chunk boundaries. Call :meth:`Resampler.flush` at the end
  of the stream to get the filter's tail.

Both use libsoxr (python-soxr). Its output is delay-compensated: output sample
``j`` belongs to input time ``j / out_rate``, which is how timestamps are carried.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from edgeagent.audio.frame import AudioFrame, Float32Array, Int16Array
from edgeagent.errors import AudioFormatError

#: libsoxr quality recipes, from quick-and-dirty to very high. "HQ" is 20-bit
#: precision; "LQ" has less delay and steadier chunk sizes when streaming.
Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

DEFAULT_QUALITY: Quality = "HQ"


# -- width and channels --------------------------------------------------------


def to_float32(data: npt.ArrayLike) -> Float32Array:
    """Samples of any common width as float32 in [-1, 1), shape kept.

    Integer input is scaled by its full range (int8, int16, int32; uint8 is
    8-bit WAV PCM, centred on 128); float input is passed through.
    """
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(np.float32, copy=False)
    if kind == "u" and arr.dtype.itemsize == 1:
        return ((arr.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if kind == "i" and arr.dtype.itemsize in (1, 2, 4):
        scale = float(2 ** (8 * arr.dtype.itemsize - 1))
        return (arr.astype(np.float64) / scale).astype(np.float32)
    raise AudioFormatError(f"cannot convert samples of type {arr.dtype} to audio")


def float_to_int16(data: npt.ArrayLike) -> Int16Array:
    """Floats in [-1, 1) to int16 (scale 32768, rounded, clipped; NaN becomes 0).

    The exact inverse of ``int16 / 32768``, so int16 → float → int16 is lossless.
    """
    f = np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.round(f * 32768.0), -32768, 32767).astype(np.int16)


def to_int16(data: npt.ArrayLike) -> Int16Array:
    """Samples of any common width as int16 (shape kept); int16 is copied as is."""
    arr = np.asarray(data)
    if arr.dtype == np.int16:
        return np.array(arr, dtype=np.int16, copy=True)
    if arr.dtype.kind == "i" and arr.dtype.itemsize > 2:
        # Round to nearest from the wider integer without a float round trip.
        shift = 8 * arr.dtype.itemsize - 16
        wide = (arr.astype(np.int64) + (1 << (shift - 1))) >> shift
        out: Int16Array = np.clip(wide, -32768, 32767).astype(np.int16)
        return out
    return float_to_int16(to_float32(arr))


def mix_to_mono(data: npt.ArrayLike, *, channels_last: bool = True) -> Float32Array:
    """Average the channels of ``(frames, channels)`` samples into float32 mono.

    1-D input is already mono. ``channels_last=False`` takes ``(channels, frames)``.
    Integer input is scaled to [-1, 1) first (see :func:`to_float32`).
    """
    f = to_float32(data)
    if f.ndim == 1:
        return f
    if f.ndim != 2:
        raise AudioFormatError(f"expected 1-D or 2-D samples, got shape {f.shape}")
    if not channels_last:
        f = f.T
    mono: Float32Array = (
        np.ascontiguousarray(f[:, 0], dtype=np.float32)
        if f.shape[1] == 1
        else f.mean(axis=1, dtype=np.float64).astype(np.float32)
    )
    return mono


def frame_from_array(
    data: npt.ArrayLike, sample_rate: int, timestamp: float | None = None
) -> AudioFrame:
    """An :class:`AudioFrame` from samples of any width and channel count (frames first)."""
    arr = np.asarray(data)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1 and arr.dtype == np.int16:
        return AudioFrame.from_int16(arr, sample_rate, timestamp)
    if arr.ndim == 1:
        return AudioFrame.from_int16(to_int16(arr), sample_rate, timestamp)
    return AudioFrame.from_int16(float_to_int16(mix_to_mono(arr)), sample_rate, timestamp)


def frame_from_pcm(
    data: bytes,
    sample_rate: int,
    *,
    width: int = 2,
    channels: int = 1,
    timestamp: float | None = None,
) -> AudioFrame:
    """An :class:`AudioFrame` from interleaved little-endian PCM bytes.

    ``width`` is bytes per sample: 1 (unsigned 8-bit), 2, 3 (packed 24-bit) or 4.
    """
    if width not in (1, 2, 3, 4):
        raise AudioFormatError(f"unsupported sample width {width} bytes (use 1, 2, 3 or 4)")
    if channels < 1:
        raise AudioFormatError(f"channel count must be at least 1, got {channels}")
    block = width * channels
    if len(data) % block:
        raise AudioFormatError(
            f"{len(data)} bytes is not a whole number of {channels}-channel {8 * width}-bit samples"
        )
    arr: npt.NDArray[np.generic]
    if width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        arr = ((raw[:, 0] << 8) | (raw[:, 1] << 16) | (raw[:, 2] << 24)).astype(np.int32)
    else:
        arr = np.frombuffer(data, dtype={1: "u1", 2: "<i2", 4: "<i4"}[width])
    return frame_from_array(arr.reshape(-1, channels), sample_rate, timestamp)


# -- rate ----------------------------------------------------------------------


def _check_rate(rate: int) -> int:
    if not isinstance(rate, (int, np.integer)) or not 1000 <= int(rate) <= 384_000:
        raise AudioFormatError(f"unusable sample rate {rate!r} Hz")
    return int(rate)


def resample(frame: AudioFrame, rate: int, *, quality: Quality = DEFAULT_QUALITY) -> AudioFrame:
    """The whole ``frame`` at ``rate`` (same frame back when the rate already matches)."""
    rate = _check_rate(rate)
    if frame.sample_rate == rate:
        return frame
    if frame.num_samples == 0:
        return AudioFrame.from_int16(np.zeros(0, np.int16), rate, frame.timestamp)
    out = soxr.resample(frame.samples, frame.sample_rate, rate, quality=quality)
    return AudioFrame.from_int16(out, rate, frame.timestamp)


class Resampler:
    """Streaming rate conversion of a sequence of frames, filter state kept across chunks.

    ``push`` returns what is ready (possibly an empty frame: libsoxr works in
    blocks, so output comes in bursts); ``flush`` returns the tail and ends the
    stream, after which the resampler starts afresh. When the rates match, frames
    pass through untouched.

    Output timestamps are derived from the input ones: the first sample of each
    output frame gets the capture time of the input instant it represents.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: Quality = DEFAULT_QUALITY) -> None:
        self.in_rate = _check_rate(in_rate)
        self.out_rate = _check_rate(out_rate)
        self.quality: Quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._in_count = 0  # input samples pushed since the stream began
        self._out_count = 0  # output samples returned since the stream began
        self._ts_origin: float | None = None  # timestamp of input sample 0

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def _next_timestamp(self, frame_ts: float | None, in_before: int) -> float | None:
        if frame_ts is not None:
            # Input sample `in_before` was captured at frame_ts.
            self._ts_origin = frame_ts - in_before / self.in_rate
        if self._ts_origin is None:
            return None
        return self._ts_origin + self._out_count / self.out_rate

    def push(self, frame: AudioFrame) -> AudioFrame:
        """Feed one frame; returns the output that is ready now (maybe empty)."""
        if frame.sample_rate != self.in_rate:
            raise AudioFormatError(
                f"Resampler expects {self.in_rate} Hz frames, got {frame.sample_rate} Hz"
            )
        if self.passthrough:
            return frame
        if self._stream is None:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="int16", quality=self.quality
            )
        in_before = self._in_count
        self._in_count += frame.num_samples
        ts = self._next_timestamp(frame.timestamp, in_before)
        out = self._stream.resample_chunk(frame.samples)
        self._out_count += len(out)
        return AudioFrame.from_int16(out, self.out_rate, ts)

    def flush(self) -> AudioFrame:
        """The rest of the output (the filter's tail); the next push starts a new stream."""
        ts = self._next_timestamp(None, self._in_count)
        if self._stream is None or self.passthrough:
            out: Int16Array = np.zeros(0, np.int16)
        else:
            out = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        self.reset()
        return AudioFrame.from_int16(out, self.out_rate, ts)

    def reset(self) -> None:
        """Forget all state and buffered samples (after barge-in, or a gap in the input)."""
        self._stream = None
        self._in_count = 0
        self._out_count = 0
        self._ts_origin = None

    @property
    def pending_input(self) -> float:
        """Seconds of input taken in but not yet returned as output (the current delay)."""
        return max(0.0, self._in_count / self.in_rate - self._out_count / self.out_rate)


class Decimator:
    """Streaming downsampling by a whole factor (48 -> 16 kHz) with a small, steady delay.

    A live input cannot use :class:`Resampler` or the LiveKit SDK's own resampling:
    libsoxr hands a stream's output out in bursts (HQ: 0 or ~30 ms of output per 10 ms
    pushed), so the newest 10-30 ms of what was heard waits. Here every chunk's output
    comes at once: a Kaiser-windowed sinc FIR low-pass (cut-off at 0.45 of the output
    rate, 7.2 kHz for 16 kHz), evaluated only at the samples kept. Its delay is
    ``(taps - 1) / 2`` input samples (1.25 ms with the default 121 taps at 48 kHz).
    """

    def __init__(self, in_rate: int, out_rate: int, *, taps: int = 121, beta: float = 8.0) -> None:
        self.in_rate, self.out_rate = _check_rate(in_rate), _check_rate(out_rate)
        if self.in_rate % self.out_rate:
            raise AudioFormatError(f"Decimator needs a whole ratio, got {self.in_rate} -> {self.out_rate} Hz")
        self.factor = self.in_rate // self.out_rate
        fc = 0.45 / self.factor  # cut-off in cycles per input sample
        n = np.arange(taps) - (taps - 1) / 2
        h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(taps, beta)
        self.taps: npt.NDArray[np.float64] = h / h.sum()
        self.reset()

    def reset(self) -> None:
        """Forget the filter's history (a new stream)."""
        self._hist: npt.NDArray[np.float64] = np.zeros(len(self.taps) - 1)
        self._skip = 0  # input samples to skip before the next kept one

    @property
    def passthrough(self) -> bool:
        return self.factor == 1

    def push_frame(self, frame: AudioFrame) -> AudioFrame:
        """:meth:`push` for a frame: the output's timestamp is the capture time of the input
        instant its first sample stands for (the filter's delay taken into account)."""
        if frame.sample_rate != self.in_rate:
            raise AudioFormatError(f"Decimator expects {self.in_rate} Hz frames, got {frame.sample_rate} Hz")
        if self.passthrough:
            return frame
        first = self._skip + (len(self.taps) - 1) / 2 - len(self._hist)  # in input samples from the frame's start
        out = self.push(frame.samples)
        ts = None if frame.timestamp is None else frame.timestamp + first / self.in_rate
        return AudioFrame.from_int16(out, self.out_rate, ts)

    def push(self, samples: npt.ArrayLike) -> Int16Array:
        """Downsample one chunk of int16 samples; every output it completes, at once."""
        x = np.concatenate([self._hist, np.asarray(samples, np.float64)])
        if len(x) < len(self.taps):
            self._hist = x
            return np.zeros(0, np.int16)
        windows = np.lib.stride_tricks.sliding_window_view(x, len(self.taps))[self._skip :: self.factor]
        y = windows @ self.taps[::-1]
        start = self._skip + len(windows) * self.factor  # where the next window starts in x
        self._hist = x[start:]
        self._skip = max(0, start - len(x))
        out: Int16Array = np.clip(np.round(y), -32768, 32767).astype(np.int16)
        return out


class FrameAssembler:
    """Regroups a stream of frames of any size into frames of exactly ``size`` samples.

    Timestamps follow the samples: an emitted frame carries the time of its first
    sample, computed from the frame it came from.
    """

    def __init__(self, sample_rate: int, size: int) -> None:
        if size <= 0:
            raise ValueError("frame size must be positive")
        self.sample_rate = _check_rate(sample_rate)
        self.size = size
        self._buf: Int16Array = np.zeros(0, np.int16)
        self._ts: float | None = None

    def push(self, frame: AudioFrame) -> list[AudioFrame]:
        if frame.sample_rate != self.sample_rate:
            raise AudioFormatError(
                f"FrameAssembler expects {self.sample_rate} Hz frames, got {frame.sample_rate} Hz"
            )
        if frame.num_samples == 0:
            return []
        if frame.timestamp is not None:
            self._ts = frame.timestamp - len(self._buf) / self.sample_rate
        self._buf = np.concatenate([self._buf, frame.samples])
        out: list[AudioFrame] = []
        while len(self._buf) >= self.size:
            out.append(AudioFrame.from_int16(self._buf[: self.size], self.sample_rate, self._ts))
            self._buf = self._buf[self.size :]
            if self._ts is not None:
                self._ts += self.size / self.sample_rate
        return out

    def flush(self, *, pad: bool = True) -> list[AudioFrame]:
        """The partial frame left over, padded with silence to full size unless ``pad=False``."""
        if len(self._buf) == 0:
            return []
        rest = self._buf
        if pad:
            rest = np.concatenate([rest, np.zeros(self.size - len(rest), np.int16)])
        self._buf = np.zeros(0, np.int16)
        return [AudioFrame.from_int16(rest, self.sample_rate, self._ts)]

    def reset(self) -> None:
        self._buf = np.zeros(0, np.int16)
        self._ts = None
