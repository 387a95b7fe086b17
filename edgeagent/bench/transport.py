"""Transport probe (``scripts/bench-room --transport``): how late a remote sound reaches the agent.

One participant hands 10 ms blocks to its :class:`rtc.AudioSource` in real time (quiet
noise, and every ~0.8 s a loud burst of 0.3 s); another reads the track with several
:class:`rtc.AudioStream` settings at once (sample rate, frame size), so all see the same
packets under the same load. For each setting it reports how long after a burst's first
block was handed over the first loud frame arrived (p50/p90/min over ``onsets`` bursts).
This is how :class:`~edgeagent.room.audio.RoomInput` chose to read 48 kHz in 10 ms frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.aio import wait_for
from edgeagent.bench.server import Server

RATE = 48_000
BLOCK = RATE // 100
SETTINGS: tuple[tuple[int, int], ...] = ((48_000, 10), (48_000, 20), (16_000, 10), (16_000, 20))
"""(sample rate, frame ms) read side by side."""
LOUD_RMS = 3000.0


def onset_delays(onsets: Sequence[float], arrivals: Sequence[float], limit_s: float = 0.5) -> list[float]:
    """Per onset, ms until the first loud arrival at or after it (within ``limit_s``)."""
    out = []
    for o in onsets:
        a = next((t for t in arrivals if t >= o), None)
        if a is not None and a - o < limit_s:
            out.append(1000.0 * (a - o))
    return sorted(out)


async def probe(server: Server, onsets: int = 40) -> dict[str, Any]:
    """Run the probe on ``server``; per setting ``"RATE/FRAMEms"``: n, p50, p90, min (ms)."""
    from livekit import rtc

    room_name = f"transport-{uuid.uuid4().hex[:6]}"

    sender, receiver = rtc.Room(), rtc.Room()
    source = rtc.AudioSource(RATE, 1, queue_size_ms=0)
    arrivals: dict[tuple[int, int], list[float]] = {s: [] for s in SETTINGS}
    readers: list[asyncio.Task[None]] = []

    async def read(track: Any, setting: tuple[int, int]) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=setting[0], num_channels=1,
                                            frame_size_ms=setting[1])
        async for ev in stream:
            x = np.frombuffer(ev.frame.data, np.int16).astype(np.float64)
            if np.sqrt(np.mean(x * x)) > LOUD_RMS:
                arrivals[setting].append(time.monotonic())

    try:
        await wait_for(receiver.connect(server.url, server.token("receiver", room_name)), 20)
        await wait_for(sender.connect(server.url, server.token("sender", room_name)), 20)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await wait_for(sender.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)), 20)
        deadline = time.monotonic() + 20
        while not (remote := [pub.track for p in receiver.remote_participants.values()
                              for pub in p.track_publications.values() if pub.track is not None]):
            if time.monotonic() > deadline:
                raise TimeoutError("the receiver did not get the sender's track within 20 s")
            await asyncio.sleep(0.05)
        readers = [asyncio.ensure_future(read(remote[0], s)) for s in SETTINGS]
        handed = await _send(source, onsets)
        await asyncio.sleep(0.5)
    finally:
        for r in readers:
            r.cancel()
        for room in (sender, receiver):
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await wait_for(room.disconnect(), 10)
    out: dict[str, Any] = {}
    for s in SETTINGS:
        d = onset_delays(handed, arrivals[s])
        out[f"{s[0]}/{s[1]}ms"] = {"n": len(d), "p50_ms": statistics.median(d) if d else None,
                                   "p90_ms": d[int(0.9 * len(d))] if d else None, "min_ms": d[0] if d else None}
    return out


async def _send(source: Any, onsets: int, seed: int = 0) -> list[float]:
    """Blocks every 10 ms on an absolute schedule; the times the bursts' first blocks were handed."""
    from livekit import rtc

    rng = np.random.default_rng(seed)
    handed: list[float] = []
    start, i, loud_until, next_onset = time.monotonic(), 0, -1, 100  # 1 s of quiet first
    while len(handed) < onsets or i < loud_until + 60:
        delay = start + (i + 1) * BLOCK / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        burst = i == next_onset and len(handed) < onsets
        if burst:
            loud_until, next_onset = i + 30, i + 80 + int(rng.integers(0, 7))
        level = 8000.0 if i < loud_until else 15.0
        block = np.clip(rng.normal(0.0, level, BLOCK), -32768, 32767).astype(np.int16)
        at = time.monotonic()
        await source.capture_frame(rtc.AudioFrame(block.tobytes(), RATE, 1, BLOCK))
        if burst:
            handed.append(at)
        i += 1
    return handed


def report(result: dict[str, Any]) -> str:
    lines = ["AudioStream setting   onsets   p50 ms   p90 ms   min ms"]
    for name, r in result.items():
        lines.append(f"{name:20} {r['n']:>7} {_ms(r['p50_ms']):>8} {_ms(r['p90_ms']):>8} {_ms(r['min_ms']):>8}")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def idle_report(result: dict[str, float]) -> str:
    return "idle agent in a room, % of one core: " + ", ".join(
        f"{k.removesuffix('_pct')} {v:.1f}" for k, v in result.items() if k.endswith("_pct"))


# -- what an idle agent's room I/O costs ---------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(server: Server, workdir: Path, seconds: float = 10.0) -> dict[str, float]:
    """% of one core, over ``seconds``, of an idle agent's room I/O (:class:`RoomLink`,
    :class:`RoomInput` read as the session would, :class:`RoomOutput` with nothing to say:
    this process, no models), the test participant sending room noise (its own process)
    and livekit-server (when started here)."""
    from edgeagent.bench.participant import ParticipantProcess
    from edgeagent.config.room import LiveKitConfig
    from edgeagent.room.audio import RoomInput, RoomOutput
    from edgeagent.room.connection import RoomLink

    room_name = f"idle-{uuid.uuid4().hex[:6]}"
    link = RoomLink(LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret,
                                  room=room_name, identity="edgeagent-idle"), backoff_s=0.2)
    inp, out = RoomInput(link), RoomOutput(link)
    peer = ParticipantProcess(workdir)
    token = server.token("bench-speaker", room_name)

    async def read() -> None:
        async for _ in inp:
            pass

    reader = asyncio.ensure_future(read())
    try:
        await wait_for(out.start(), 10)
        await link.start()
        if not await link.wait_connected(20):
            raise TimeoutError(f"the agent did not join: {link.last_error}")
        await peer.join(server.url, token, "edgeagent-idle")
        await asyncio.sleep(2.0)
        pids = {"participant": peer.pid}
        if server.process is not None:
            pids["server"] = server.process.pid
        before = {k: _cpu_seconds(p) for k, p in pids.items()}
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - wall0
        result = {"agent_pct": 100.0 * (time.process_time() - cpu0) / wall}
        result.update({f"{k}_pct": 100.0 * (_cpu_seconds(p) - before[k]) / wall for k, p in pids.items()})
        result["agent_sending"] = float(out.sending)
        return result
    finally:
        reader.cancel()
        for closing in (peer.leave(), link.aclose(), out.aclose(), inp.aclose()):
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await wait_for(closing, 20)
