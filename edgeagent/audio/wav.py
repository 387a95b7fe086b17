"""WAV files at the edges: read any common WAV into a frame, write 16-bit mono WAVs.

- :func:`read_wav` / :func:`write_wav` for whole files;
- :class:`WavFileInput`, an :class:`~edgeagent.audio.io.AudioInput` that plays a
  file as if it were a microphone, paced in real time or as fast as possible;
- :class:`WavFileOutput`, an :class:`~edgeagent.audio.io.AudioOutput` that records
  what the agent says, written atomically (temp file, renamed at ``aclose``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, IOCounters
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.resample import (
    DEFAULT_QUALITY,
    FrameAssembler,
    Quality,
    Resampler,
    float_to_int16,
    resample,
)
from edgeagent.errors import AudioError

PathLike = str | os.PathLike[str]
log = logging.getLogger(__name__)


def _describe_unreadable(path: Path, exc: Exception) -> str:
    detail = getattr(exc, "error_string", "") or ""
    head = b""
    with contextlib.suppress(OSError), path.open("rb") as fh:
        head = fh.read(12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        what = "a damaged or unsupported WAV file"
    else:
        what = "not an audio file (no WAV/FLAC/OGG header libsndfile recognises)"
    return f"cannot read audio from {path}: {what}" + (f" ({detail.strip()})" if detail else "")


def _open(p: Path) -> sf.SoundFile:
    """``p`` opened for reading; raises :class:`AudioError` naming the file and the problem."""
    if not p.exists():
        raise AudioError(f"cannot read audio from {p}: no such file")
    if p.is_dir():
        raise AudioError(f"cannot read audio from {p}: it is a directory")
    if p.stat().st_size == 0:
        raise AudioError(f"cannot read audio from {p}: the file is empty")
    try:
        fh = sf.SoundFile(str(p))
    except sf.LibsndfileError as exc:
        raise AudioError(_describe_unreadable(p, exc)) from exc
    except (OSError, RuntimeError) as exc:
        raise AudioError(f"cannot read audio from {p}: {exc}") from exc
    if fh.frames <= 0:
        fh.close()
        raise AudioError(f"cannot read audio from {p}: it holds no samples")
    return fh


def _to_mono_int16(p: Path, data: np.ndarray, rate: int) -> AudioFrame:
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    try:
        return AudioFrame.from_int16(float_to_int16(mono), rate)
    except AudioError as exc:
        raise AudioError(f"cannot use audio from {p}: {exc}") from exc


def read_wav(path: PathLike, rate: int | None = None, *, quality: Quality = DEFAULT_QUALITY) -> AudioFrame:
    """The file as one mono int16 frame, at its own rate or resampled to ``rate``.

    Reads what libsndfile reads (WAV 8/16/24/32-bit integer and float, FLAC, OGG...);
    channels are averaged. Raises :class:`AudioError` naming the file and the problem.
    The whole file is in memory: for long files use :class:`WavFileInput`, which streams.
    """
    p = Path(path)
    with _open(p) as fh:
        file_rate = int(fh.samplerate)
        try:
            data = fh.read(dtype="float64", always_2d=True)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            raise AudioError(f"cannot read audio from {p}: {exc}") from exc
    frame = _to_mono_int16(p, data, file_rate)
    return frame if rate is None else resample(frame, rate, quality=quality)


def _atomic_target(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the final file should be readable
    return Path(tmp)


def write_wav(path: PathLike, frame: AudioFrame) -> None:
    """Write ``frame`` as a 16-bit mono WAV, atomically (temp file, then rename)."""
    p = Path(path)
    try:
        tmp = _atomic_target(p)
    except OSError as exc:
        raise AudioError(f"cannot write {p}: {exc}") from exc
    try:
        sf.write(str(tmp), frame.samples, frame.sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, p)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise AudioError(f"cannot write {p}: {exc}") from exc


READ_BLOCK_S = 1.0
"""How much of a file :class:`WavFileInput` reads at a time (its memory is a few blocks,
whatever the length of the file)."""


class WavFileInput(AudioInput):
    """A WAV file as a microphone: frames of ``frame_ms`` at ``rate``.

    With ``realtime=True`` frame ``i`` is released at ``start + i * frame_ms`` on
    the monotonic clock (an absolute schedule, so no drift accumulates); with
    ``realtime=False`` frames come as fast as the consumer takes them. Timestamps
    are ``start + offset`` either way. The last partial frame is padded with
    silence unless ``pad=False``; ``tail_s`` of silence follows the file.

    The file is checked at construction (:class:`AudioError` naming the problem) and
    read as it is played, :data:`READ_BLOCK_S` at a time: a two-hour file costs no more
    memory than a short one. A file that turns out damaged further in ends the input
    there, with a warning.
    """

    def __init__(
        self,
        path: PathLike,
        rate: int = RECOGNITION_RATE,
        frame_ms: float = 20.0,
        *,
        realtime: bool = True,
        pad: bool = True,
        tail_s: float = 0.0,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        self.path = Path(path)
        self.sample_rate = int(rate)
        self.frame_samples = max(1, round(rate * frame_ms / 1000))
        self.realtime, self.pad, self.quality = realtime, pad, quality
        self.counters = IOCounters()
        with _open(self.path) as fh:
            self.file_rate, self.file_samples = int(fh.samplerate), int(fh.frames)
        self.tail_frames = round(tail_s * self.sample_rate / self.frame_samples)
        file_out = self.file_samples * self.sample_rate / self.file_rate
        count = file_out / self.frame_samples
        self.frame_count = (math.ceil(count) if pad else math.floor(count)) + self.tail_frames
        self._next = 0
        self._closed = False
        self.fed = asyncio.Event()
        """Set once every frame (the tail's too) has been taken."""

    @property
    def duration(self) -> float:
        return self.frame_count * self.frame_samples / self.sample_rate

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    def _frames(self) -> Iterator[AudioFrame]:
        """The file's frames then the tail's, read block by block."""
        asm = FrameAssembler(self.sample_rate, self.frame_samples)
        conv = Resampler(self.file_rate, self.sample_rate, quality=self.quality)
        block = max(1, round(READ_BLOCK_S * self.file_rate))
        try:
            with _open(self.path) as fh:
                for data in fh.blocks(blocksize=block, dtype="float64", always_2d=True):
                    yield from asm.push(conv.push(_to_mono_int16(self.path, data, self.file_rate)))
        except (AudioError, sf.LibsndfileError, OSError, RuntimeError) as exc:
            log.warning("%s: reading stopped early: %s", self.path, exc)
        yield from asm.push(conv.flush())
        yield from asm.flush(pad=self.pad)
        silence = AudioFrame.from_int16(np.zeros(self.frame_samples, np.int16), self.sample_rate)
        for _ in range(self.tail_frames):
            yield silence

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        frame_s = self.frame_samples / self.sample_rate
        start = time.monotonic() - self._next * frame_s
        frames = self._frames()
        for _ in range(self._next):  # a second iteration goes on where the first stopped
            next(frames, None)
        for f in frames:
            i = self._next
            due = start + i * frame_s
            if self.realtime:
                delay = due + frame_s - time.monotonic()  # a frame is ready once captured
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)  # let the loop breathe between frames
            if self._closed:
                return
            self._next += 1
            self.counters.frames += 1
            yield AudioFrame(f.samples, f.sample_rate, due)
        self.fed.set()

    async def aclose(self) -> None:
        self._closed = True


class WavFileOutput(BufferedOutput):
    """Records what is written into a 16-bit mono WAV at ``rate``.

    The file appears under its final name only at :meth:`aclose` (written to a temp
    file in the same directory, then renamed). Frames of other rates are resampled.

    With ``realtime=False`` (default) each frame is written at once. With
    ``realtime=True`` it behaves like a sound card: a block of ``block_ms`` is
    "played" every ``block_ms`` from a buffer of ``buffer_ms``, gaps are written as
    silence, ``write()`` waits while the buffer is full and ``clear()`` drops what
    has not been played yet, which makes it a stand-in speaker for tests.
    """

    def __init__(
        self,
        path: PathLike,
        rate: int = RECOGNITION_RATE,
        *,
        realtime: bool = False,
        buffer_ms: float = 60.0,
        block_ms: float = 10.0,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        super().__init__(rate, buffer_ms=buffer_ms, quality=quality)
        self.path = Path(path)
        self.realtime = realtime
        self.block_samples = max(1, round(rate * block_ms / 1000))
        try:
            self._tmp = _atomic_target(self.path)
            self._file = sf.SoundFile(
                str(self._tmp), "w", self.sample_rate, 1, subtype="PCM_16", format="WAV"
            )
        except (OSError, RuntimeError) as exc:
            raise AudioError(f"cannot write {self.path}: {exc}") from exc
        self._direct: Resampler | None = None
        self._pacer: asyncio.Task[None] | None = None
        self.samples_written = 0

    def _write_samples(self, samples: np.ndarray) -> None:
        if len(samples):
            self._file.write(samples)
            self.samples_written += len(samples)

    async def _open(self) -> int:
        if self.realtime:
            self._pacer = asyncio.create_task(self._pace(), name=f"wav-out:{self.path.name}")
        return self.sample_rate

    async def _pace(self) -> None:
        block = np.zeros(self.block_samples, np.int16)
        block_s = self.block_samples / self.sample_rate
        start = time.monotonic()
        k = 0
        while True:
            now = start + k * block_s
            await asyncio.sleep(max(0.0, now - time.monotonic()))
            self.render(block, now)
            self._write_samples(block)
            k += 1

    async def _close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer

    # Without real-time pacing the file is written directly, nothing is ever queued.

    async def write(self, frame: AudioFrame) -> None:
        if self.realtime:
            await super().write(frame)
            return
        if self._closed:
            raise AudioError(f"{self.path}: output is closed")
        if self._direct is not None and self._direct.in_rate != frame.sample_rate:
            self._write_samples(self._direct.flush().samples)
            self._direct = None
        if self._direct is None:
            self._direct = Resampler(frame.sample_rate, self.sample_rate, quality=self.quality)
        self.counters.frames += 1
        self.last_written_time = time.monotonic()
        if self.on_frame_started is not None:
            self.on_frame_started(frame, self.last_written_time)
        self._write_samples(self._direct.push(frame).samples)

    def clear(self) -> None:
        if self.realtime:
            super().clear()
        else:
            self._direct = None

    async def drain(self) -> None:
        if self.realtime:
            await super().drain()
        elif self._direct is not None and not self._closed:
            self._write_samples(self._direct.flush().samples)

    async def aclose(self) -> None:
        """Stop and move the file to its final name.

        In real-time mode audio not yet played is dropped (call :meth:`drain` first);
        otherwise everything written is kept, the resampler's tail included.
        """
        if self._closed:
            return
        if not self.realtime and self._direct is not None:
            self._write_samples(self._direct.flush().samples)
            self._direct = None
        await super().aclose()
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except (OSError, RuntimeError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise AudioError(f"cannot write {self.path}: {exc}") from exc
