"""Voice-to-voice benchmark: spoken questions through the whole session, timed at the speaker.

Questions spoken by espeak-ng (each after the wake word) go into a :class:`ScriptedMic`
in real time; the agent's replies come out of a :class:`TimedSpeaker`. Per turn the
end-to-end latency runs from the true end of the question (its last non-silent sample)
to the first reply sample handed to the speaker; its breakdown comes from the session's
:class:`~edgeagent.voice.events.TurnMetrics`, moved from the VAD's end of speech to the
true one. After them, questions said with a pause after an unfinished fragment
(:mod:`edgeagent.bench.pauses`): did the session take each as one turn, or cut it off?
Optionally the same questions again with a :class:`~edgeagent.bench.hog.CpuHog` on every
core. The same models then answer the same questions one step after the other (the
sequential baseline). ``scripts/bench`` runs :func:`measure` and prints the report
(:mod:`edgeagent.bench.report`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.hog import CpuHog
from edgeagent.bench.report import PausedTurn, Turn, figures, fill_from_metrics, one_turn_verdict, preempted
from edgeagent.bench.scripted import (
    WAKE_PAUSE_S,
    WAKE_PHRASE,
    Question,
    ScriptedMic,
    Spoken,
    TimedSpeaker,
    espeak,
    make_questions,
    trim,
)
from edgeagent.config.voice import AgentConfig
from edgeagent.errors import EdgeAgentError
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice.audio_history import speech_end
from edgeagent.voice.stages import Models, new_context

if TYPE_CHECKING:
    from edgeagent.bench.pauses import PausedQuestion
    from edgeagent.voice.events import AgentState, TurnMetrics
    from edgeagent.voice.session import AgentSession

PAUSE_S = 1.0
"""Room noise between a reply and the next question."""
QUIET_S = 0.3
"""The speaker counts as done after this long without sound."""
REPLY_TIMEOUT_S = 20.0
"""From the end of a question: no first reply sample by then = not answered."""
REPLY_PLAY_S = 10.0
"""A reply still playing this long after its first sample is cut off (SmolLM2 sometimes rambles)."""

log = logging.getLogger(__name__)


async def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def idle_cpu_pct(seconds: float) -> float:
    """CPU time of the whole process (every thread) over ``seconds`` of wall time, in % of one core."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100.0 * (time.process_time() - cpu0) / (time.monotonic() - wall0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


async def _between_turns(mic: ScriptedMic, speaker: TimedSpeaker, ready: Callable[[], bool]) -> None:
    await wait_until(lambda: ready() and not mic.busy and speaker.quiet_for() > QUIET_S, 60.0)
    await asyncio.sleep(PAUSE_S)


# -- the session -------------------------------------------------------------------------------


def watch(session: AgentSession) -> tuple[list[AgentState], list[TurnMetrics], list[str]]:
    """What a benchmark follows: [the current state], the turns' metrics, the replies' texts."""
    from edgeagent.voice.events import AgentState, TurnMetrics

    state = [AgentState.INITIALIZING]
    metrics: list[TurnMetrics] = []
    replies: list[str] = []
    session.on("agent_state_changed", lambda ev: state.__setitem__(0, ev.new_state))
    session.on("metrics_collected",
               lambda ev: metrics.append(ev.metrics) if isinstance(ev.metrics, TurnMetrics) else None)
    session.on("conversation_item_added",
               lambda ev: replies.append(ev.item.content) if ev.item.role == "assistant" else None)
    return state, metrics, replies


@dataclass
class Rig:
    """A running session with its scripted mic and timed speaker, and what it told so far."""

    session: AgentSession
    mic: ScriptedMic
    speaker: TimedSpeaker
    state: list[AgentState]
    metrics: list[TurnMetrics]
    replies: list[str]
    commits: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, transcript) of each committed user turn (a final ``user_input_transcribed``)."""

    def __post_init__(self) -> None:
        self.session.on("user_input_transcribed", lambda ev: self.commits.append((time.monotonic(), ev.transcript))
                        if ev.is_final else None)

    def idle(self) -> bool:
        return self.state[0].value == "idle"


@dataclass
class Asked:
    """One question put to the session and what came of it."""

    spoken: Spoken
    first_sample: float | None
    cut_off: bool
    """The reply was still playing after :data:`REPLY_PLAY_S` and was stopped."""
    metrics: list[TurnMetrics]
    replies: list[str]
    commits: list[tuple[float, str]]


async def ask(rig: Rig, audio: AudioFrame) -> Asked:
    """Say ``audio`` (wake word and question) after the previous reply; wait for the answer to end."""
    await _between_turns(rig.mic, rig.speaker, rig.idle)
    rig.session.history.messages.clear()  # every question on its own, as in the baseline
    seen, said, committed = len(rig.metrics), len(rig.replies), len(rig.commits)
    rig.speaker.arm()
    spoken = rig.mic.speak(audio)
    speaker = rig.speaker
    await wait_until(lambda: speaker.first_sample is not None, spoken.done - time.monotonic() + REPLY_TIMEOUT_S)
    first = speaker.first_sample

    def over() -> bool:
        return (len(rig.metrics) > seen and rig.state[0].value != "speaking" and not rig.mic.busy
                and speaker.quiet_for() > QUIET_S)

    cut_off = not await wait_until(over, REPLY_PLAY_S)
    if cut_off:
        rig.session.interrupt()
        await wait_until(over, 30.0)
    # A question cut in two may bring a second turn: let it finish before counting.
    await wait_until(lambda: rig.idle() and not rig.mic.busy and speaker.quiet_for() > QUIET_S, 30.0)
    return Asked(spoken, first, cut_off, rig.metrics[seen:], rig.replies[said:], rig.commits[committed:])


@dataclass
class Heard:
    turns: list[Turn]
    idle_cpu: float | None
    paused: list[PausedTurn]


async def run_session(models: Models, questions: Sequence[Question], *, idle_s: float,
                      record: Path, first_dbfs: float | None = None) -> tuple[list[Turn], float]:
    """Every question through an AgentSession; returns (turns, idle CPU % of one core)."""
    heard = await run_voice(models, questions, idle_s=idle_s, record=record, first_dbfs=first_dbfs)
    assert heard.idle_cpu is not None
    return heard.turns, heard.idle_cpu


async def run_voice(models: Models, questions: Sequence[Question], paused: Sequence[PausedQuestion] = (), *,
                    idle_s: float, record: Path, first_dbfs: float | None = None) -> Heard:
    """Every question, then every paused one, through an AgentSession; first the idle CPU over
    ``idle_s`` (none when 0).

    A reply starts at its first non-zero sample at the speaker, or with ``first_dbfs`` at
    its first 10 ms louder than that (as a path through a codec must time it).
    """
    from edgeagent.config import Config
    from edgeagent.voice import Agent
    from edgeagent.voice.compose import session_for
    from edgeagent.voice.events import AgentState

    mic, speaker = ScriptedMic(seed=1), TimedSpeaker(record, first_dbfs=first_dbfs)
    await speaker.start()
    # No follow-up window: every question needs the wake word, as the benchmark says.
    # The scripted mic stands for a sound card without echo cancellation: the mic is ignored
    # while the agent speaks (``echo_path``).
    cfg = Config()
    cfg = dataclasses.replace(cfg, activation=dataclasses.replace(cfg.activation, follow_up_s=0.0),
                              audio=dataclasses.replace(cfg.audio, echo_cancellation=False, noise_suppression=False))
    session = session_for(models, cfg, echo_path=True)
    rig = Rig(session, mic, speaker, *watch(session))
    heard = Heard([], None, [])
    try:
        await wait_for(session.start(Agent(instructions=AgentConfig().instructions),
                                             input=mic, output=speaker), 60)
        if not await wait_until(lambda: rig.state[0] is AgentState.IDLE, 60):
            raise EdgeAgentError(f"the session did not become idle (state {rig.state[0].value})")
        await asyncio.sleep(1.0)
        if idle_s > 0:
            heard.idle_cpu = await idle_cpu_pct(idle_s)
        for i, q in enumerate(questions):
            asked = await ask(rig, q.audio)
            heard.turns.append(_turn(q.text, asked))
            log.info("session %d/%d: %s", i + 1, len(questions), heard.turns[-1])
        if paused:
            heard.paused = await _ask_paused(rig, paused)
    finally:
        await wait_for(session.aclose(), 30)
        await mic.aclose()
        await speaker.aclose()
    return heard


async def _ask_paused(rig: Rig, paused: Sequence[PausedQuestion]) -> list[PausedTurn]:
    """Each question with a pause, after the wake word; the words after the pause begin (capture
    time) ``fragment_end_s + pause_s`` into its audio (the fragment and the rest are trimmed)."""
    wake = AudioFrame.concat([trim(espeak(WAKE_PHRASE)), AudioFrame.silence(WAKE_PAUSE_S, RECOGNITION_RATE)])
    out = []
    for i, pq in enumerate(paused):
        asked = await ask(rig, AudioFrame.concat([wake, pq.audio]))
        rest_at = asked.spoken.start + wake.duration + pq.fragment_end_s + pq.pause_s
        out.append(_paused_turn(pq, asked, rest_at))
        log.info("paused %d/%d: %s", i + 1, len(paused), out[-1])
    return out


def _turn(question: str, asked: Asked) -> Turn:
    turn = Turn(question, cut_off=asked.cut_off)
    if asked.first_sample is not None:
        turn.e2e_ms = 1000 * (asked.first_sample - asked.spoken.end)
    fill_from_metrics(turn, asked.metrics)
    turn.reply = " ".join(asked.replies)
    return turn


def _paused_turn(pq: PausedQuestion, asked: Asked, rest_at: float) -> PausedTurn:
    """How the session took a question with a pause: :func:`one_turn_verdict` of its commits."""
    times = [t for t, _ in asked.commits]
    out = PausedTurn(pq.text, pq.fragment, pq.voice, pq.pause_s, verdict=one_turn_verdict(times, rest_at),
                     heard=[text for _, text in asked.commits], commit_ms=[1000 * (t - rest_at) for t in times],
                     reply=" ".join(asked.replies))
    if asked.first_sample is not None:
        out.reply_ms = 1000 * (asked.first_sample - asked.spoken.end)
    out.preempt_hit, out.preempt_misses = preempted(asked.metrics)
    return out


# -- the sequential baseline ---------------------------------------------------------------------


async def run_baseline(models: Models, questions: Sequence[Question], *, record: Path) -> list[Turn]:
    """Each question (without the wake word): VAD end of speech, then the whole transcript,
    then the whole LLM reply, then all its audio, then the speaker."""
    mic, speaker = ScriptedMic(seed=2), TimedSpeaker(record)
    await speaker.start()
    vad = models.vad.stream()
    ends: asyncio.Queue[tuple[VADEvent, float]] = asyncio.Queue()

    async def pump() -> None:
        async for frame in mic:
            vad.push(frame)

    async def listen() -> None:
        async for ev in vad:
            if ev.type is VADEventType.END_OF_SPEECH:
                ends.put_nowait((ev, time.monotonic()))

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(listen())]
    turns: list[Turn] = []
    try:
        for i, q in enumerate(questions):
            await _between_turns(mic, speaker, lambda: True)
            while not ends.empty():
                ends.get_nowait()
            spoken = mic.speak(q.question_audio)
            turn = Turn(q.text)
            turns.append(turn)
            try:
                ev, t_vad = await _end_of(spoken, ends)
            except asyncio.TimeoutError:
                continue
            ctx = new_context(AgentConfig().instructions)  # every question on its own
            await _sequential_reply(models, ctx, ev, turn, speaker, spoken, t_vad)
            log.info("baseline %d/%d: %s", i + 1, len(questions), turn)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await vad.aclose()
        await mic.aclose()
        await speaker.aclose()
    return turns


async def _end_of(spoken: Spoken, ends: asyncio.Queue[tuple[VADEvent, float]]) -> tuple[VADEvent, float]:
    """The VAD's END_OF_SPEECH of the question ``spoken`` (not of an earlier noise)."""
    deadline = spoken.done + REPLY_TIMEOUT_S
    while True:
        ev, t = await wait_for(ends.get(), max(0.0, deadline - time.monotonic()))
        if speech_end(ev) > spoken.start:
            return ev, t


async def _sequential_reply(models: Models, ctx: Any, ev: VADEvent, turn: Turn, speaker: TimedSpeaker,
                            spoken: Spoken, t_vad: float) -> None:
    def mark(step: str) -> None:
        turn.marks[step] = 1000 * (time.monotonic() - spoken.end)

    turn.marks["vad"] = 1000 * (t_vad - spoken.end)
    result = await wait_for(models.stt.recognize(ev.frames[0]), 30)
    turn.heard = result.text.strip()
    mark("stt")
    ctx.add("user", turn.heard)
    stream = models.llm.chat(ctx)  # the stage's max_tokens ([llm].max_tokens), as in the session
    try:
        turn.reply = "".join([c.text async for c in stream]).strip()
    finally:
        await stream.aclose()
    ctx.add("assistant", turn.reply)
    mark("llm")
    audio = await wait_for(models.tts.synthesize(turn.reply or "Sorry."), 60)
    mark("tts")
    speaker.arm()
    try:
        await wait_for(speaker.write(audio), REPLY_PLAY_S)
        await wait_for(speaker.drain(), REPLY_PLAY_S)
    except asyncio.TimeoutError:
        turn.cut_off = True
        speaker.clear()
    if speaker.first_sample is not None:
        turn.e2e_ms = 1000 * (speaker.first_sample - spoken.end)


# -- the run ----------------------------------------------------------------------------------


async def measure(questions: int, workdir: Path, *, session: bool = True, baseline: bool = True,
                  idle_s: float = 10.0, pauses: int = 0, hog: bool = False) -> dict[str, Any]:
    """Speak ``questions`` questions to the session (then ``pauses`` questions with a pause after
    a fragment; then, with ``hog``, the questions again with a :class:`CpuHog` on every core)
    and/or the baseline; every figure of :func:`~edgeagent.bench.report.figures`, and what ran.

    What the agent said is recorded in ``workdir`` (session.wav, hog.wav, baseline.wav).
    """
    from edgeagent.bench.pauses import make_paused

    spoken = make_questions(questions)
    paused = make_paused(pauses) if session and pauses else []
    ran: list[str] = []
    models = await Models.load()
    try:
        quiet = under_hog = in_baseline = None
        rss = None
        if session:
            quiet = await run_voice(models, spoken, paused, idle_s=idle_s, record=workdir / "session.wav")
            rss = peak_rss_mb()  # the agent's own peak: the baseline's comes after
            ran.append(f"session: {len(spoken)} questions after the wake word"
                       + (f", then {len(paused)} with a pause after a fragment" if paused else "")
                       + f"; idle CPU over {idle_s:g} s before them")
        if session and hog:
            with CpuHog() as cpu_hog:
                under_hog = await run_voice(models, spoken, idle_s=0, record=workdir / "hog.wav")
            ran.append(f"session under a CPU hog: the same {len(spoken)} questions, {cpu_hog.describe()}")
        if baseline:
            in_baseline = await run_baseline(models, spoken, record=workdir / "baseline.wav")
            ran.append(f"sequential baseline: the same {len(spoken)} questions (no wake word)")
    finally:
        await models.aclose()
    fig = figures(None if quiet is None else quiet.turns, in_baseline,
                  idle_cpu=None if quiet is None else quiet.idle_cpu, rss_mb=rss or peak_rss_mb(), n=len(spoken),
                  paused=None if quiet is None else quiet.paused, hog=None if under_hog is None else under_hog.turns)
    fig["peak_rss_whole_run_mb"] = peak_rss_mb()
    fig["ran"] = ran
    return fig
