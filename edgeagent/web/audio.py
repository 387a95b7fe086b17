"""The browser as the agent's ears and voice: :class:`WebInput` and :class:`WebOutput`.

They implement the same contract as the sound card and the LiveKit room
(:mod:`edgeagent.audio.io`), so the session does not know it talks to a browser.

:class:`WebOutput` is a paced sink (:class:`~edgeagent.audio.playback.BufferedOutput`)
at 48 kHz: every 20 ms (one Opus packet) it renders a block and hands it to the
outgoing track of every connected browser (:class:`AgentTrack`, which aiortc encodes
as Opus). With nobody connected the blocks go nowhere, so the session's ``drain()``
never waits on a browser.

:class:`WebInput` hears every connected browser (mixed; with ``web.max_clients = 1``
there is one): each incoming track is decoded by aiortc, mixed to mono, resampled to
16 kHz and yielded in frames of ``frame_ms`` as soon as their last sample arrived,
stamped with that arrival time. With no browser, silence is yielded on a clock, so the
session keeps running between connections. Up to ``max_lag_ms`` (1 s) of a browser's
audio waits for a session that fell behind before the oldest is dropped: audio comes in
bursts when the board is busy (a 250 ms stall brings 250 ms at once), and the session,
faster than real time, catches up; dropping there would cut words out of the question.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Int16Array
from edgeagent.audio.io import AudioInput, IOCounters
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.queue import SampleQueue
from edgeagent.audio.resample import Decimator, Resampler

log = logging.getLogger(__name__)

WEB_RATE = 48_000
BLOCK = WEB_RATE // 50  # 20 ms: one Opus packet
TRACK_QUEUE = 5  # blocks an outgoing track may hold (100 ms) before the oldest go


class AgentTrack(MediaStreamTrack):
    """The agent's voice to one browser: 20 ms mono blocks, fed by :class:`WebOutput`."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Int16Array] = asyncio.Queue(maxsize=TRACK_QUEUE)
        self._pts = 0
        self.dropped = 0

    def push(self, block: Int16Array) -> None:
        if self._queue.full():  # the sender fell behind: the oldest goes
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(block.copy())

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        block = await self._queue.get()
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WEB_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, WEB_RATE)
        self._pts += len(block)
        return frame


class WebOutput(BufferedOutput):
    """The agent's voice in every connected browser; see the module docs."""

    def __init__(self, *, buffer_ms: float = 60.0) -> None:
        super().__init__(WEB_RATE, buffer_ms=buffer_ms)
        self.tracks: set[AgentTrack] = set()
        self._pacer: asyncio.Task[None] | None = None

    def new_track(self) -> AgentTrack:
        track = AgentTrack()
        self.tracks.add(track)
        return track

    def drop_track(self, track: AgentTrack) -> None:
        self.tracks.discard(track)
        track.stop()

    async def _open(self) -> int:
        self._pacer = asyncio.create_task(self._pace(), name="web-out")
        return WEB_RATE

    async def _pace(self) -> None:
        block = np.zeros(BLOCK, np.int16)
        block_s = BLOCK / WEB_RATE
        start, k = time.monotonic(), 0
        while True:
            due = start + k * block_s
            now = time.monotonic()
            if now - due > 0.1:  # the loop stalled: start a new schedule rather than rush
                start, k, due = now, 0, now
            await asyncio.sleep(max(0.0, due - now))
            self.render(block, time.monotonic())
            for track in list(self.tracks):
                track.push(block)
            k += 1

    async def _close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        for track in list(self.tracks):
            self.drop_track(track)


def to_mono_int16(frame: av.AudioFrame) -> Int16Array:
    """A decoded frame (any channel count, packed or planar, s16 or float) as mono int16."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = arr.reshape(channels, -1).astype(np.float32)
        mono = data.mean(axis=0)
    else:
        mono = arr.reshape(-1, channels).astype(np.float32).mean(axis=1)
    if frame.format.name.startswith(("flt", "dbl")):
        mono = mono * 32768.0
    out: Int16Array = np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
    return out


class _Feed(SampleQueue):
    """16 kHz samples of one browser waiting to be mixed; beyond ``limit`` the oldest go."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.task: asyncio.Task[None] | None = None


class WebInput(AudioInput):
    """The connected browsers' mics as 16 kHz mono frames; see the module docs."""

    def __init__(self, *, sample_rate: int = RECOGNITION_RATE, frame_ms: int = 20, max_lag_ms: int = 1000) -> None:
        self.sample_rate = sample_rate
        self.counters = IOCounters()
        self.frame_samples = sample_rate * frame_ms // 1000
        self._limit = max(self.frame_samples, sample_rate * max_lag_ms // 1000)
        self._feeds: dict[str, _Feed] = {}
        self._arrived = asyncio.Event()
        self._closed = False
        #: Monotonic time the latest audible block (peak over -40 dBFS) arrived from a browser.
        self.last_audible: float | None = None

    def add_track(self, peer_id: str, track: Any) -> None:
        """Hear ``track`` (an aiortc remote audio track) of browser ``peer_id``."""
        self.remove(peer_id)
        feed = _Feed(self._limit)
        self._feeds[peer_id] = feed
        feed.task = asyncio.ensure_future(self._read(peer_id, track, feed))

    def remove(self, peer_id: str) -> None:
        feed = self._feeds.pop(peer_id, None)
        if feed is not None and feed.task is not None:
            feed.task.cancel()

    @property
    def peers(self) -> int:
        return len(self._feeds)

    async def _read(self, peer_id: str, track: Any, feed: _Feed) -> None:
        resampler: Resampler | Decimator | None = None
        try:
            while True:
                frame = await track.recv()
                rate = int(frame.sample_rate)
                if resampler is None or resampler.in_rate != rate:
                    # Opus decodes at 48 kHz: a whole ratio, so the Decimator, which hands each
                    # frame's output out at once (libsoxr's stream gives it in bursts).
                    resampler = (Decimator(rate, self.sample_rate) if rate % self.sample_rate == 0
                                 else Resampler(rate, self.sample_rate))
                pcm = AudioFrame.from_int16(to_mono_int16(frame), rate)
                mono = resampler.push_frame(pcm) if isinstance(resampler, Decimator) else resampler.push(pcm)
                if mono.num_samples:
                    if int(np.abs(mono.samples).max()) > 328:
                        self.last_audible = time.monotonic()
                    if feed.push(np.array(mono.samples, np.int16)):
                        self.counters.dropped_frames += 1
                        log.debug("web input: fell behind %s's audio: dropped the oldest", peer_id)
                    self._arrived.set()
        except MediaStreamError:
            log.info("web input: %s's audio ended", peer_id)
        except Exception as exc:  # one browser's broken track must not stop the others
            log.warning("web input: %s's audio stopped: %s", peer_id, exc)

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        n = self.frame_samples
        frame_s = n / self.sample_rate
        last_ts = time.monotonic() - frame_s
        while not self._closed:
            ready = [feed for feed in list(self._feeds.values()) if feed.size >= n]
            now = time.monotonic()
            if not ready:
                # Wait for audio no longer than a frame (three while a browser is connected,
                # for its jitter) past the latest one; then silence, so the clock goes on.
                due = last_ts + frame_s * (3 if self._feeds else 1)
                if now < due:
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await wait_for(self._arrived.wait(), due - now)
                    continue
                if now - due > 0.2:
                    self.counters.overruns += 1
                    last_ts = now - frame_s
                else:
                    last_ts += frame_s
                samples = np.zeros(n, np.int16)
            else:
                mix = np.zeros(n, np.int32)
                for feed in ready:
                    mix += feed.take_exact(n)
                samples = np.clip(mix, -32768, 32767).astype(np.int16)
                last_ts = min(max(now - frame_s, last_ts + frame_s), now)
            self.counters.frames += 1
            yield AudioFrame.from_int16(samples, self.sample_rate, timestamp=last_ts)

    async def aclose(self) -> None:
        self._closed = True
        for peer_id in list(self._feeds):
            self.remove(peer_id)
        self._arrived.set()
