"""Voice-to-voice benchmark (issue 4): spoken questions through the whole session, timed at the speaker.

Questions spoken by espeak-ng (each after the wake word) go into a :class:`ScriptedMic`
in real time; the agent's replies come out of a :class:`TimedSpeaker`. Per turn the
end-to-end latency runs from the true end of the question (its last non-silent sample)
to the first reply sample handed to the speaker; its breakdown comes from the session's
:class:`~edgeagent.voice.events.TurnMetrics`, moved from the VAD's end of speech to the
true one. The same models then answer the same questions one step after the other
(the sequential baseline). ``scripts/bench`` runs :func:`measure` and prints the report.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent.bench import p90
from edgeagent.bench.scripted import Question, ScriptedMic, Spoken, TimedSpeaker, make_questions
from edgeagent.config_voice import AgentConfig
from edgeagent.errors import EdgeAgentError
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice.listen import speech_end
from edgeagent.voice.stages import Models, new_context

if TYPE_CHECKING:
    from edgeagent.voice.events import AgentState, TurnMetrics
    from edgeagent.voice.session import AgentSession

# Issue 4 targets on a 2-core x86 machine with the default models: figure -> (limit, higher is better)
TARGETS: dict[str, tuple[float, bool]] = {
    "e2e_p50_ms": (700.0, False),
    "e2e_p90_ms": (1000.0, False),
    "speedup_vs_sequential": (2.0, True),
    "idle_cpu_pct": (15.0, False),
    "peak_rss_mb": (1024.0, False),
    "answered_fraction": (1.0, True),
}
#: Milestones of a turn, in order; each bar segment ends at one (ms after the true end of speech).
STEPS = {
    "vad": "VAD end of speech (session: where it put it)",
    "stt": "transcript",
    "turn": "end of turn decided",
    "llm": "LLM first token (baseline: whole reply)",
    "tts": "TTS first audio (baseline: all audio)",
    "out": "first sample at the speaker",
}
PAUSE_S = 1.0
"""Room noise between a reply and the next question."""
QUIET_S = 0.3
"""The speaker counts as done after this long without sound."""
REPLY_TIMEOUT_S = 20.0
"""From the end of a question: no first reply sample by then = not answered."""
REPLY_PLAY_S = 10.0
"""A reply still playing this long after its first sample is cut off (SmolLM2 sometimes rambles)."""

log = logging.getLogger(__name__)


@dataclass
class Turn:
    question: str
    heard: str = ""
    reply: str = ""
    e2e_ms: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    """Milestone -> ms after the true end of speech."""
    raw: dict[str, Any] = field(default_factory=dict)
    """The session's own TurnMetrics (times from the VAD's end of speech)."""
    cut_off: bool = False
    """The reply was still playing after :data:`REPLY_PLAY_S` and was stopped."""

    def segments(self) -> dict[str, float]:
        """Bar segments (ms): each milestone minus the latest one before it; they add up to e2e."""
        if self.e2e_ms is None:
            return {}
        out, prev = {}, 0.0
        for step in STEPS:
            mark = self.e2e_ms if step == "out" else self.marks.get(step)
            if mark is not None:
                at = min(max(prev, mark), self.e2e_ms)
                out[step], prev = at - prev, at
        return out


def summary(turns: Sequence[Turn]) -> dict[str, Any]:
    e2e = [t.e2e_ms for t in turns if t.e2e_ms is not None]
    return {
        "p50_ms": statistics.median(e2e) if e2e else None,
        "p90_ms": p90(e2e) if e2e else None,
        "answered": len(e2e),
        "turns": [asdict(t) for t in turns],
    }


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

async def run_session(models: Models, questions: Sequence[Question], *, idle_s: float,
                      record: Path, first_dbfs: float | None = None) -> tuple[list[Turn], float]:
    """Every question through an AgentSession; returns (turns, idle CPU % of one core).

    A reply starts at its first non-zero sample at the speaker, or with ``first_dbfs`` at
    its first 10 ms louder than that (as a path through a codec must time it).
    """
    from edgeagent.config_voice import ActivationConfig
    from edgeagent.voice import Agent, AgentSession
    from edgeagent.voice.events import AgentState

    mic, speaker = ScriptedMic(seed=1), TimedSpeaker(record, first_dbfs=first_dbfs)
    await speaker.start()
    # No follow-up window: every question needs the wake word, as the benchmark says.
    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
                           audio_turn=models.audio_turn, echo_cancellation=False,
                           activation=ActivationConfig(follow_up_s=0.0))
    state, metrics, replies = watch(session)
    turns: list[Turn] = []
    try:
        await asyncio.wait_for(session.start(Agent(instructions=AgentConfig().instructions),
                                             input=mic, output=speaker), 60)
        if not await wait_until(lambda: state[0] is AgentState.IDLE, 60):
            raise EdgeAgentError(f"the session did not become idle (state {state[0].value})")
        await asyncio.sleep(1.0)
        idle = await idle_cpu_pct(idle_s)
        for i, q in enumerate(questions):
            await _between_turns(mic, speaker, lambda: state[0] is AgentState.IDLE)
            session.history.messages.clear()  # every question on its own, as in the baseline
            seen, said = len(metrics), len(replies)
            speaker.arm()
            spoken = mic.speak(q.audio)
            turn = Turn(q.text)
            if await wait_until(lambda: speaker.first_sample is not None, spoken.done - time.monotonic()
                                + REPLY_TIMEOUT_S):
                assert speaker.first_sample is not None
                turn.e2e_ms = 1000 * (speaker.first_sample - spoken.end)

            def over(seen: int = seen) -> bool:
                return len(metrics) > seen and state[0] is not AgentState.SPEAKING and speaker.quiet_for() > QUIET_S

            if not await wait_until(over, REPLY_PLAY_S):
                turn.cut_off = True
                session.interrupt()
                await wait_until(over, 30.0)
            _fill_from_metrics(turn, metrics[seen:])
            turn.reply = " ".join(replies[said:])
            turns.append(turn)
            log.info("session %d/%d: %s", i + 1, len(questions), turn)
    finally:
        await asyncio.wait_for(session.aclose(), 30)
        await mic.aclose()
        await speaker.aclose()
    return turns, idle


def _fill_from_metrics(turn: Turn, found: Sequence[Any]) -> None:
    """The breakdown from the session's TurnMetrics, moved to the true end of speech.

    The session counts from the VAD's end of speech and its ``e2e_latency`` ends at the
    same first sample we time, so their difference is where the VAD put the end.
    """
    timed = [m for m in found if m.e2e_latency is not None]
    if not found:
        return
    m = (timed or list(found))[-1]
    turn.heard = m.transcript
    turn.raw = {k: v for k, v in asdict(m).items() if isinstance(v, float | bool | str) or v is None}
    shift = 0.0
    if turn.e2e_ms is not None and m.e2e_latency is not None:
        shift = turn.e2e_ms / 1000 - m.e2e_latency
        turn.marks["vad"] = 1000 * shift
    for step, name in (("stt", "transcription_delay"), ("turn", "end_of_utterance_delay"),
                       ("llm", "llm_ttft_after_speech"), ("tts", "tts_ttfa_after_speech")):
        value = getattr(m, name)
        if value is not None:
            turn.marks[step] = 1000 * (shift + value)


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
        ev, t = await asyncio.wait_for(ends.get(), max(0.0, deadline - time.monotonic()))
        if speech_end(ev) > spoken.start:
            return ev, t


async def _sequential_reply(models: Models, ctx: Any, ev: VADEvent, turn: Turn, speaker: TimedSpeaker,
                            spoken: Spoken, t_vad: float) -> None:
    def mark(step: str) -> None:
        turn.marks[step] = 1000 * (time.monotonic() - spoken.end)

    turn.marks["vad"] = 1000 * (t_vad - spoken.end)
    result = await asyncio.wait_for(models.stt.recognize(ev.frames[0]), 30)
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
    audio = await asyncio.wait_for(models.tts.synthesize(turn.reply or "Sorry."), 60)
    mark("tts")
    speaker.arm()
    try:
        await asyncio.wait_for(speaker.write(audio), REPLY_PLAY_S)
        await asyncio.wait_for(speaker.drain(), REPLY_PLAY_S)
    except asyncio.TimeoutError:
        turn.cut_off = True
        speaker.clear()
    if speaker.first_sample is not None:
        turn.e2e_ms = 1000 * (speaker.first_sample - spoken.end)


# -- the report ---------------------------------------------------------------------------------


def figures(session: Sequence[Turn] | None, baseline: Sequence[Turn] | None, *, idle_cpu: float | None,
            rss_mb: float, n: int) -> dict[str, Any]:
    """Every number of the run, each target with its limit and verdict, and what was missed."""
    out: dict[str, Any] = {"questions": n, "peak_rss_mb": rss_mb}
    if idle_cpu is not None:
        out["idle_cpu_pct"] = idle_cpu
    if session is not None:
        out["session"] = summary(session)
        s = out["session"]
        out.update(e2e_p50_ms=s["p50_ms"], e2e_p90_ms=s["p90_ms"], answered_fraction=s["answered"] / n)
    if baseline is not None:
        out["baseline"] = summary(baseline)
    if session is not None and baseline is not None:
        a, b = out["session"]["p50_ms"], out["baseline"]["p50_ms"]
        out["speedup_vs_sequential"] = b / a if a and b else None
    targets, missed = {}, []
    for name, (limit, higher) in TARGETS.items():
        if name not in out:
            continue  # not measured in this run (no session or no baseline)
        value = out[name]
        ok = value is not None and (value >= limit if higher else value <= limit)
        targets[name] = {"limit": limit, "value": value, "ok": ok, "higher_is_better": higher}
        if not ok:
            missed.append(name)
    out["targets"], out["missed"] = targets, missed
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(fig: dict[str, Any]) -> str:
    """Per question: heard, e2e and milestones (ms after the true end) of both modes; then p50/p90."""
    modes = [m for m in ("session", "baseline") if m in fig]
    cols = {"session": ("stt", "turn", "llm", "tts"), "baseline": ("vad", "stt", "llm", "tts")}
    head = f"{'#':>2} {'question':36} {'heard':36}"
    for m in modes:
        head += f" | {m + ' e2e':>12} " + " ".join(f"{c:>5}" for c in cols[m])
    lines = [head, "-" * len(head)]
    rows = zip(*(fig[m]["turns"] for m in modes), strict=True)
    for i, row in enumerate(rows):
        first = row[0]
        line = f"{i + 1:>2} {first['question'][:36]:36} {first['heard'][:36]:36}"
        for m, t in zip(modes, row, strict=True):
            line += f" | {_ms(t['e2e_ms']):>12} " + " ".join(f"{_ms(t['marks'].get(c)):>5}" for c in cols[m])
        lines.append(line)
    for stat in ("p50_ms", "p90_ms"):
        line = f"{'':2} {stat[:3] + ' (ms after the true end of speech)':73}"
        for m in modes:
            line += f" | {_ms(fig[m][stat]):>12} " + " ".join(f"{'':>5}" for _ in cols[m])
        lines.append(line)
    return "\n".join(lines)


def verdicts(fig: dict[str, Any]) -> str:
    lines = []
    for name, t in fig["targets"].items():
        value = "missing" if t["value"] is None else f"{t['value']:.2f}"
        sign = ">=" if t["higher_is_better"] else "<="
        lines.append(f"{name:24} {value:>10}  target {sign} {t['limit']:g}  {'ok' if t['ok'] else 'MISSED'}")
    return "\n".join(lines)


def chart(fig: dict[str, Any], path: Path) -> Path:
    """Stacked bars per turn of the latency breakdown (one panel per mode), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("session", "baseline") if m in fig]
    colors = dict(zip(STEPS, ("#9e9e9e", "#4c72b0", "#8172b2", "#dd8452", "#55a868", "#c44e52"), strict=True))
    figure, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        turns = [Turn(**t) for t in fig[mode]["turns"]]
        xs = range(1, len(turns) + 1)
        bottoms = [0.0] * len(turns)
        for step, label in STEPS.items():
            heights = [t.segments().get(step, 0.0) for t in turns]
            if any(heights):
                ax.bar(xs, heights, bottom=bottoms, color=colors[step], label=label)
                bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        if mode == "session":
            for limit, style in ((TARGETS["e2e_p50_ms"][0], "--"), (TARGETS["e2e_p90_ms"][0], ":")):
                ax.axhline(limit, color="black", linestyle=style, linewidth=1)
        ax.set_title(f"{mode}: p50 {_ms(fig[mode]['p50_ms'])} ms, p90 {_ms(fig[mode]['p90_ms'])} ms")
        ax.set_xlabel("question")
        ax.set_xticks(list(xs))
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("ms after the true end of speech")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# -- the run ----------------------------------------------------------------------------------


async def measure(questions: int, workdir: Path, *, session: bool = True, baseline: bool = True,
                  idle_s: float = 10.0) -> dict[str, Any]:
    """Speak ``questions`` questions to the session and/or the baseline; every figure of :func:`figures`.

    What the agent said is recorded in ``workdir`` (session.wav, baseline.wav).
    """
    spoken = make_questions(questions)
    models = await Models.load()
    try:
        in_session = idle = in_baseline = rss = None
        if session:
            in_session, idle = await run_session(models, spoken, idle_s=idle_s, record=workdir / "session.wav")
            rss = peak_rss_mb()  # the agent's own peak: the baseline's comes after
        if baseline:
            in_baseline = await run_baseline(models, spoken, record=workdir / "baseline.wav")
    finally:
        await models.aclose()
    fig = figures(in_session, in_baseline, idle_cpu=idle, rss_mb=rss or peak_rss_mb(), n=len(spoken))
    fig["peak_rss_whole_run_mb"] = peak_rss_mb()
    return fig
