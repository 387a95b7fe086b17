"""The minimal voice loop, for real: speech played into the virtual mic, the reply recorded
from the virtual speaker (PulseAudio null sinks, see tests/conftest.py), the default models.

``paplay --device=mic_feed`` is the user speaking; ``parec --device=speaker.monitor``
hears the agent. The loop runs on the devices ``edgeagent run`` opens
(:func:`edgeagent.runner.make_devices` with the default config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import PulseDevices
from speech import piper, save, with_silence

from edgeagent.audio.frame import AudioFrame
from edgeagent.config import AudioConfig
from edgeagent.runner import make_devices
from edgeagent.voice import (
    AgentReply,
    AgentState,
    LoopEvent,
    Models,
    StateChanged,
    UserTranscript,
    VoiceLoop,
    WakeDetected,
)

pytestmark = pytest.mark.pulse
log = logging.getLogger(__name__)
E = TypeVar("E", bound=LoopEvent)
RATE = 16_000
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def models() -> Iterator[Models]:
    """Every default model, loaded once for the module."""
    loaded = asyncio.run(asyncio.wait_for(Models.load(), 180))
    yield loaded
    asyncio.run(asyncio.wait_for(loaded.aclose(), 30))


@dataclass(frozen=True)
class Wavs:
    wake_then_question: Path
    one_breath: Path
    no_wake: Path


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> Wavs:
    d = tmp_path_factory.mktemp("voice")
    pause = AudioFrame.silence(0.6, RATE)
    wake_then_question = AudioFrame.concat([piper("Hey Jarvis."), pause, piper(QUESTION)])
    return Wavs(
        save(with_silence(wake_then_question, 1.0, 1.5), d / "wake_then_question.wav"),
        save(with_silence(piper("Hey Jarvis, what is the capital of France?"), 1.0, 1.5), d / "one_breath.wav"),
        save(with_silence(piper(QUESTION), 1.0, 1.5), d / "no_wake.wav"),
    )


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


async def play(sink: str, wav: Path) -> None:
    """Speak ``wav`` into the virtual mic; returns when it has been played."""
    proc = await asyncio.create_subprocess_exec("paplay", f"--device={sink}", str(wav))
    assert await asyncio.wait_for(proc.wait(), 30) == 0


class Agent:
    """A VoiceLoop on the default devices, its events collected."""

    def __init__(self, models: Models, follow_up: float) -> None:
        self.inp, self.out = make_devices(AudioConfig())
        self.loop = VoiceLoop(models, self.inp, self.out, on_event=self._on_event, follow_up=follow_up)
        self.events: list[LoopEvent] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def _on_event(self, event: LoopEvent) -> None:
        self.events.append(event)
        self._changed.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Agent]:
        await asyncio.wait_for(self.inp.start(), 15)
        await asyncio.wait_for(self.out.start(), 15)
        self._task = asyncio.ensure_future(self.loop.run())
        try:
            deadline = time.monotonic() + 10  # a fresh null sink is slow to deliver its first block
            while self.inp.counters.frames == 0:
                assert time.monotonic() < deadline, "no audio from the virtual mic within 10 s"
                await asyncio.sleep(0.05)
            assert self.events[:1] == [StateChanged(AgentState.IDLE)]
            yield self
        finally:
            self._task.cancel()
            await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 15)
            await asyncio.wait_for(self.out.aclose(), 5)
            await asyncio.wait_for(self.inp.aclose(), 5)

    async def wait_for(self, kind: type[E], timeout: float) -> E:
        """The first event of ``kind`` (waiting at most ``timeout`` seconds for it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if isinstance(e, kind)]
            if found:
                return found[0]
            assert self._task is not None and not self._task.done(), self._task and self._task.result()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind.__name__} within {timeout} s; events: {self.events}"
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def states(self) -> list[AgentState]:
        return [e.state for e in self.events if isinstance(e, StateChanged)]


class Recorder:
    """Records the virtual speaker (16 kHz mono) with parec."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        self._proc, self._stdout = proc, proc.stdout
        self._chunks: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, monitor: str) -> Recorder:
        proc = await asyncio.create_subprocess_exec(
            "parec", f"--device={monitor}", "--format=s16le", f"--rate={RATE}", "--channels=1",
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


def loud_span(audio: AudioFrame, db: float = -40.0) -> tuple[AudioFrame, float]:
    """The part of ``audio`` from its first to its last 20 ms block above ``db`` dBFS
    (with 0.3 s around it), and how many seconds of blocks were above."""
    blocks = audio.chunks(RATE // 50)
    loud = [i for i, b in enumerate(blocks) if b.rms_dbfs() > db]
    if not loud:
        return AudioFrame.silence(0, RATE), 0.0
    start, stop = max(0, loud[0] * 320 - 4800), (loud[-1] + 1) * 320 + 4800
    return audio.slice(start, stop), len(loud) * 0.02


async def test_wake_word_then_question_gets_a_spoken_answer(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    rec = await Recorder.start(pulse.speaker_monitor)
    try:
        agent = Agent(models, follow_up=5.0)
        async with agent.running():
            await play(pulse.mic_sink, wavs.wake_then_question)
            reply = await agent.wait_for(AgentReply, 60)  # sent once the reply has played
            await asyncio.sleep(0.3)
    finally:
        recorded = await rec.stop()
    assert [type(e) for e in agent.events if not isinstance(e, StateChanged)] == [
        WakeDetected, UserTranscript, AgentReply,
    ], agent.events
    assert agent.states()[:4] == [AgentState.IDLE, AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING]
    transcript = next(e for e in agent.events if isinstance(e, UserTranscript)).text
    assert {"capital", "france"} <= words(transcript), transcript
    assert reply.text.strip(), "the LLM said nothing"
    assert [m.role for m in agent.loop.ctx.messages] == ["system", "user", "assistant"]
    assert reply.latency_s is not None and 0.0 < reply.latency_s < 10.0, reply.latency_s
    log.info("user: %r; agent: %r; end of speech → first reply sample: %.0f ms",
             transcript, reply.text, 1000 * reply.latency_s)

    spoken, loud_s = loud_span(recorded)
    assert loud_s > 0.5, f"only {loud_s:.2f} s of audible reply on the speaker"
    assert spoken.rms_dbfs() > -35, f"the reply is quiet: {spoken.rms_dbfs():.1f} dBFS"
    heard = (await asyncio.wait_for(models.stt.recognize(spoken), 60)).text
    common = words(heard) & words(reply.text)
    assert len(common) >= min(3, len(words(reply.text))), f"said {reply.text!r}, heard {heard!r}"


async def test_question_in_the_same_breath_as_the_wake_word(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    """The words right after "hey jarvis" count; stopping the loop mid-reply is clean."""
    agent = Agent(models, follow_up=0.0)
    async with agent.running():
        await play(pulse.mic_sink, wavs.one_breath)
        transcript = await agent.wait_for(UserTranscript, 30)
    assert {"capital", "france"} <= words(transcript.text), transcript


async def test_speech_without_the_wake_word_is_ignored(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    agent = Agent(models, follow_up=5.0)
    async with agent.running():
        before = agent.inp.counters.frames
        t0 = time.monotonic()
        await play(pulse.mic_sink, wavs.no_wake)
        await asyncio.sleep(2.0)  # an answer would have begun by now
        heard_s = (agent.inp.counters.frames - before) * 0.02
        elapsed = time.monotonic() - t0
    assert heard_s > elapsed - 1.0, f"the loop heard {heard_s:.1f} s of {elapsed:.1f} s"
    assert agent.events == [StateChanged(AgentState.IDLE)]


def test_run_check_opens_the_sound_devices(pulse: PulseDevices) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edgeagent", "run", "--check"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "config, models and sound devices are ready" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "edgeagent", "run", "--check", "--set", "audio.input_device=no-such-mic"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1
    assert "microphone" in run.stdout and "no-such-mic" in run.stdout, run.stdout


def test_edgeagent_run_starts_and_stops_on_sigterm(pulse: PulseDevices) -> None:
    """README's command: the agent comes up on the default devices; SIGTERM ends it with 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:  # ends if the process dies
            lines.append(line)
            if "state: idle" in line:  # the agent waits for the wake word
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "models loaded" in out and 'say "hey jarvis"' in out and "stopping" in out, out
