"""``livekit.mode = room+local``: the room and the board's own mic and speaker together.

- :class:`LocalRoomInput` is what the session hears: the local mic (16 kHz, echo
  cancelled) plus the remote participants it listens to (:class:`RoomInput`), summed.
  The mic's clock drives it: each mic frame takes as many room samples from a small
  jitter buffer (:class:`SampleFifo`) and keeps the mic's capture timestamps. Should
  the mic stop, the room goes on alone on a 20 ms clock (logged once).
- :class:`LocalRoomOutput` is where the agent speaks: every frame goes to the room
  (:class:`RoomOutput`) and to the local speaker (:class:`SpeakerOutput`) at once;
  ``clear()`` and ``drain()`` act on both. It is not a
  :class:`~edgeagent.audio.playback.BufferedOutput`, so a reply's first-audio time is
  taken at ``write()`` (a few ms early), not at the hand-over to a sink.
- Remote voices on the local speaker: a second :class:`RoomInput` with ``listen =
  all``, read at the speaker's rate, is mixed into the speaker's blocks by
  :meth:`SpeakerOutput.render` (so everybody in the call is heard around the board,
  whatever ``livekit.listen`` says the agent listens to). The agent's
  write/clear/drain only ever touch its own buffer; the remote voices go on.
- Echo: the one :class:`~edgeagent.audio.echo.EchoCanceller` (on with
  ``audio.echo_cancellation``) is attached to the local speaker, whose render tap sees
  the mix (agent and remote voices), so the local mic loses both: the agent does not
  hear itself nor the remote people a second time, and the published mic track does
  not send the room back to itself. The session's own canceller is off (it would
  work on the mix, room audio included). Without a canceller the local mic is
  half-duplex: silence while the speaker plays anything audible and
  :data:`ECHO_TAIL_S` after.
- ``livekit.publish_local_mic``: the (echo-cancelled) local mic is also published in
  every room joined as a second track, :data:`MIC_TRACK_NAME`, with source *unknown*
  (not *microphone*, so front ends that look for the agent's microphone keep finding
  its voice). Without echo cancellation a warning says the room may hear itself.
- While the room is unreachable the mic and speaker carry on; :class:`RoomInput`
  ticks silence, :class:`RoomOutput` renders into nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.audio.echo import SILENCE_PEAK, EchoCanceller
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Int16Array
from edgeagent.audio.io import AudioInput, AudioOutput, IOCounters
from edgeagent.audio.queue import SampleQueue
from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
from edgeagent.config import AudioConfig
from edgeagent.config.room import LiveKitConfig
from edgeagent.room.audio import RoomInput, RoomOutput
from edgeagent.room.connection import RoomLink

log = logging.getLogger(__name__)

#: Name of the published local mic track (``livekit.publish_local_mic``).
MIC_TRACK_NAME = "room-mic"
#: Without echo cancellation: how long after the speaker went quiet the mic stays muted.
ECHO_TAIL_S = 0.35
#: Jitter buffers between two clocks (the room's and a device's).
PREBUFFER_S = 0.04
LIMIT_S = 0.3


class SampleFifo:
    """Mono int16 samples from one clock, taken at another; thread-safe.

    Taking starts once ``prebuffer`` samples beyond the request wait, and waits for
    the prebuffer again after running dry; beyond ``limit`` the oldest are dropped.
    """

    def __init__(self, prebuffer: int, limit: int) -> None:
        self.prebuffer = prebuffer
        self._queue = SampleQueue(limit)
        self._primed = False
        self._lock = threading.Lock()

    def push(self, samples: Int16Array) -> None:
        with self._lock:
            self._queue.push(samples)

    def take(self, n: int) -> Int16Array | None:
        """``n`` samples (zeros after the data when it ran dry), or None while priming."""
        with self._lock:
            if not self._primed:
                if self._queue.size < n + self.prebuffer:
                    return None
                self._primed = True
            out = np.zeros(n, np.int16)
            k = min(n, self._queue.size)
            out[:k] = self._queue.take_exact(k)
            if k < n:
                self._primed = False
            return out


def _mix(a: Int16Array, b: Int16Array | None) -> Int16Array:
    if b is None:
        return a
    mixed: Int16Array = np.clip(a.astype(np.int32) + b, -32768, 32767).astype(np.int16)
    return mixed


class SpeakerOutput(DeviceOutput):
    """The local speaker: the agent's voice (the usual buffer) plus remote voices mixed in.

    :attr:`remote` takes remote audio at :attr:`sink_rate`; :attr:`last_audible` is the
    monotonic time an audible block (agent or remote) was last handed over.
    """

    def __init__(self, device: str | None = None, *, buffer_ms: float = 60.0) -> None:
        super().__init__(device, buffer_ms=buffer_ms)
        self.remote: SampleFifo | None = None
        self.last_audible: float | None = None

    async def _open(self) -> int:
        rate = await super()._open()
        self.remote = SampleFifo(round(rate * PREBUFFER_S), round(rate * LIMIT_S))
        return rate

    def _mix_into(self, out: Int16Array, now: float) -> None:
        # The remote voices go in before the render tap: the echo canceller's reference
        # must be what is played.
        remote = self.remote
        if remote is not None:
            out[:] = _mix(out, remote.take(len(out)))
        if len(out) and int(np.abs(out).max()) > SILENCE_PEAK:
            self.last_audible = now

    def audible_within(self, seconds: float) -> bool:
        last = self.last_audible
        return last is not None and time.monotonic() - last < self.output_latency + seconds


class LocalRoomOutput(AudioOutput):
    """The agent's voice in the room and on the local speaker; see the module docs."""

    def __init__(self, link: RoomLink, room: RoomOutput, speaker: SpeakerOutput) -> None:
        self.link, self.room, self.speaker = link, room, speaker
        self.sample_rate = room.sample_rate
        self.counters = IOCounters()
        self._feed: RoomInput | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def volume(self) -> float:
        """The agent's gain in the room and on the speaker (``audio.output_volume``); the remote
        voices mixed into the speaker keep their level."""
        return self.speaker.volume

    @volume.setter
    def volume(self, gain: float) -> None:
        self.room.volume = gain  # a bad gain raises here, before anything changed
        self.speaker.volume = gain

    async def start(self) -> None:
        """Open the speaker (raises device errors) and the room track; start the remote voices."""
        await self.speaker.start()
        await self.room.start()
        if self._feed is None:
            rate = self.speaker.sink_rate or self.speaker.sample_rate
            self._feed = RoomInput(self.link, listen="all", sample_rate=rate)
            self._pump = asyncio.create_task(self._remote_voices(self._feed), name="room-to-speaker")

    async def _remote_voices(self, feed: RoomInput) -> None:
        async for frame in feed:
            remote = self.speaker.remote
            if remote is not None and np.any(frame.samples):
                remote.push(np.array(frame.samples, np.int16))

    async def write(self, frame: AudioFrame) -> None:
        self.counters.frames += 1
        await asyncio.gather(self.room.write(frame), self.speaker.write(frame))

    def clear(self) -> None:
        self.room.clear()
        self.speaker.clear()

    async def drain(self) -> None:
        await asyncio.gather(self.room.drain(), self.speaker.drain())

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._feed is not None:
            await self._feed.aclose()
        await self.room.aclose()
        await self.speaker.aclose()


class MicTrack:
    """The local mic published as :data:`MIC_TRACK_NAME` in every room joined."""

    def __init__(self, link: RoomLink, rate: int = RECOGNITION_RATE) -> None:
        self.link, self.rate = link, rate
        self.source = rtc.AudioSource(rate, 1, queue_size_ms=200)
        self.publication: rtc.LocalTrackPublication | None = None
        self._queue: asyncio.Queue[AudioFrame] = asyncio.Queue(maxsize=25)
        self._task = asyncio.create_task(self._capture(), name="room-mic")
        self._closed = False
        link.add_connected_hook(self._publish)
        link.add_disconnected_hook(self._unpublished)

    async def _publish(self, room: rtc.Room) -> None:
        if self._closed or not room.local_participant.permissions.can_publish:
            return
        track = rtc.LocalAudioTrack.create_audio_track(MIC_TRACK_NAME, self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_UNKNOWN)
        try:
            self.publication = await wait_for(room.local_participant.publish_track(track, opts), 15)
        except (Exception, asyncio.TimeoutError) as exc:
            log.error("room: cannot publish the local mic: %s", exc or "timeout")
            return
        log.info("room: published the local mic as track %s (%s)", self.publication.sid, MIC_TRACK_NAME)

    def _unpublished(self, room: rtc.Room) -> None:
        self.publication = None

    def push(self, frame: AudioFrame) -> None:
        """Send ``frame`` (at :attr:`rate`) when published; dropped otherwise, or when behind."""
        if self.publication is None or not frame.num_samples:
            return
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def _capture(self) -> None:
        while True:
            frame = await self._queue.get()
            pcm = np.ascontiguousarray(frame.samples, np.int16)
            try:
                await wait_for(
                    self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), self.rate, 1, len(pcm))), 1.0)
            except (Exception, asyncio.TimeoutError) as exc:
                log.debug("room mic: capture failed: %s", exc)

    async def aclose(self) -> None:
        self._closed = True
        self.publication = None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(self.source.aclose(), 5)


class LocalRoomInput(AudioInput):
    """The local mic (echo cancelled) plus the room, 16 kHz; see the module docs."""

    def __init__(self, mic: DeviceInput, room: RoomInput, speaker: SpeakerOutput, *,
                 echo: EchoCanceller | None = None, publish: MicTrack | None = None) -> None:
        if mic.sample_rate != RECOGNITION_RATE or room.sample_rate != RECOGNITION_RATE:
            raise ValueError(f"LocalRoomInput mixes {RECOGNITION_RATE} Hz mic and room audio")
        self.mic, self.room, self.speaker = mic, room, speaker
        self.echo, self.publish = echo, publish
        self.sample_rate = RECOGNITION_RATE
        self.counters = IOCounters()
        self._fifo = SampleFifo(round(RECOGNITION_RATE * PREBUFFER_S), round(RECOGNITION_RATE * LIMIT_S))
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        if echo is not None:
            echo.attach(speaker)

    async def start(self) -> None:
        """Open the mic now (raises device errors)."""
        await self.mic.start()

    async def _room_voices(self) -> None:
        async for frame in self.room:
            self._fifo.push(np.array(frame.samples, np.int16))

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    def _local(self, frame: AudioFrame) -> AudioFrame:
        if self.echo is not None:
            return self.echo.process_capture(frame)
        if self.speaker.audible_within(ECHO_TAIL_S):  # half duplex without a canceller
            return AudioFrame.from_int16(np.zeros(frame.num_samples, np.int16), frame.sample_rate, frame.timestamp)
        return frame

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        if self._pump is None:
            self._pump = asyncio.create_task(self._room_voices(), name="room-to-session")
        try:
            async for frame in self.mic:
                if self._closed:
                    return
                local = self._local(frame)
                if self.publish is not None:
                    self.publish.push(local)
                n = local.num_samples
                if not n:
                    continue
                self.counters.frames += 1
                yield AudioFrame.from_int16(_mix(local.samples, self._fifo.take(n)), self.sample_rate, local.timestamp)
        except Exception as exc:
            log.error("the local mic failed (%s); hearing the room only", exc)
        if self._closed:
            return
        log.warning("the local mic stopped; hearing the room only")
        n = self.room.frame_samples
        step = n / self.sample_rate
        due = time.monotonic()
        while not self._closed:
            due += step
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            got = self._fifo.take(n)
            self.counters.frames += 1
            yield AudioFrame.from_int16(got if got is not None else np.zeros(n, np.int16), self.sample_rate,
                                        timestamp=due - step)

    async def aclose(self) -> None:
        await self.aclose_local()
        await self.room.aclose()

    async def aclose_local(self) -> None:
        """Close the local side (mic, published track, canceller); the RoomInput stays open."""
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        await self.mic.aclose()
        if self.publish is not None:
            await self.publish.aclose()
        if self.echo is not None:
            self.echo.close()


def room_and_local(link: RoomLink, room_in: RoomInput, audio: AudioConfig,
                   livekit: LiveKitConfig) -> tuple[LocalRoomInput, LocalRoomOutput]:
    """The ears and voice of room+local mode on the devices of ``audio`` (not yet opened)."""
    from edgeagent.audio.local_devices import make_input

    speaker = SpeakerOutput(audio.output_device, buffer_ms=audio.output_buffer_ms)
    out = LocalRoomOutput(link, RoomOutput(link), speaker)
    echo = EchoCanceller(RECOGNITION_RATE, noise_suppression=audio.noise_suppression) \
        if audio.echo_cancellation else None
    publish = MicTrack(link) if livekit.publish_local_mic else None
    if publish is not None and echo is None:
        log.warning("livekit.publish_local_mic without audio.echo_cancellation: the room may hear itself "
                    "(unless the sound device cancels echo itself)")
    return LocalRoomInput(make_input(audio), room_in, speaker, echo=echo, publish=publish), out
