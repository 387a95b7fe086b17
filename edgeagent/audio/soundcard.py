"""Microphone and speaker through sounddevice / PortAudio.

The device is opened at the requested rate when it accepts it, else at its
default rate or a usual one (:data:`~edgeagent.audio.soundcards.FALLBACK_RATES`), and
converted in our code. PortAudio calls our callbacks on its own thread: they do
only cheap work (copy, mix down, resample a block) and hand results to the event
loop with ``call_soon_threadsafe``. Opening and closing run in worker threads.

Counters (:class:`~edgeagent.audio.io.IOCounters`):

- input ``overruns``: PortAudio reported an input overflow, or the frame queue was
  full (the oldest frames are dropped then, counted in ``dropped_frames``);
- output ``underruns``: PortAudio reported an output underflow, or the buffer ran
  dry while playing without a ``drain()`` having been asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, IOCounters
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.resample import (
    DEFAULT_QUALITY,
    Decimator,
    FrameAssembler,
    Quality,
    Resampler,
    float_to_int16,
    mix_to_mono,
)
from edgeagent.audio.soundcards import (
    PA_LOCK,
    DeviceInfo,
    DeviceSpec,
    Kind,
    check_settings,
    choose_settings,
    find_device,
    list_devices,
    sounddevice,
)
from edgeagent.errors import AudioError

log = logging.getLogger(__name__)

#: PortAudio latency: seconds, or "low"/"high". On PulseAudio's ALSA plugin
#: ("pulse"/"default") "low" stalls, and output at 50 ms sometimes spirals into
#: endless underruns when the server rewinds its sink; 100 ms has been safe.
#: A bare ALSA hw device can go lower.
Latency = float | str

DEFAULT_INPUT_LATENCY: Latency = 0.05
DEFAULT_OUTPUT_LATENCY: Latency = 0.1


def _open_stream(
    kind: Kind,
    device: DeviceSpec,
    requested_rate: int | None,
    make: Any,
) -> tuple[Any, DeviceInfo, int, int]:
    """Find the device, choose rate and channels, open the stream (in a worker thread)."""
    devices = list_devices()
    info = find_device(device, kind, devices)
    rate, channels = choose_settings(
        info,
        kind,
        requested_rate,
        lambda r, ch: check_settings(info, kind, r, ch),
        devices,
    )
    sd = sounddevice()
    with PA_LOCK:
        try:
            stream = make(sd, info.index, rate, channels)
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioError(
                f"cannot open {kind} device {info.describe(kind)} at {rate} Hz x{channels}: {exc}"
            ) from exc
    log.info("opened %s device %s at %d Hz x%d", kind, info.describe(kind), rate, channels)
    return stream, info, rate, channels


def _close_stream(stream: Any) -> None:
    with PA_LOCK:
        stream.close(ignore_errors=True)


class DeviceInput(AudioInput):
    """Frames of ``frame_ms`` at ``rate`` from a capture device.

    ``device``: None (default input), an index, an exact name or a unique
    case-insensitive part of a name. ``device_rate`` forces the rate the device is
    opened at (default: ``rate`` if the device accepts it). Frames carry the
    monotonic time their first sample was captured. Up to ``queue_frames`` frames
    wait for the consumer; beyond that the oldest are dropped and counted.
    Iterating starts the device; :meth:`start` does it explicitly (and raises
    device errors early).
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        rate: int = RECOGNITION_RATE,
        frame_ms: float = 20.0,
        *,
        latency: Latency = DEFAULT_INPUT_LATENCY,
        device_rate: int | None = None,
        queue_frames: int = 50,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        self.device = device
        self.sample_rate = int(rate)
        self.frame_ms = float(frame_ms)
        self.frame_samples = max(1, round(rate * frame_ms / 1000))
        self.latency = latency
        self.device_rate = device_rate
        self.quality: Quality = quality
        self.counters = IOCounters()
        self.info: DeviceInfo | None = None
        self.stream_rate: int | None = None
        self.channels = 1
        self._queue: asyncio.Queue[AudioFrame | None] = asyncio.Queue(maxsize=max(1, queue_frames))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._resampler: Resampler | Decimator | None = None
        self._assembler = FrameAssembler(self.sample_rate, self.frame_samples)
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._next_ts: float | None = None  # earliest capture time the next frame may have

    async def start(self) -> None:
        """Open and start the device (idempotent)."""
        if self._closed:
            raise AudioError("DeviceInput is closed")
        async with self._start_lock:
            if self._stream is not None:
                return
            self._loop = asyncio.get_running_loop()

            def make(sd: Any, index: int, rate: int, channels: int) -> Any:
                self.stream_rate, self.channels = rate, channels
                # A whole ratio (48 or 32 kHz -> 16 kHz) has a filter that hands each block's
                # output out at once; libsoxr's stream gives 30 ms every other 20 ms block.
                self._resampler = (Decimator(rate, self.sample_rate) if rate % self.sample_rate == 0
                                   else Resampler(rate, self.sample_rate, quality=self.quality))
                return sd.InputStream(
                    device=index,
                    samplerate=rate,
                    channels=channels,
                    dtype="int16",
                    blocksize=max(1, round(rate * self.frame_ms / 1000)),
                    latency=self.latency,
                    callback=self._callback,
                )

            self._stream, self.info, _, _ = await asyncio.to_thread(
                _open_stream, "input", self.device, self.device_rate or self.sample_rate, make
            )

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: keep it short, never raise.
        try:
            now = time.monotonic()
            rate = self.stream_rate or self.sample_rate
            age = float(time_info.currentTime - time_info.inputBufferAdcTime)
            if not 0.0 <= age < 1.0:  # host APIs without timing info report 0 or garbage
                age = frames / rate
            mono = indata[:, 0] if self.channels == 1 else float_to_int16(mix_to_mono(indata))
            block = AudioFrame.from_int16(mono, rate, now - age)
            assert self._resampler is not None
            resampler = self._resampler
            ready = self._assembler.push(resampler.push_frame(block) if isinstance(resampler, Decimator)
                                         else resampler.push(block))
            overflow = bool(status.input_overflow)
            if (ready or overflow) and self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver, ready, overflow)
        except RuntimeError:
            pass  # the event loop is closed
        except Exception:
            log.exception("error in the input callback")

    def _deliver(self, frames: list[AudioFrame], overflow: bool) -> None:
        if self._closed:
            return
        dropped = False
        for frame in frames:
            # Callback jitter can date a block earlier than the samples already
            # delivered imply; capture time never runs backwards.
            floor = self._next_ts
            if frame.timestamp is not None and floor is not None and frame.timestamp < floor:
                frame = AudioFrame(frame.samples, frame.sample_rate, floor)
            if frame.timestamp is not None:
                self._next_ts = frame.timestamp + frame.duration
            if self._queue.full():
                self._queue.get_nowait()
                self.counters.dropped_frames += 1
                dropped = True
            self._queue.put_nowait(frame)
            self.counters.frames += 1
        if overflow or dropped:
            self.counters.overruns += 1

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        if self._closed:
            return
        await self.start()
        while True:
            frame = await self._queue.get()
            if frame is None:
                self._queue.put_nowait(None)  # wake any other reader too
                return
            yield frame

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._start_lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_close_stream, stream)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def __aenter__(self) -> DeviceInput:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class DeviceOutput(BufferedOutput):
    """Plays frames on an output device through a small buffer (``buffer_ms``).

    ``rate`` is the rate frames are expected at and the rate the device is opened
    at if it accepts it (``device_rate`` forces another); frames of any rate are
    resampled. The callback asks for ``block_ms`` at a time. ``last_written_time``
    and ``on_frame_started`` tell when each frame's first sample was handed to
    PortAudio; ``output_latency`` (PortAudio's estimate) is how much later it sounds.
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        rate: int = 48_000,
        *,
        latency: Latency = DEFAULT_OUTPUT_LATENCY,
        device_rate: int | None = None,
        buffer_ms: float = 60.0,
        block_ms: float = 10.0,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        super().__init__(rate, buffer_ms=buffer_ms, quality=quality)
        self.device = device
        self.latency = latency
        self.device_rate = device_rate
        self.block_ms = float(block_ms)
        self.info: DeviceInfo | None = None
        self.channels = 1
        self._stream: Any = None
        self._block = np.zeros(0, np.int16)

    async def _open(self) -> int:
        def make(sd: Any, index: int, rate: int, channels: int) -> Any:
            self.channels = channels
            self.sink_rate = rate
            self._block = np.zeros(max(1, round(rate * self.block_ms / 1000)), np.int16)
            return sd.OutputStream(
                device=index,
                samplerate=rate,
                channels=channels,
                dtype="int16",
                blocksize=len(self._block),
                latency=self.latency,
                callback=self._callback,
            )

        self._stream, self.info, rate, _ = await asyncio.to_thread(
            _open_stream, "output", self.device, self.device_rate or self.sample_rate, make
        )
        self.output_latency = float(self._stream.latency)
        return rate

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        try:
            now = time.monotonic()
            if status.output_underflow:
                self.last_underflow = now
                self._post(self._count_underflow)
            block = self._block if frames == len(self._block) else np.zeros(frames, np.int16)
            self.render(block, now)
            outdata[:] = block[:, None]
        except Exception:
            outdata.fill(0)
            log.exception("error in the output callback")

    def _count_underflow(self) -> None:
        self.counters.underruns += 1

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_close_stream, stream)

    async def __aenter__(self) -> DeviceOutput:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
