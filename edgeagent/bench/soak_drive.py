"""What drives the soak: the device process, the spoken script, and the controller.

- :class:`Device` runs :mod:`edgeagent.bench.soak_device` and follows its events and samples.
- :class:`Script` loops over the steps of :data:`CYCLE` without pause: a question after
  the wake word on the local mic (in one breath: in a room the device listens all the
  time, ``activation.mode = always``, so "Hey Jarvis." and a pause is a turn of its own,
  answered, with the question then spoken over that answer), a follow-up, a question from the room participant, a
  barge-in (a second question spoken over the reply to the first), a typed ``lk.chat``
  message, a silence and a burst of noise. Each question must be answered: the device
  logs the user's turn after the question began, and then a reply. A step begins once the
  agent has been listening, with its voice quiet, for :data:`SETTLED_S` (its ``lk.agent.state``
  as the room participant sees it).
- :func:`control_loop` is a controller participant (:class:`~edgeagent.room.config_client.Controller`,
  what ``edgeagent config get|set`` uses) calling ``get`` and ``set`` one after the other at
  its allowed rate (27 calls a minute of the 30 allowed: a ``set`` is a ``get`` and a ``set``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.wav import write_wav
from edgeagent.bench.participant import ParticipantProcess
from edgeagent.bench.pulse import MIC_SINK
from edgeagent.bench.scripted import QUESTIONS, espeak, make_questions, trim
from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)

CYCLE = ("wake", "follow-up", "room", "barge-in", "chat", "silence", "noise")
ANSWER_TIMEOUT_S = 45.0
"""From the end of a question to its reply logged in full (a long reply plays for 20 s)."""
SILENCE_S = 6.0
NOISE_S = 3.0
NOISE_DBFS = -30.0
BARGE_AFTER_S = 0.8
"""The barge-in question starts this long after the reply to the first reached the room."""
SETTLED_S = 1.0
CONTROL_EVERY_S = 3.3
"""A get, then a set (itself a get and a set): 3 calls in 6.6 s, 27 a minute, 90 % of the default
``control.rate_per_minute`` (30). At exactly 30 the token bucket's level is a random walk with
its top clipped, so over an hour it reaches the bottom now and then and a call is refused."""


class Device:
    """The device process: its events (in order) and samples."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._samples: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, overrides: list[str], env: dict[str, str], log_path: Path) -> None:
        args = [a for o in overrides for a in ("--set", o)]
        err = await asyncio.to_thread(open, log_path, "ab")
        with err:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgeagent.bench.soak_device", *args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err, env=env, limit=1 << 20)
        self._reader = asyncio.ensure_future(self._read())

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def exited(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            if not line.startswith(b"{"):
                continue  # what run_room prints for a person ("edgeagent: joining room ...")
            event = json.loads(line)
            if event.get("ev") == "sample":
                self._samples.put_nowait(event)
            else:
                self.events.append(event)
                self._changed.set()
        self._changed.set()

    async def wait(self, check: Callable[[dict[str, Any]], bool], after_wall: float, timeout: float
                   ) -> dict[str, Any] | None:
        """The first event since ``after_wall`` that ``check`` accepts (None: none in time)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["wall"] >= after_wall and check(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or self.exited is not None or (self._reader is not None and self._reader.done()):
                return None
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._changed.wait(), left)

    async def sample(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"sample\n")
        return await wait_for(self._samples.get(), 10)

    async def stop(self, timeout: float = 60.0) -> int:
        """``stop``, then the exit status (SIGKILL and -9 when it does not exit in time)."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(b"stop\n")
        try:
            await wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await wait_for(self._reader, 10)
        return proc.returncode if proc.returncode is not None else -9


def is_user_turn(ev: dict[str, Any]) -> bool:
    m = ev["msg"]
    return m.startswith("user: ") and not m.startswith("user: (nothing") and "(too short" not in m


def is_reply(ev: dict[str, Any]) -> bool:
    """A reply that said something (a held reply dropped unheard logs ``agent: (nothing)``)."""
    return bool(ev["msg"].startswith("agent: ") and not ev["msg"].startswith("agent: (nothing)"))


@dataclass
class StepResult:
    kind: str
    text: str
    t_s: float
    """When the step began, seconds after the driving began."""
    questions: int = 0
    answered: int = 0
    latency_ms: list[float] = field(default_factory=list)
    """The device's e2e latency (end of speech as its VAD placed it -> first reply sample) of each answer."""
    room_e2e_ms: float | None = None
    """Room questions: end of speech at the participant -> the agent's first audio there."""
    extra_turns: int = 0
    """Turns the device took during a silence or a noise (none expected of a silence)."""
    note: str = ""


@dataclass
class Sounds:
    wake: list[tuple[str, Path]]
    follow: list[tuple[str, Path]]
    room: list[tuple[str, AudioFrame]]
    noise: Path


def make_sounds(workdir: Path) -> Sounds:
    """Every question spoken by espeak-ng (the wake word first for ``wake``), and the noise, as WAV files."""
    from edgeagent.bench.room import room_questions

    workdir.mkdir(parents=True, exist_ok=True)
    wake, follow = [], []
    for i, q in enumerate(make_questions(len(QUESTIONS))):
        write_wav(workdir / f"wake-{i}.wav", trim(espeak(f"Hey Jarvis, {q.text[0].lower()}{q.text[1:]}")))
        write_wav(workdir / f"follow-{i}.wav", q.question_audio)
        wake.append((q.text, workdir / f"wake-{i}.wav"))
        follow.append((q.text, workdir / f"follow-{i}.wav"))
    rng = np.random.default_rng(7)
    level = 10.0 ** (NOISE_DBFS / 20.0) * 32768.0
    noise = np.clip(rng.normal(0.0, level, int(NOISE_S * RECOGNITION_RATE)), -32768, 32767).astype(np.int16)
    write_wav(workdir / "noise.wav", AudioFrame.from_int16(noise, RECOGNITION_RATE))
    return Sounds(wake, follow, room_questions(len(QUESTIONS)), workdir / "noise.wav")


async def play(wav: Path) -> float:
    """Speak ``wav`` into the local mic (``paplay`` into mic_feed); the monotonic time it ended."""
    proc = await asyncio.create_subprocess_exec("paplay", f"--device={MIC_SINK}", str(wav))
    if await wait_for(proc.wait(), 60) != 0:
        raise EdgeAgentError(f"paplay {wav} failed (exit {proc.returncode})")
    return time.monotonic()


class Script:
    """The spoken script, one step at a time (:meth:`step`); see the module docs."""

    def __init__(self, device: Device, peer: ParticipantProcess, sounds: Sounds, t0: float) -> None:
        self.device, self.peer, self.sounds, self.t0 = device, peer, sounds, t0
        self.n = 0

    async def answered(self, since_wall: float, result: StepResult, *, chat: bool = False) -> bool:
        """A user turn (or a chat message) since ``since_wall``, then the reply; its latency noted."""
        first = (lambda ev: ev["msg"].startswith("lk.chat from ")) if chat else is_user_turn
        heard = await self.device.wait(first, since_wall, ANSWER_TIMEOUT_S)
        if heard is None:
            result.note += "not heard; "
            return False
        reply = await self.device.wait(is_reply, heard["wall"], ANSWER_TIMEOUT_S)
        if reply is None:
            result.note += f"heard {heard['msg']!r}, no reply; "
            return False
        metrics = await self.device.wait(lambda ev: ev["msg"].startswith("turn metrics"), reply["wall"], 2.0)
        if metrics is not None and "E2E_LATENCY_MS" in metrics["fields"] and not chat:
            result.latency_ms.append(float(metrics["fields"]["E2E_LATENCY_MS"]))
        return True

    async def step(self) -> StepResult:
        kind = CYCLE[self.n % len(CYCLE)]
        i = self.n // len(CYCLE) * 2 + self.n  # a different question each time round
        self.n += 1
        result = StepResult(kind, "", time.monotonic() - self.t0)
        await getattr(self, "_" + kind.replace("-", "_"))(i, result)
        if not await self.peer.settled(SETTLED_S, ANSWER_TIMEOUT_S):
            result.note += f"the agent was not listening and quiet for {SETTLED_S:g} s within {ANSWER_TIMEOUT_S:g} s; "
        self.peer.clear()
        return result

    async def _ask_local(self, wav: tuple[str, Path], result: StepResult) -> None:
        result.text, result.questions = wav[0], 1
        wall = time.time()
        await play(wav[1])
        result.answered += await self.answered(wall, result)

    async def _wake(self, i: int, result: StepResult) -> None:
        await self._ask_local(self.sounds.wake[i % len(self.sounds.wake)], result)

    async def _follow_up(self, i: int, result: StepResult) -> None:
        await self._ask_local(self.sounds.follow[i % len(self.sounds.follow)], result)

    async def _room(self, i: int, result: StepResult) -> None:
        text, audio = self.sounds.room[i % len(self.sounds.room)]
        result.text, result.questions = text, 1
        wall = time.time()
        ended = await self.peer.say(audio)
        got = await self.peer.first_loud(ended, ANSWER_TIMEOUT_S)
        if got is not None:
            result.room_e2e_ms = 1000 * (got - ended)
        result.answered += await self.answered(wall, result)

    async def _barge_in(self, i: int, result: StepResult) -> None:
        (t1, w1), (t2, w2) = (self.sounds.follow[(i + k) % len(self.sounds.follow)] for k in (0, 1))
        result.text, result.questions = f"{t1} / {t2}", 2
        wall1 = time.time()
        ended = await play(w1)
        began = await self.peer.first_loud(ended, ANSWER_TIMEOUT_S)
        q1 = await self.device.wait(is_user_turn, wall1, 5.0)
        if began is None or q1 is None:
            result.note += "the first question was not answered; "
            await self.answered(wall1, result)
            return
        result.answered += 1  # its reply began; the second question cuts it short
        await asyncio.sleep(max(0.0, began + BARGE_AFTER_S - time.monotonic()))
        wall2 = time.time()
        await play(w2)
        result.answered += await self.answered(wall2, result)
        cut = await self.device.wait(lambda ev: ev["msg"].startswith("agent: ") and ev["msg"].endswith("(interrupted)"),
                                     wall1, 0.1)
        result.note += "" if cut is not None else "the first reply ended before the barge-in; "

    async def _chat(self, i: int, result: StepResult) -> None:
        result.text, result.questions = QUESTIONS[(i + 5) % len(QUESTIONS)], 1
        wall = time.time()
        await self.peer.chat(result.text)
        result.answered += await self.answered(wall, result, chat=True)

    async def _silence(self, i: int, result: StepResult) -> None:
        wall = time.time()
        await asyncio.sleep(SILENCE_S)
        result.extra_turns = sum(1 for ev in self.device.events if ev["wall"] >= wall and is_user_turn(ev))

    async def _noise(self, i: int, result: StepResult) -> None:
        wall = time.time()
        await play(self.sounds.noise)
        await asyncio.sleep(2.0)  # a turn the noise opened is decided by then
        result.extra_turns = sum(1 for ev in self.device.events if ev["wall"] >= wall and is_user_turn(ev))


@dataclass
class ControlTally:
    gets: int = 0
    sets: int = 0
    errors: list[str] = field(default_factory=list)


async def control_loop(url: str, token: str, device: str, gate: asyncio.Lock, tally: ControlTally) -> None:
    """``get``, then ``set audio.output_volume`` (0.9 and 1.0 in turn), every :data:`CONTROL_EVERY_S`,
    until cancelled; a call that fails is noted in ``tally``, and the loop goes on."""
    from edgeagent.room.config_client import Controller, ControllerError

    async with Controller(url, token, device) as ctl:
        n = 0
        while True:
            await asyncio.sleep(CONTROL_EVERY_S)
            async with gate:
                try:
                    if n % 2 == 0:
                        await ctl.get()
                        tally.gets += 1
                    else:
                        await ctl.set({"audio": {"output_volume": 0.9 if n % 4 == 1 else 1.0}})
                        tally.sets += 1
                except ControllerError as exc:
                    tally.errors.append(str(exc))
                    log.warning("soak controller: %s", exc)
            n += 1
