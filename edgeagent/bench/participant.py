"""The room benchmark's test participant, in a process of its own (as a remote person would be).

``python -m edgeagent.bench.participant --url URL --token JWT --agent IDENTITY`` joins
the room with the ``livekit`` SDK, publishes a microphone track and listens to the
agent's track. Its microphone is real time: every 10 ms, on an absolute schedule, it
hands one 48 kHz block to its :class:`rtc.AudioSource` (no queue, as a browser's mic),
room noise unless a question is being said. It keeps, for every 10 ms of the agent's
track louder than :data:`REPLY_DBFS`, the monotonic time it arrived.

Running apart from the agent matters: in one process the participant's frames would
wait on the agent's event loop, and the time a reply "arrived" would be when the
agent's loop got round to it. ``CLOCK_MONOTONIC`` is the same in both processes, so
its times compare with the agent's.

Protocol: one JSON object per line. Commands on stdin:
``{"cmd": "say", "wav": PATH}`` -> ``{"event": "said", "ended": T}`` once all of it was
sent (``T``: when the block holding its last loud 10 ms was handed to the SDK);
``{"cmd": "first_loud", "after": T, "timeout": S}`` -> ``{"event": "first_loud", "at":
T2 | null}``; ``{"cmd": "quiet", "for": S, "timeout": S2}`` -> ``{"event": "quiet",
"ok": BOOL}`` once nothing loud came for ``S`` seconds; ``{"cmd": "clear"}`` forgets
what was heard; ``{"cmd": "chat", "text": TEXT}`` -> ``{"event": "chatted"}`` once TEXT was
sent on ``lk.chat`` (typed to the agent); ``{"cmd": "settled", "for": S, "timeout": S2}`` ->
``{"event": "settled", "ok": BOOL}`` once the agent's ``lk.agent.state`` has been listening
(or idle) and its track quiet for ``S`` seconds; ``{"cmd": "leave"}`` -> ``{"event": "left"}`` and exit. Events it sends
on its own: ``joined``, ``hearing`` (the agent's first frame arrived), ``error``.
:class:`ParticipantProcess` is the agent side's client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.audio.wav import read_wav, write_wav
from edgeagent.bench.scripted import SILENCE_DBFS
from edgeagent.errors import EdgeAgentError

RATE = 48_000
BLOCK = RATE // 100
"""10 ms at 48 kHz: what the participant hands to its AudioSource at a time."""
NOISE_DBFS = -65.0
REPLY_DBFS = -60.0
"""The agent's reply has started at the first block louder than this (the agent's silence
decodes to digital zeros; the codec does not keep a reply's first non-zero sample)."""


def loud(block: npt.ArrayLike, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """Whether a block of int16 samples is louder (RMS) than ``threshold_dbfs``."""
    x = np.asarray(block, np.float64) / 32768.0
    if not len(x):
        return False
    return bool(np.sqrt(np.mean(x * x)) > 10.0 ** (threshold_dbfs / 20.0))


def last_loud_block(samples: Int16Array, block: int = BLOCK, threshold_dbfs: float = SILENCE_DBFS) -> int:
    """Index of the last ``block``-sample block of ``samples`` louder than the threshold (-1: none)."""
    last = -1
    for i in range(0, len(samples), block):
        if loud(samples[i : i + block], threshold_dbfs):
            last = i // block
    return last


def first_loud_after(heard: Sequence[tuple[float, Int16Array]], t: float,
                     threshold_dbfs: float = SILENCE_DBFS) -> float | None:
    """Arrival time of the first loud block received at or after ``t`` (None: none yet)."""
    for at, pcm in heard:
        if at >= t and loud(pcm, threshold_dbfs):
            return at
    return None


class Speaker:
    """The participant itself (runs in the child process); see the module docs."""

    def __init__(self, agent: str, *, seed: int = 3) -> None:
        from livekit import rtc

        self.agent = agent
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=0)
        self.heard: list[tuple[float, Int16Array]] = []
        self.last_loud: float | None = None
        self.hearing = asyncio.Event()
        self._arrived = asyncio.Event()
        rng = np.random.default_rng(seed)
        self._noise = rng.normal(0.0, 10.0 ** (NOISE_DBFS / 20.0) * 32768.0, 100 * BLOCK)  # 1 s, looped
        self._script: list[Int16Array] = []
        self._last_index: int | None = None  # blocks still to send before the last loud one
        self._end_at: float | None = None
        self._saying: asyncio.Future[float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.room.on("track_subscribed", self._on_track)

    def _on_track(self, track: Any, pub: Any, p: Any) -> None:
        from livekit import rtc

        if p.identity == self.agent and track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: Any) -> None:
        from livekit import rtc

        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            at = time.monotonic()
            pcm = np.frombuffer(ev.frame.data, np.int16)
            self.hearing.set()
            if loud(pcm, REPLY_DBFS):
                self.heard.append((at, pcm.copy()))
                self._arrived.set()
                if loud(pcm):
                    self.last_loud = at

    async def join(self, url: str, token: str) -> None:
        from livekit import rtc

        await wait_for(self.room.connect(url, token), 20)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await wait_for(self.room.local_participant.publish_track(track, opts), 20)
        self._tasks.append(asyncio.ensure_future(self._send()))

    async def _send(self) -> None:
        from livekit import rtc

        start, i = time.monotonic(), 0
        while True:
            due = start + (i + 1) * BLOCK / RATE  # block i exists once its 10 ms have passed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # stalled: a new schedule
                start, i = time.monotonic() - BLOCK / RATE, 0
            k = (i % 100) * BLOCK
            pcm = self._noise[k : k + BLOCK].copy()
            said = self._script.pop(0) if self._script else None
            if said is not None:
                pcm += said
            block = np.clip(np.round(pcm), -32768, 32767).astype(np.int16)
            handed = time.monotonic()
            await self.source.capture_frame(rtc.AudioFrame(block.tobytes(), RATE, 1, BLOCK))
            if said is not None and self._last_index is not None:
                if self._last_index == 0:
                    self._end_at = handed
                self._last_index -= 1
            if not self._script and self._saying is not None and not self._saying.done():
                self._saying.set_result(self._end_at if self._end_at is not None else handed)
            i += 1

    async def say(self, audio: AudioFrame) -> float:
        """Speak ``audio`` (48 kHz); the true end of speech, once it has all been sent."""
        samples = audio.samples
        blocks = []
        for i in range(0, len(samples), BLOCK):
            b = np.zeros(BLOCK, np.int16)
            part = samples[i : i + BLOCK]
            b[: len(part)] = part
            blocks.append(b)
        end = last_loud_block(samples)
        self._last_index, self._end_at = (end if end >= 0 else None), None
        self._saying = asyncio.get_running_loop().create_future()
        self._script = blocks
        return await self._saying

    async def first_loud(self, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while (at := first_loud_after(self.heard, after, REPLY_DBFS)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._arrived.wait(), left)
        return at

    async def quiet(self, seconds: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.last_loud is not None and time.monotonic() - self.last_loud < seconds:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def agent_state(self) -> str | None:
        p = self.room.remote_participants.get(self.agent)
        return None if p is None else p.attributes.get("lk.agent.state")

    async def settled(self, seconds: float, timeout: float) -> bool:
        """Whether the agent was listening (or idle) with a quiet track for ``seconds`` within ``timeout``."""
        start = time.monotonic()
        since = start
        while True:
            now = time.monotonic()
            busy = self.agent_state() not in ("listening", "idle")
            if busy or (self.last_loud is not None and now - self.last_loud < seconds):
                since = now
            elif now - since >= seconds:
                return True
            if now - start >= timeout:
                return False
            await asyncio.sleep(0.05)

    async def chat(self, text: str) -> None:
        """Type ``text`` to the agent (a text stream on ``lk.chat``)."""
        await wait_for(self.room.local_participant.send_text(text, topic="lk.chat"), 10)

    async def leave(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wait_for(t, 5)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(self.room.disconnect(), 10)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(self.source.aclose(), 5)


# -- the child process ------------------------------------------------------------------------


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _serve(args: argparse.Namespace) -> int:
    speaker = Speaker(args.agent)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await speaker.join(args.url, args.token)
    except (Exception, asyncio.TimeoutError) as exc:
        _emit(event="error", message=f"cannot join: {exc or type(exc).__name__}")
        return 1
    _emit(event="joined")

    async def hearing() -> None:
        await speaker.hearing.wait()
        _emit(event="hearing")

    watcher = asyncio.ensure_future(hearing())
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            match cmd["cmd"]:
                case "say":
                    _emit(event="said", ended=await speaker.say(read_wav(cmd["wav"])))
                case "first_loud":
                    _emit(event="first_loud", at=await speaker.first_loud(cmd["after"], cmd["timeout"]))
                case "quiet":
                    _emit(event="quiet", ok=await speaker.quiet(cmd["for"], cmd["timeout"]))
                case "clear":
                    speaker.heard.clear()
                case "chat":
                    await speaker.chat(cmd["text"])
                    _emit(event="chatted")
                case "settled":
                    _emit(event="settled", ok=await speaker.settled(cmd["for"], cmd["timeout"]))
                case "leave":
                    break
        return 0
    finally:
        watcher.cancel()
        await speaker.leave()
        _emit(event="left")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeagent.bench.participant", description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--agent", required=True, help="identity of the agent whose track to time")
    return asyncio.run(_serve(ap.parse_args(argv)))


# -- the agent side's client ----------------------------------------------------------------------


class ParticipantProcess:
    """Runs the participant in a child process and talks to it (one request at a time)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hearing = False
        self._proc: asyncio.subprocess.Process | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._wavs = 0

    async def join(self, url: str, token: str, agent: str, timeout: float = 30.0) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgeagent.bench.participant", "--url", url, "--token", token, "--agent", agent,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read())
        await self._expect("joined", timeout)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            event = json.loads(line)
            if event.get("event") == "hearing":
                self.hearing = True
            else:
                self._events.put_nowait(event)
        self._events.put_nowait({"event": "error", "message": "the participant process ended"})

    async def _expect(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            event = await wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            raise EdgeAgentError(f"the test participant did not answer ({name}) within {timeout:g} s") from None
        if event.get("event") != name:
            raise EdgeAgentError(f"the test participant: expected {name}, got {event}")
        return event

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the participant has not joined"
        return self._proc.pid

    def _send(self, **cmd: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def say(self, audio: AudioFrame) -> float:
        """Speak ``audio`` (48 kHz) in real time; the true end of speech (monotonic)."""
        self._wavs += 1
        path = self.workdir / f"question-{self._wavs}.wav"
        write_wav(path, audio)
        self._send(cmd="say", wav=str(path))
        event = await self._expect("said", 10.0 + audio.duration)
        return float(event["ended"])

    async def first_loud(self, after: float, timeout: float) -> float | None:
        """Arrival of the agent's first block above REPLY_DBFS at or after ``after`` (None: none in time)."""
        self._send(cmd="first_loud", after=after, timeout=timeout)
        at = (await self._expect("first_loud", timeout + 10.0))["at"]
        return None if at is None else float(at)

    async def quiet(self, seconds: float, timeout: float) -> bool:
        """Whether the agent's track went quiet for ``seconds`` within ``timeout``."""
        self._send(cmd="quiet", **{"for": seconds}, timeout=timeout)
        return bool((await self._expect("quiet", timeout + 10.0))["ok"])

    def clear(self) -> None:
        self._send(cmd="clear")

    async def settled(self, seconds: float, timeout: float) -> bool:
        """Whether the agent was listening with a quiet track for ``seconds`` within ``timeout``."""
        self._send(cmd="settled", **{"for": seconds}, timeout=timeout)
        return bool((await self._expect("settled", timeout + 10.0))["ok"])

    async def chat(self, text: str) -> None:
        """Type ``text`` to the agent on ``lk.chat``; returns once it was sent."""
        self._send(cmd="chat", text=text)
        await self._expect("chatted", 20.0)

    async def leave(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            self._send(cmd="leave")
        try:
            await wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()


if __name__ == "__main__":
    raise SystemExit(main())
