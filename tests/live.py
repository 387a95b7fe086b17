"""An AgentSession on the PulseAudio null sinks, for tests: speak into the virtual mic, hear the speaker.

``play()`` is the user speaking (``paplay`` into ``mic_feed``); :class:`Recorder` hears
the agent (``parec`` on ``speaker.monitor``); :class:`Live` runs a session on the
devices ``edgeagent run`` opens and collects its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.local_devices import make_devices
from edgeagent.config import AudioConfig
from edgeagent.voice import Agent, AgentSession, AgentState, AgentStateChangedEvent, Models
from edgeagent.voice.events import EVENT_NAMES

RATE = 16_000
E = TypeVar("E")
T = TypeVar("T")


async def bounded(aw: Awaitable[T], what: str, timeout: float = 20.0) -> T:
    """``await aw``, failing the test (naming ``what``) after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} did not finish within {timeout:.0f} s")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


async def play(sink: str, wav: Path) -> None:
    """Speak ``wav`` into the virtual mic; returns when it has been played."""
    proc = await asyncio.create_subprocess_exec("paplay", f"--device={sink}", str(wav))
    assert await asyncio.wait_for(proc.wait(), 30) == 0


class Live:
    """An AgentSession on the default devices, every event collected in order."""

    def __init__(self, models: Models, agent: Agent | None = None, **options: Any) -> None:
        self.inp, self.out = make_devices(AudioConfig())
        self.session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts,
                                    wake=models.wake, audio_turn=models.audio_turn, **options)
        self.agent = agent or Agent(instructions="You are a helpful voice assistant. Answer in one short sentence.")
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        for name in EVENT_NAMES:
            self.session.on(name, self._on_event)

    def _on_event(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Live]:
        await asyncio.wait_for(self.inp.start(), 15)
        await asyncio.wait_for(self.out.start(), 15)
        await asyncio.wait_for(self.session.start(self.agent, input=self.inp, output=self.out), 30)
        try:
            deadline = time.monotonic() + 10  # a fresh null sink is slow to deliver its first block
            while self.inp.counters.frames == 0:
                assert time.monotonic() < deadline, "no audio from the virtual mic within 10 s"
                await asyncio.sleep(0.05)
            yield self
        finally:
            await asyncio.wait_for(self.session.aclose(), 15)
            await asyncio.wait_for(self.out.aclose(), 5)
            await asyncio.wait_for(self.inp.aclose(), 5)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[E], timeout: float, where: Callable[[E], bool] = lambda e: True,
                       after: int = 0) -> E:
        """The first event of ``kind`` (from index ``after``) that ``where`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events[after:] if isinstance(e, kind) and where(e)]
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind.__name__} within {timeout} s; events: {self.events}"
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_state(self, state: AgentState, timeout: float, after: int = 0) -> int:
        """Wait until the session enters ``state``; returns the index of that event."""
        ev = await self.wait_for(AgentStateChangedEvent, timeout, lambda e: e.new_state is state, after)
        return self.events.index(ev)

    def states(self) -> list[AgentState]:
        return [e.new_state for e in self.of(AgentStateChangedEvent)]


class Recorder:
    """Records a PulseAudio source (16 kHz mono) with parec."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        self._proc, self._stdout = proc, proc.stdout
        self._chunks: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, source: str) -> Recorder:
        proc = await asyncio.create_subprocess_exec(
            "parec", f"--device={source}", "--format=s16le", f"--rate={RATE}", "--channels=1",
            "--latency-msec=20", stdout=asyncio.subprocess.PIPE,
        )
        rec = cls(proc)
        rec._chunks.append(await asyncio.wait_for(rec._stdout.read(640), 10))  # audio flows
        rec._reader = asyncio.create_task(rec._read())
        return rec

    async def _read(self) -> None:
        while data := await self._stdout.read(65536):
            self._chunks.append(data)

    async def stop(self) -> AudioFrame:
        self._proc.terminate()
        await asyncio.wait_for(self._proc.wait(), 5)
        assert self._reader is not None
        await asyncio.wait_for(self._reader, 5)
        data = b"".join(self._chunks)
        return AudioFrame.from_bytes(data[: len(data) // 2 * 2], RATE)


def loud_blocks(audio: AudioFrame, db: float = -40.0, block_s: float = 0.02) -> list[int]:
    """Indexes of the ``block_s`` blocks louder than ``db`` dBFS."""
    return [i for i, b in enumerate(audio.chunks(round(audio.sample_rate * block_s))) if b.rms_dbfs() > db]


def loud_span(audio: AudioFrame, db: float = -40.0) -> tuple[AudioFrame, float]:
    """The part of ``audio`` from its first to its last 20 ms block above ``db`` dBFS
    (with 0.3 s around it), and how many seconds of blocks were above."""
    loud = loud_blocks(audio, db)
    if not loud:
        return AudioFrame.silence(0, audio.sample_rate), 0.0
    n = audio.sample_rate // 50
    start, stop = max(0, loud[0] * n - 15 * n), (loud[-1] + 1) * n + 15 * n
    return audio.slice(start, stop), len(loud) * 0.02
