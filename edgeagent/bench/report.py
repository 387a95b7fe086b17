"""The voice benchmark's report: per-turn records, the figures and their targets, the table, the chart.

:func:`figures` gathers every number of a ``scripts/bench`` run (the session, the paused
questions, the session under a CPU hog, the sequential baseline) with each target's
limit and verdict; :func:`table`, :func:`pause_table` and :func:`verdicts` print them
and :func:`chart` draws the latency breakdown. All of it is pure: it works on the
records that :mod:`edgeagent.bench.voice` collects, or on their JSON.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.bench import p90

# Issue 16 targets on a 2-core x86 machine with the default models: figure -> (limit, higher is better)
TARGETS: dict[str, tuple[float, bool]] = {
    "e2e_p50_ms": (450.0, False),
    "e2e_p90_ms": (700.0, False),
    "speedup_vs_sequential": (3.0, True),
    "idle_cpu_pct": (15.0, False),
    "peak_rss_mb": (1024.0, False),
    "answered_fraction": (1.0, True),
    "pause_one_turn": (11.0, True),
    "hog_p90_ratio": (1.5, False),
}
PAUSE_SET = 12
"""``pause_one_turn``'s limit is for this many paused questions; a smaller set needs the same share."""
#: Milestones of a turn, in order; each bar segment ends at one (ms after the true end of speech).
STEPS = {
    "vad": "VAD end of speech (session: where it put it)",
    "stt": "transcript",
    "turn": "end of turn decided",
    "llm": "LLM first token (baseline: whole reply)",
    "tts": "TTS first audio (baseline: all audio)",
    "out": "first sample at the speaker",
}
MODES = ("session", "hog", "baseline")
"""The runs of ordinary questions, in the order the table and chart show them."""
ONE_TURN, CUT_OFF, SPLIT, NO_TURN = "one turn", "cut off", "split", "no turn"


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
    """The reply was still playing after the bench's limit and was stopped."""
    preempt_hit: bool | None = None
    """The reply was generated while the end of turn was still pending, and kept (None: not reported)."""
    preempt_misses: int = 0
    """Preemptive replies dropped during this question (the user carried on, the transcript changed)."""

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


def one_turn_verdict(commits: Sequence[float], rest_at: float) -> str:
    """How the session took a question said with a pause: from the times of its committed user turns.

    :data:`ONE_TURN` when it committed exactly one turn and after ``rest_at`` (the capture
    time of the start of the words after the pause); :data:`CUT_OFF` when the first commit
    came before that (it answered the fragment); :data:`SPLIT` when several commits all came
    after; :data:`NO_TURN` when none.
    """
    if not commits:
        return NO_TURN
    if min(commits) < rest_at:
        return CUT_OFF
    return ONE_TURN if len(commits) == 1 else SPLIT


@dataclass
class PausedTurn:
    """A question said with a pause after an unfinished fragment, and how the session took it."""

    question: str
    fragment: str
    voice: str
    pause_s: float
    verdict: str = NO_TURN
    heard: list[str] = field(default_factory=list)
    """Each committed user turn's transcript, in order."""
    commit_ms: list[float] = field(default_factory=list)
    """When each was committed, ms after the start of the words after the pause (< 0: a cut-off)."""
    reply: str = ""
    reply_ms: float | None = None
    """The first reply sample, ms after the true end of the whole question (< 0: it answered the fragment)."""
    preempt_hit: bool | None = None
    preempt_misses: int = 0

    @property
    def one_turn(self) -> bool:
        return self.verdict == ONE_TURN


def summary(turns: Sequence[Turn]) -> dict[str, Any]:
    e2e = [t.e2e_ms for t in turns if t.e2e_ms is not None]
    return {
        "p50_ms": statistics.median(e2e) if e2e else None,
        "p90_ms": p90(e2e) if e2e else None,
        "answered": len(e2e),
        "turns": [asdict(t) for t in turns],
    }


def preempted(found: Sequence[Any]) -> tuple[bool | None, int]:
    """(whether the reply spoken was a kept preemptive one, preemptive replies dropped) over the
    turns' metrics; ``getattr``: sessions from before these fields report neither."""
    timed = [m for m in found if m.e2e_latency is not None] or list(found)
    hit = getattr(timed[-1], "preempt_hit", None) if timed else None
    return hit, sum(getattr(m, "preempt_misses", 0) or 0 for m in found)


def fill_from_metrics(turn: Turn, found: Sequence[Any]) -> None:
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
    turn.preempt_hit, turn.preempt_misses = preempted(found)
    shift = 0.0
    if turn.e2e_ms is not None and m.e2e_latency is not None:
        shift = turn.e2e_ms / 1000 - m.e2e_latency
        turn.marks["vad"] = 1000 * shift
    for step, name in (("stt", "transcription_delay"), ("turn", "end_of_utterance_delay"),
                       ("llm", "llm_ttft_after_speech"), ("tts", "tts_ttfa_after_speech")):
        value = getattr(m, name)
        if value is not None:
            turn.marks[step] = 1000 * (shift + value)


def pause_limit(n: int) -> float:
    """``pause_one_turn``'s limit for ``n`` paused questions (11 of 12, the same share of fewer)."""
    return float(math.ceil(TARGETS["pause_one_turn"][0] * n / PAUSE_SET - 1e-9))


def figures(session: Sequence[Turn] | None, baseline: Sequence[Turn] | None, *, idle_cpu: float | None,
            rss_mb: float, n: int, paused: Sequence[PausedTurn] | None = None,
            hog: Sequence[Turn] | None = None) -> dict[str, Any]:
    """Every number of the run, each target with its limit and verdict, and what was missed.

    A figure that was not measured (no baseline, no paused questions, no hog run) is absent
    and so is its target.
    """
    out: dict[str, Any] = {"questions": n, "peak_rss_mb": rss_mb}
    limits = {name: limit for name, (limit, _) in TARGETS.items()}
    if idle_cpu is not None:
        out["idle_cpu_pct"] = idle_cpu
    if session is not None:
        out["session"] = s = summary(session)
        out.update(e2e_p50_ms=s["p50_ms"], e2e_p90_ms=s["p90_ms"], answered_fraction=s["answered"] / n)
    if paused:
        out["paused"] = [asdict(p) for p in paused]
        out.update(pause_one_turn=sum(p.one_turn for p in paused), pause_questions=len(paused))
        limits["pause_one_turn"] = pause_limit(len(paused))
    if session is not None:
        heard: list[Turn | PausedTurn] = [*session, *(paused or ())]
        out["preempt_hits"] = sum(t.preempt_hit is True for t in heard)
        out["preempt_misses"] = sum(t.preempt_misses for t in heard)
    if hog is not None:
        out["hog"] = h = summary(hog)
        out.update(hog_p50_ms=h["p50_ms"], hog_p90_ms=h["p90_ms"])
        quiet = out.get("e2e_p90_ms")
        out["hog_p90_ratio"] = h["p90_ms"] / quiet if quiet and h["p90_ms"] is not None else None
    if baseline is not None:
        out["baseline"] = summary(baseline)
    if session is not None and baseline is not None:
        a, b = out["session"]["p50_ms"], out["baseline"]["p50_ms"]
        out["speedup_vs_sequential"] = b / a if a and b else None
    targets, missed = {}, []
    for name, (_, higher) in TARGETS.items():
        if name not in out:
            continue  # not measured in this run
        value, limit = out[name], limits[name]
        ok = value is not None and (value >= limit if higher else value <= limit)
        targets[name] = {"limit": limit, "value": value, "ok": ok, "higher_is_better": higher}
        if not ok:
            missed.append(name)
    out["targets"], out["missed"] = targets, missed
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _preempt(t: dict[str, Any]) -> str:
    """A turn's preemptive replies: P when the reply was one, then how many were dropped."""
    hit = {True: "P", False: "-", None: "?"}[t.get("preempt_hit")]
    return f"{hit}{t.get('preempt_misses') or ''}"


def table(fig: dict[str, Any]) -> str:
    """Per question: heard, e2e and milestones (ms after the true end) of each run; then p50/p90.

    The session's ``pre`` column: P = the reply was generated preemptively and kept,
    ``-`` = it was not, ``?`` = not reported; a number after it = preemptive replies dropped.
    """
    modes = [m for m in MODES if m in fig]
    live = ("stt", "turn", "llm", "tts", "pre")
    cols = {"session": live, "hog": live, "baseline": ("vad", "stt", "llm", "tts")}
    head = f"{'#':>2} {'question':36} {'heard':36}"
    for m in modes:
        head += f" | {m + ' e2e':>12} " + " ".join(f"{c:>5}" for c in cols[m])
    lines = [head, "-" * len(head)]
    rows = zip(*(fig[m]["turns"] for m in modes), strict=True)
    for i, row in enumerate(rows):
        first = row[0]
        line = f"{i + 1:>2} {first['question'][:36]:36} {first['heard'][:36]:36}"
        for m, t in zip(modes, row, strict=True):
            cells = [_preempt(t) if c == "pre" else _ms(t["marks"].get(c)) for c in cols[m]]
            line += f" | {_ms(t['e2e_ms']):>12} " + " ".join(f"{c:>5}" for c in cells)
        lines.append(line)
    for stat in ("p50_ms", "p90_ms"):
        line = f"{'':2} {stat[:3] + ' (ms after the true end of speech)':73}"
        for m in modes:
            line += f" | {_ms(fig[m][stat]):>12} " + " ".join(f"{'':>5}" for _ in cols[m])
        lines.append(line)
    if "preempt_hits" in fig:
        lines.append(f"preemptive replies (session, paused questions too): {fig['preempt_hits']} kept, "
                     f"{fig['preempt_misses']} dropped")
    return "\n".join(lines)


def pause_table(fig: dict[str, Any]) -> str:
    """Per paused question: voice, pause, each committed transcript with its time after the start
    of the words after the pause, the verdict and the reply."""
    if "paused" not in fig:
        return ""
    lines = [f"questions with a pause: {fig['pause_one_turn']} of {fig['pause_questions']} taken as one turn",
             f"{'#':>2} {'voice':5} {'pause':>5}  {'question':44} {'verdict':8}  heard (+ms after the rest began)"]
    for i, p in enumerate(fig["paused"]):
        said = "; ".join(f"{h!r} ({at:+.0f})" for h, at in zip(p["heard"], p["commit_ms"], strict=True)) or "-"
        question = f"{p['fragment']} … {p['question'][len(p['fragment']):].strip()}"
        lines.append(f"{i + 1:>2} {p['voice']:5} {p['pause_s']:>5.2f}  {question[:44]:44} {p['verdict']:8}  {said}")
        lines.append(f"{'':>2} {'':5} {'':>5}  reply ({_ms(p['reply_ms'])} ms after the end): {p['reply'][:90]}")
    return "\n".join(lines)


def verdicts(fig: dict[str, Any]) -> str:
    lines = []
    for name, t in fig["targets"].items():
        value = "missing" if t["value"] is None else f"{t['value']:.2f}"
        sign = ">=" if t["higher_is_better"] else "<="
        lines.append(f"{name:24} {value:>10}  target {sign} {t['limit']:g}  {'ok' if t['ok'] else 'MISSED'}")
    return "\n".join(lines)


def chart(fig: dict[str, Any], path: Path) -> Path:
    """Stacked bars per turn of the latency breakdown (one panel per run), as a PNG; a star over
    a bar marks a reply generated preemptively (before the end of turn was decided) and kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if m in fig]
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
        hits = [(x, top) for x, top, t in zip(xs, bottoms, turns, strict=True) if t.preempt_hit and top > 0]
        if hits:
            ax.scatter([x for x, _ in hits], [top for _, top in hits], marker="*", s=80, color="black",
                       zorder=3, label="preemptive reply, kept")
        if mode != "baseline":
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
