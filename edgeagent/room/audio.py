"""The room as the agent's ears and voice: :class:`RoomInput` and :class:`RoomOutput`.

:class:`RoomOutput` is a paced sink (:class:`~edgeagent.audio.playback.BufferedOutput`):
while the agent has something to say, every 10 ms it renders a 48 kHz block and captures
it into an :class:`rtc.AudioSource` that :class:`~edgeagent.room.connection.RoomLink`
publishes as the agent's microphone track in every room it joins; after
:data:`IDLE_AFTER_S` of silence it stops until the next write. The source has no queue of its own by default
(``queue_size_ms=0``: each block goes straight to WebRTC, paced by our clock), so the
first sample of a reply leaves at once; with a queue, ``clear()`` also empties it, so a
barge-in silences the room at once.

:class:`RoomInput` hears remote participants (``listen``: the linked one, a list of
identities, or all of them mixed). Each subscribed track is read with
:class:`rtc.AudioStream` at 48 kHz in 10 ms frames and brought down to 16 kHz mono by a
:class:`~edgeagent.audio.resample.Decimator`; a frame of ``frame_ms`` is yielded as soon as its last sample
has arrived (no clock and no prebuffer to wait for: every 10 ms waited there is 10 ms
more between the end of a question and the reply), stamped with its arrival time. When
nothing arrives, silence is yielded on a ``frame_ms`` clock, so it never ends on a
disconnect: it keeps ticking silence until the link joins again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Int16Array
from edgeagent.audio.io import AudioInput, IOCounters
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.queue import SampleQueue
from edgeagent.audio.resample import Decimator
from edgeagent.config.room import LISTEN_MODES
from edgeagent.room.connection import RoomLink

log = logging.getLogger(__name__)

ROOM_RATE = 48_000
IDLE_AFTER_S = 0.5
""":class:`RoomOutput` stops sending after this long with nothing to play."""
STREAM_FRAME_MS = 10
"""Remote tracks are read in the SDK's own 10 ms frames (see :meth:`RoomInput._read`)."""
ROLE_ATTRIBUTE = "edgeagent.role"
"""A participant attribute: ``controller`` marks a config controller (never listened to)."""


class RoomOutput(BufferedOutput):
    """The agent's voice in the room: a 48 kHz mono track fed in 10 ms frames.

    It sends only while there is something to say: after :data:`IDLE_AFTER_S` of
    silence with nothing buffered the pacer stops and the track carries no packets (as
    a muted mic with DTX), until the next :meth:`write` wakes it. An idle agent then
    costs no capture calls, no encoding and no packets; a reply's first block goes out
    the moment it is written instead of at the next tick.
    """

    def __init__(self, link: RoomLink, *, buffer_ms: float = 60.0, track_name: str = "agent-voice",
                 queue_size_ms: int = 0) -> None:
        super().__init__(ROOM_RATE, buffer_ms=buffer_ms)
        self.queue_size_ms = queue_size_ms
        self.link = link
        self.track_name = track_name
        self.block = ROOM_RATE // 100
        self.source: rtc.AudioSource | None = None
        self.sending = False
        """Whether the pacer is running (False: idle, nothing goes out)."""
        self._wake = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None

    async def _open(self) -> int:
        self.source = rtc.AudioSource(ROOM_RATE, 1, queue_size_ms=self.queue_size_ms)
        self.link.set_agent_audio(self.source, self.track_name)
        self._pacer = asyncio.create_task(self._pace(), name="room-out")
        return ROOM_RATE

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        # render() runs on the event loop here (the pacer): no thread to cross.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon(fn, *args)

    def _pushed(self) -> None:
        self._wake.set()

    async def _pace(self) -> None:
        while True:
            self.sending = False
            await self._wake.wait()
            self.sending = True
            await self._send_until_idle()

    async def _send_until_idle(self) -> None:
        """One 10 ms block after the other on an absolute schedule, until idle."""
        assert self.source is not None and self._buf is not None
        block = np.zeros(self.block, np.int16)
        block_s = self.block / ROOM_RATE
        idle_blocks = max(1, round(IDLE_AFTER_S / block_s))
        start, k = time.monotonic(), 0
        quiet, ahead, silent = True, 0, 0
        while True:
            due = start + k * block_s
            now = time.monotonic()
            if now - due > 0.1:  # the loop stalled: start a new schedule rather than rush
                start, k, due = now, 0, now
            await asyncio.sleep(max(0.0, due - now))
            self._wake.clear()
            self.render(block, time.monotonic())
            await self._capture(block)
            k += 1
            audible = bool(block.any())
            if not quiet and not audible:
                quiet = True
            elif quiet and audible:
                # A reply starts after silence: hand its second 10 ms over at once, so the
                # codec's 20 ms packet with the first sound leaves now, not a block later.
                # The schedule stays a block ahead until the next silence.
                quiet = False
                if ahead == 0:
                    self.render(block, time.monotonic())
                    await self._capture(block)
                    k, ahead = k + 1, 1
            if quiet and ahead:
                start, ahead = start + block_s, 0  # back on time while nothing is playing
            silent = silent + 1 if quiet and self._buf.size == 0 else 0
            if silent >= idle_blocks and not self._wake.is_set():
                return

    async def _capture(self, block: Int16Array) -> None:
        assert self.source is not None
        frame = rtc.AudioFrame(block.tobytes(), ROOM_RATE, 1, self.block)
        try:
            await wait_for(self.source.capture_frame(frame), 1.0)
        except (Exception, asyncio.TimeoutError) as exc:
            self.counters.dropped_frames += 1
            log.debug("room output: capture failed: %s", exc)

    def clear(self) -> None:
        super().clear()
        if self.source is not None:
            self.source.clear_queue()

    async def _close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
        if self.source is not None:
            await self.source.aclose()


class _Track(SampleQueue):
    """Samples of one remote track waiting to be mixed.

    :meth:`take` hands out ``n`` samples as soon as they are there (after ``prebuffer``
    more, when one is set, on the first take and after running dry). Beyond ``limit``
    the oldest are dropped, so a consumer that fell behind never lags by more.
    """

    def __init__(self, identity: str, prebuffer: int, limit: int) -> None:
        super().__init__(limit)
        self.identity = identity
        self.prebuffer = prebuffer
        self.primed = prebuffer <= 0
        self.task: asyncio.Task[None] | None = None

    def ready(self, n: int) -> bool:
        return self.size >= n + (0 if self.primed else self.prebuffer)

    def take(self, n: int) -> Int16Array | None:
        if not self.ready(n):
            if self.size < n and self.prebuffer > 0:
                self.primed = False  # ran dry: wait for the prebuffer again
            return None
        self.primed = True
        return self.take_exact(n)


class RoomInput(AudioInput):
    """Remote participants' voices as 16 kHz mono frames; see the module docs."""

    def __init__(
        self,
        link: RoomLink,
        *,
        listen: str = "linked",
        identities: Sequence[str] = (),
        sample_rate: int = RECOGNITION_RATE,
        frame_ms: int = 20,
        prebuffer_ms: int = 0,
        max_lag_ms: int = 200,
    ) -> None:
        if listen not in LISTEN_MODES:
            raise ValueError(f"listen: expected one of {', '.join(LISTEN_MODES)}, got {listen!r}")
        if listen == "identities" and not identities:
            raise ValueError("listen='identities' needs at least one identity")
        self.link = link
        self.listen = listen
        self.identities = tuple(identities)
        self.sample_rate = sample_rate
        self.counters = IOCounters()
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._prebuffer = sample_rate * prebuffer_ms // 1000
        self._limit = max(self.frame_samples, sample_rate * max_lag_ms // 1000)
        self._arrived = asyncio.Event()
        #: linked mode: the identity listened to (None until someone joins).
        self.linked: str | None = None
        self._tracks: dict[str, _Track] = {}  # track sid -> its buffer
        self._room: rtc.Room | None = None
        self._closed = False
        link.add_connected_hook(self._attach)
        link.add_disconnected_hook(self._detach)

    def track_sid_of(self, identity: str | None) -> str | None:
        """The sid of a track of ``identity`` being heard (for ``lk.transcribed_track_id``)."""
        return next((sid for sid, t in self._tracks.items() if t.identity == identity), None)

    # -- who is heard -------------------------------------------------------------------

    def _heard(self, identity: str) -> bool:
        if self.listen == "all":
            return True
        if self.listen == "identities":
            return identity in self.identities
        return identity == self.linked

    def set_listen(self, listen: str, identities: Sequence[str] = ()) -> None:
        """Listen to others from now on (``livekit.listen``/``identities``): the tracks no
        longer heard are dropped, those now heard are read. Raises on a bad choice, changing
        nothing."""
        if listen not in LISTEN_MODES:
            raise ValueError(f"listen: expected one of {', '.join(LISTEN_MODES)}, got {listen!r}")
        if listen == "identities" and not identities:
            raise ValueError("listen='identities' needs at least one identity")
        self.listen, self.identities = listen, tuple(identities)
        if listen != "linked":
            self.linked = None
        for sid in [sid for sid, t in self._tracks.items() if not self._heard(t.identity)]:
            self._drop(sid)
        room = self._room
        if room is not None:
            self._relink(room)
            for p in room.remote_participants.values():
                for pub in p.track_publications.values():
                    if isinstance(pub.track, rtc.RemoteAudioTrack):
                        self._on_track(pub.track, pub, p)
        log.info("room input: listening to %s", {"linked": f"the linked participant ({self.linked or 'nobody yet'})",
                                                 "all": "everyone"}.get(listen, ", ".join(self.identities)))

    def _eligible(self, p: rtc.RemoteParticipant) -> bool:
        """Not another agent, nor a config controller (``edgeagent config``: it only calls RPCs and
        must not take the link from the person who joins next)."""
        return (p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                and (p.attributes or {}).get(ROLE_ATTRIBUTE) != "controller")

    def _relink(self, room: rtc.Room) -> None:
        """linked mode: keep the linked participant while present, else take the next one."""
        if self.listen != "linked":
            return
        present = [p for p in room.remote_participants.values() if self._eligible(p)]
        if self.linked in {p.identity for p in present}:
            return
        old, self.linked = self.linked, (present[0].identity if present else None)
        if self.linked != old:
            log.info("room input: linked to %s", self.linked or "nobody (waiting for a participant)")
        for p in present:
            for pub in p.track_publications.values():
                if isinstance(pub.track, rtc.RemoteAudioTrack):
                    self._on_track(pub.track, pub, p)
        for sid in [sid for sid, t in self._tracks.items() if not self._heard(t.identity)]:
            self._drop(sid)

    # -- room events ----------------------------------------------------------------------

    def _attach(self, room: rtc.Room) -> None:
        self._room = room
        room.on("track_subscribed", self._on_track)
        room.on("track_unsubscribed", lambda track, pub, p: self._drop(track.sid))
        room.on("participant_connected", lambda p: self._relink(room))
        room.on("participant_disconnected", lambda p: self._on_left(room, p))
        self._relink(room)
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if isinstance(pub.track, rtc.RemoteAudioTrack):
                    self._on_track(pub.track, pub, p)

    def _detach(self, room: rtc.Room) -> None:
        if room is self._room:
            self._room = None
        for sid in list(self._tracks):
            self._drop(sid)

    def _on_left(self, room: rtc.Room, p: rtc.RemoteParticipant) -> None:
        for sid in [sid for sid, t in self._tracks.items() if t.identity == p.identity]:
            self._drop(sid)
        if p.identity == self.linked:
            log.info("room input: %s left", p.identity)
            self.linked = None
            self._relink(room)

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if not isinstance(track, rtc.RemoteAudioTrack) or track.sid in self._tracks or self._closed:
            return
        if self.listen == "linked" and self.linked is None and self._room is not None:
            self._relink(self._room)
        if not self._heard(p.identity):
            return
        buf = _Track(p.identity, self._prebuffer, self._limit)
        self._tracks[track.sid] = buf
        buf.task = asyncio.ensure_future(self._read(track, buf))
        log.info("room input: hearing %s (track %s)", p.identity, track.sid)

    def _drop(self, sid: str) -> None:
        buf = self._tracks.pop(sid, None)
        if buf is not None and buf.task is not None:
            buf.task.cancel()

    async def _read(self, track: rtc.RemoteAudioTrack, buf: _Track) -> None:
        # The track as it comes (48 kHz, 10 ms frames), brought down to our rate here: the
        # SDK's own resampling hands its output out in bursts. `scripts/bench-room --transport`
        # (one sender; the four ways of reading side by side, on loopback) measured a sound's
        # onset arriving after p50 47-49 ms, p90 48-60 ms at 48 kHz in 10 ms frames, against
        # p50 68-69 ms, p90 97-98 ms at 16 kHz in 20 ms frames (how it was read before), in two runs.
        decimator = Decimator(ROOM_RATE, self.sample_rate) if ROOM_RATE % self.sample_rate == 0 else None
        rate = ROOM_RATE if decimator is not None else self.sample_rate
        stream = rtc.AudioStream.from_track(track=track, sample_rate=rate, num_channels=1,
                                            frame_size_ms=STREAM_FRAME_MS)
        try:
            async for event in stream:
                data = np.frombuffer(event.frame.data, dtype=np.int16)
                buf.push(decimator.push(data) if decimator is not None else data.copy())
                self._arrived.set()
        except Exception as exc:  # a track that breaks must not stop the others
            log.warning("room input: %s's track stopped: %s", buf.identity, exc)
        finally:
            with contextlib.suppress(Exception):
                await wait_for(stream.aclose(), 5)

    # -- AudioInput ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioFrame]:
        n = self.frame_samples
        frame_s = n / self.sample_rate
        last_ts = time.monotonic() - frame_s  # timestamp of the latest frame yielded
        while not self._closed:
            ready = [buf for buf in list(self._tracks.values()) if buf.ready(n)]
            now = time.monotonic()
            if not ready:
                # Nothing to hand out yet: wait for audio, but no longer than a frame (two
                # more while someone is heard, for their jitter) past the latest frame; then
                # silence, so the session's clock keeps going with nobody or a mute track.
                due = last_ts + frame_s * (3 if self._tracks else 1)
                if now < due:
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await wait_for(self._arrived.wait(), due - now)
                    continue
                if now - due > 0.2:  # we were not read for a while
                    self.counters.overruns += 1
                    last_ts = now - frame_s
                else:
                    last_ts += frame_s
                samples = np.zeros(n, np.int16)
            else:
                # A frame as soon as its last sample has arrived: no clock to wait for.
                mix = np.zeros(n, np.int32)
                for buf in ready:
                    got = buf.take(n)
                    if got is not None:
                        mix += got
                samples = np.clip(mix, -32768, 32767).astype(np.int16)
                last_ts = min(max(now - frame_s, last_ts + frame_s), now)
            self.counters.frames += 1
            yield AudioFrame.from_int16(samples, self.sample_rate, timestamp=last_ts)

    async def aclose(self) -> None:
        self._closed = True
        for sid in list(self._tracks):
            self._drop(sid)
