"""The output side shared by every paced sink: a small buffer between ``write()`` and the sink.

A sink that consumes audio at its own pace (a sound card's callback, a real-time
file writer) pulls fixed blocks with :meth:`BufferedOutput.render`, from any
thread. ``write()`` resamples frames to the sink's rate and waits while the
buffer is full, so the audio queued after the device is never more than
``buffer_ms``; ``clear()`` drops it at once (barge-in); ``drain()`` waits until
it has been handed to the sink and, for a device, played. ``volume`` scales the
agent's audio as each block is rendered (clipped to int16), so a change is heard
within a block.

For each written frame the monotonic time its first sample was handed to the
sink is recorded (``last_written_time``, ``on_frame_started``) so latency is
counted at the sample actually written, not at ``write()``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.audio.io import AudioOutput, IOCounters
from edgeagent.audio.resample import DEFAULT_QUALITY, Quality, Resampler
from edgeagent.errors import AudioError

Markers = tuple[AudioFrame, ...]

MAX_VOLUME = 2.0
"""The largest gain :attr:`BufferedOutput.volume` takes (``audio.output_volume``)."""


def apply_gain(block: Int16Array, gain: float) -> None:
    """Scale ``block`` in place by ``gain``, rounded and clipped to int16."""
    if gain != 1.0 and len(block):
        scaled = np.rint(block.astype(np.float32) * np.float32(gain))
        block[:] = np.clip(scaled, -32768, 32767).astype(np.int16)


class PlaybackBuffer:
    """A thread-safe FIFO of int16 samples with the frames they came from.

    ``playing`` is true from the first push until the buffer runs dry; running
    dry while playing is an underrun unless a drain was asked for (a drain stays
    asked for until the buffer runs dry, even if more is pushed meanwhile).
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("buffer capacity must be positive")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._chunks: deque[tuple[Int16Array, Markers]] = deque()
        self._size = 0
        self._playing = False
        self._draining = False

    @property
    def size(self) -> int:
        return self._size

    def free(self) -> int:
        with self._lock:
            return self.capacity - self._size

    def push(self, samples: Int16Array, markers: Markers = ()) -> int:
        """Append as much of ``samples`` as fits; returns how many samples were taken."""
        with self._lock:
            n = min(len(samples), self.capacity - self._size)
            if n > 0:
                self._chunks.append((samples[:n], markers))
                self._size += n
                self._playing = True
            return n

    def pull(self, out: Int16Array) -> tuple[list[tuple[Markers, int]], bool, bool]:
        """Fill ``out`` (zeros after the data); returns (markers with offsets, underrun, drained)."""
        started: list[tuple[Markers, int]] = []
        n = len(out)
        filled = 0
        with self._lock:
            while filled < n and self._chunks:
                arr, markers = self._chunks[0]
                if markers:
                    started.append((markers, filled))
                k = min(len(arr), n - filled)
                out[filled : filled + k] = arr[:k]
                if k == len(arr):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = (arr[k:], ())
                filled += k
            self._size -= filled
            underrun = drained = False
            if filled < n and self._playing:
                self._playing = False
                drained = self._draining
                underrun = not self._draining
                self._draining = False
        out[filled:] = 0
        return started, underrun, drained

    def begin_drain(self) -> bool:
        """Ask to be told when the buffer runs dry; False when it is already idle."""
        with self._lock:
            self._draining = self._playing
            return self._playing

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._size = 0
            self._playing = False
            self._draining = False


class BufferedOutput(AudioOutput):
    """Base of outputs fed through a :class:`PlaybackBuffer` and consumed at a steady pace.

    Subclasses implement :meth:`_open` (start the sink, return its rate) and
    :meth:`_close`, and their consumer calls :meth:`render` once per block.
    """

    #: Seconds between a sample handed to the sink and the sink playing it.
    output_latency: float = 0.0

    def __init__(
        self,
        rate: int,
        *,
        buffer_ms: float = 60.0,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        if buffer_ms <= 0:
            raise ValueError("buffer_ms must be positive")
        self.sample_rate = int(rate)
        self.counters = IOCounters()
        self.buffer_ms = float(buffer_ms)
        self.quality: Quality = quality
        #: Monotonic time the first sample of the latest started frame was handed to the sink.
        self.last_written_time: float | None = None
        #: Called on the event loop with (frame, monotonic time its first sample was handed over).
        self.on_frame_started: Callable[[AudioFrame, float], None] | None = None
        #: The render tap: called from :meth:`render`, on the sink's thread (PortAudio's
        #: for a device), with (the block just filled, sink rate, the time it was handed
        #: over). An echo canceller uses it as its far-end reference. The block is reused
        #: by the sink: copy it, and return quickly (no blocking, no heavy work).
        self.on_render: Callable[[Int16Array, int, float], None] | None = None
        #: Monotonic time the sink itself last ran dry (a device's output underflow, set on
        #: its thread): what it plays from then on is later than when it was handed over.
        self.last_underflow: float | None = None
        self.sink_rate: int | None = None
        self._volume = 1.0
        self._buf: PlaybackBuffer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resampler: Resampler | None = None
        self._pending: list[AudioFrame] = []  # frames whose samples have not reached the buffer
        self._generation = 0
        self._space = asyncio.Event()
        self._drained = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._closed = False

    @property
    def volume(self) -> float:
        """Gain (0.0-2.0) applied to the agent's audio as it is rendered, clipped to int16;
        1.0 leaves it as it is. Takes effect from the next block (``audio.output_volume``)."""
        return self._volume

    @volume.setter
    def volume(self, gain: float) -> None:
        gain = float(gain)
        if not 0.0 <= gain <= MAX_VOLUME:  # NaN fails too
            raise ValueError(f"volume: expected 0.0-{MAX_VOLUME}, got {gain}")
        self._volume = gain

    # -- for subclasses --------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> int:
        """Start the sink; return the sample rate it plays at."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Stop the sink and release it."""

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop, from any thread."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(fn, *args)

    def render(self, out: Int16Array, now: float) -> None:
        """Fill one block for the sink (any thread); ``now`` is when it is handed over."""
        buf = self._buf
        if buf is None:
            out[:] = 0
            return
        started, underrun, drained = buf.pull(out)
        apply_gain(out, self._volume)  # the agent's voice only: what _mix_into adds is not ours
        self._mix_into(out, now)
        tap = self.on_render
        if tap is not None:
            tap(out, self.sink_rate or self.sample_rate, now)
        # The block is handed over whole at `now`: that is when its frames started.
        stamped = [(m, now) for m, _ in started]
        self._post(self._after_render, stamped, underrun, drained)

    def _pushed(self) -> None:
        """Samples just went into the buffer (on the event loop; default nothing): a sink
        that stops while there is nothing to play wakes here."""

    def _mix_into(self, out: Int16Array, now: float) -> None:
        """Add other audio to a block before the render tap sees it (any thread; default none)."""

    def _after_render(
        self, started: list[tuple[Markers, float]], underrun: bool, drained: bool
    ) -> None:
        for markers, t in started:
            for frame in markers:
                self.last_written_time = t
                if self.on_frame_started is not None:
                    self.on_frame_started(frame, t)
        if underrun:
            self.counters.underruns += 1
        if drained:
            self._drained.set()
        self._space.set()

    # -- AudioOutput -----------------------------------------------------------

    async def start(self) -> None:
        """Open the sink now rather than at the first write (idempotent)."""
        if self._closed:
            raise AudioError(f"{type(self).__name__} is closed")
        async with self._open_lock:
            if self._buf is not None:
                return
            self._loop = asyncio.get_running_loop()
            rate = await self._open()
            self.sink_rate = rate
            self._buf = PlaybackBuffer(max(1, round(self.buffer_ms * rate / 1000)))

    def _convert(self, frame: AudioFrame) -> AudioFrame:
        rate = self.sink_rate or self.sample_rate
        if self._resampler is not None and self._resampler.in_rate != frame.sample_rate:
            self._resampler = None  # a new source rate: its tail is dropped with it
        if self._resampler is None:
            self._resampler = Resampler(frame.sample_rate, rate, quality=self.quality)
        return self._resampler.push(frame)

    async def _push(self, samples: Int16Array, generation: int) -> bool:
        """Put samples into the buffer, waiting for space; False when cleared meanwhile."""
        buf = self._buf
        assert buf is not None
        markers: Markers = tuple(self._pending)
        self._pending = []
        offset = 0
        while offset < len(samples):
            if generation != self._generation or self._closed:
                return False
            self._space.clear()
            n = buf.push(samples[offset:], markers if offset == 0 else ())
            offset += n
            if n:
                self._pushed()
            if offset < len(samples) and n == 0:
                await self._space.wait()
        return generation == self._generation

    async def write(self, frame: AudioFrame) -> None:
        await self.start()
        async with self._write_lock:
            generation = self._generation
            self.counters.frames += 1
            self._pending.append(frame)
            data = self._convert(frame)
            if data.num_samples:
                await self._push(data.samples, generation)

    def clear(self) -> None:
        self._generation += 1
        if self._buf is not None:
            self._buf.clear()
        self._resampler = None
        self._pending = []
        self._space.set()
        self._drained.set()

    async def drain(self) -> None:
        if self._buf is None or self._closed:
            return
        async with self._write_lock:
            generation = self._generation
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail.num_samples and not await self._push(tail.samples, generation):
                    return
            self._drained.clear()
            if not self._buf.begin_drain():
                return
        await self._drained.wait()
        if generation == self._generation and self.output_latency > 0:
            await asyncio.sleep(self.output_latency)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.clear()
        if self._buf is not None:
            await self._close()
