"""Smoke test of the real loopback livekit-server that scripts/test starts.

Two participants join one room with the ``livekit`` SDK: one publishes a 440 Hz sine
as a microphone track, the other subscribes and must hear that sine, at its
frequency and at a sensible level, after Opus and the jitter buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import pytest
from livekit import api, rtc

if TYPE_CHECKING:
    from conftest import LiveKitServer

pytestmark = pytest.mark.livekit

RATE = 48_000
FRAME = RATE // 100  # 10 ms
FREQ = 440.0
AMPLITUDE = 0.5  # of full scale
STEP_TIMEOUT = 20.0  # seconds, for every single await on the SDK

T = TypeVar("T")


async def _bounded(aw: Awaitable[T], what: str, timeout: float = STEP_TIMEOUT) -> T:
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"LiveKit: {what} did not finish within {timeout:.0f} s")


def _token(server: LiveKitServer, identity: str, room: str) -> str:
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def _publish_sine(source: Any, stop: asyncio.Event) -> None:
    """Feed the source a continuous sine in 10 ms frames until told to stop."""
    n = 0
    t = np.arange(FRAME)
    while not stop.is_set():
        phase = 2 * np.pi * FREQ * (n + t) / RATE
        pcm = (AMPLITUDE * 32767 * np.sin(phase)).astype(np.int16)
        frame = rtc.AudioFrame(pcm.tobytes(), RATE, 1, FRAME)
        # capture_frame paces us: it waits while the source's queue is full.
        await asyncio.wait_for(source.capture_frame(frame), 5.0)
        n += FRAME


async def _receive(stream: Any, seconds: float) -> np.ndarray:
    """Skip the silence before the first packets, then collect ``seconds`` of audio."""
    wanted = int(seconds * RATE)
    chunks: list[np.ndarray] = []
    got = 0
    async for event in stream:
        pcm = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768
        if not chunks and np.sqrt(np.mean(pcm**2)) < 0.01:
            continue
        chunks.append(pcm)
        got += len(pcm)
        if got >= wanted:
            break
    return np.concatenate(chunks)[:wanted]


async def test_audio_published_by_one_participant_reaches_the_other(
    livekit_server: LiveKitServer,
) -> None:
    room_name = f"smoke-{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    publisher = rtc.Room()
    listener = rtc.Room()
    subscribed: asyncio.Future[Any] = loop.create_future()

    @listener.on("track_subscribed")
    def _on_track_subscribed(track: Any, publication: Any, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and not subscribed.done():
            subscribed.set_result((track, participant.identity))

    stop = asyncio.Event()
    source = None
    feeder: asyncio.Task[None] | None = None
    stream = None
    try:
        await _bounded(
            listener.connect(livekit_server.url, _token(livekit_server, "listener", room_name)),
            "listener connect",
        )
        await _bounded(
            publisher.connect(livekit_server.url, _token(livekit_server, "publisher", room_name)),
            "publisher connect",
        )
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("sine", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await _bounded(publisher.local_participant.publish_track(track, options), "publish_track")
        feeder = asyncio.create_task(_publish_sine(source, stop))

        remote_track, identity = await _bounded(subscribed, "track_subscribed on the listener")
        assert identity == "publisher"
        stream = rtc.AudioStream(remote_track, sample_rate=RATE, num_channels=1)
        audio = await _bounded(_receive(stream, seconds=1.0), "receiving 1 s of audio")
        assert not feeder.done(), f"the publisher stopped early: {feeder.exception()!r}"
    finally:
        stop.set()
        if feeder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(feeder, 5.0)
        for closer in (
            stream.aclose() if stream is not None else None,
            source.aclose() if source is not None else None,
            publisher.disconnect(),
            listener.disconnect(),
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closer, 10.0)

    assert len(audio) == RATE
    rms = float(np.sqrt(np.mean(audio**2)))
    expected_rms = AMPLITUDE / np.sqrt(2)
    assert 0.5 * expected_rms < rms < 1.5 * expected_rms, f"level {rms:.3f}, sent {expected_rms:.3f}"

    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / RATE)
    peak = float(freqs[int(np.argmax(spectrum))])
    assert abs(peak - FREQ) <= 3.0, f"strongest frequency {peak:.1f} Hz, sent {FREQ} Hz"
    near = spectrum[np.abs(freqs - FREQ) <= 20].sum()
    assert near / spectrum.sum() > 0.9, "the received audio is not mostly the sine that was sent"


def test_livekit_server_listens_on_loopback_only(livekit_server: LiveKitServer) -> None:
    ss = shutil.which("ss")
    if ss is None:
        pytest.fail("ss is not installed: run scripts/setup --dev (installs iproute2)")
    out = subprocess.run([ss, "-Hlntup"], capture_output=True, text=True, timeout=10, check=True)
    pid = os.environ.get("EDGEAGENT_TEST_LIVEKIT_PID")
    port = urlparse(livekit_server.url).port
    if pid:  # scripts/test tells us which process it is: check all of its sockets
        sockets = [line.split() for line in out.stdout.splitlines() if f"pid={pid}," in line]
    else:
        sockets = [
            fields
            for fields in (line.split() for line in out.stdout.splitlines())
            if fields[4].rsplit(":", 1)[-1] == str(port)
        ]
    assert sockets, f"no listening socket found for livekit-server:\n{out.stdout}"
    ports = {fields[4].rsplit(":", 1)[-1] for fields in sockets}
    assert str(port) in ports, f"livekit-server does not listen on {port}: {ports}"
    for fields in sockets:
        host = fields[4].rsplit(":", 1)[0]
        assert host == "127.0.0.1", f"livekit-server listens beyond loopback: {' '.join(fields)}"
