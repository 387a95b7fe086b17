"""The soak's pass/fail arithmetic (issue 18, item 2): pure functions of the samples and the turns.

A run of ``minutes`` minutes is judged on:

- **RSS**: the least-squares slope of RSS over the samples after the warm-up window must
  not exceed :data:`RSS_LIMIT_MB_PER_H` (5 MB/h, the 60-minute run's limit after its first
  10 minutes).
- **descriptors, threads, asyncio tasks**: must not grow at all: the least value of the
  last window may not be above the least value of the second half of the first. Samples
  are taken between turns, with no config call in flight, and the least value is the
  floor the process comes back to (a message or a reply still finishing adds a few tasks
  to one sample, never takes any away). The first half of the first window is the warm-up:
  thread pools start their threads on first use (a 3-minute run had 33 threads before the
  first question and 35 from then on).
- **latency**: the p50 per-turn latency of the last window may be at most
  :data:`P50_LIMIT_RATIO` (10 %) above the first window's, when each window holds at least
  :data:`FULL_WINDOW_TURNS` (30) timed turns, as 10 minutes do (about 70); a window with
  fewer widens the allowance by sqrt(30 / n) (:func:`p50_limit_ratio`, n: the smaller
  window's count), the way a median's sampling error grows. A 3-minute run has 2 to 6 timed
  turns in a third, and one turn's latency spreads from 0.55 s to 1.3 s (the end-of-turn
  detector waits longer after a fragment): run 2 of its final design had 653, 666, 981 and
  781 ms in its first third and 1279 and 564 ms in its last, p50 724 against 922 ms, +27 %,
  with nothing slower. With 2 turns the allowance is +39 %, with 6 +22 %: a 3-minute run
  catches a gross slowdown only; the 60-minute run holds the 10 % line.
- **answers**: every question asked was answered.

Windows. The issue's windows are the first and the last 10 minutes of a 60-minute run.
A shorter run scales them (:func:`windows_for`): each window is ``min(10 min, minutes / 3)``,
so a 3-minute run compares its first minute with its last, and its RSS slope is fitted
over its last two minutes. The RSS limit scales with the fitted span
(:func:`rss_limit_mb_per_h`): a short span extrapolates the noise of a few hundred KiB
to many MB per hour, so below 50 minutes of span the limit is the 60-minute run's
*absolute* budget, 5 MB/h x 50 min = 4.2 MB, spread over the shorter span (a 3-minute run:
4.2 MB over 2 minutes = 125 MB/h). A 3-minute run therefore catches gross leaks (a
model or a buffer per turn), not slow ones; only the long run holds the 5 MB/h line.

Warm-up. A run first goes through the spoken script
(:data:`edgeagent.bench.soak_drive.CYCLE`, about a minute a pass) until the device's history
is full and has begun to slide (:func:`warmup_cycles`: 64 messages at 12 a pass, 6 passes)
before its clock starts: its samples and turns get negative times and count in no window
(their questions must still be answered). Until then the device's state grows by design:
the history (:data:`edgeagent.voice.conversation.MAX_HISTORY`) and with it the LLM's prompt,
and the first prompt evaluated from half way through a slid history (see
:meth:`edgeagent.llm.llama_gen.Generator.fit`) is the first batch of several hundred
tokens. The RSS rises in steps with them and then stays flat. What the steps are, from
``EDGEAGENT_SOAK_DIAG=1`` runs (glibc's ``mallinfo2`` and ``/proc/self/smaps`` at each
sample): anonymous memory only (the mapped model files stay at 207 MB), with glibc's
bytes in use flat (220-227 MB) and no new mapping: pages of buffers allocated at start
touched for the first time by a larger input. Run 1 of the final design: 632 MB after the
first step, +62 MB at the first barge-in and chat, +14, +8 MB in passes 3 and 4, +33 MB at
the first evaluation after the slide (a 3.0 s turn, the one re-cut of the 32 messages
kept), then 757.6-760.3 MB for the whole measured 3 minutes (25 MB/h, limit 123). With no
warm-up, or one minute of it, steps fell in the measured window (605, 1034 and 253 MB/h);
with two passes one run stayed under its limit (62 MB/h), and an 8-minute run reached the
slide inside its window (523 MB/h), where each reply evaluated the whole history again,
~5 s a turn (fixed in ``llama_gen``). Threads:
every stage's thread now starts with the stage (:class:`edgeagent.stage.InferenceThread`);
the 35th thread of the earlier runs was the Smart Turn stage's, started at the first turn
whose words left a doubt. The 60-minute run warms up too (it did not until December 2026):
without it, its first 10 minutes held the history's filling, with short prompts, and its
p50 latency compared that state with the full history's (579 against 732 ms in one run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

RSS_LIMIT_MB_PER_H = 5.0
LONG_SPAN_MIN = 50.0
"""The span the RSS slope is fitted over in the 60-minute run (after its first 10 minutes)."""
WINDOW_MAX_S = 600.0
P50_LIMIT_RATIO = 1.10
FULL_WINDOW_TURNS = 30
MESSAGES_PER_CYCLE = 12
"""Messages a pass through the script adds to the device's history: a question and its reply at the
wake, follow-up, room and chat steps, two of each at the barge-in (the cut reply is kept)."""
COUNTS = ("fds", "threads", "tasks")


@dataclass(frozen=True)
class Sample:
    """One look at the device process, ``t_s`` seconds after the driving began."""

    t_s: float
    rss_mb: float
    fds: int
    threads: int
    tasks: int
    cpu_pct: float | None = None
    """CPU of the whole process (every thread) since the sample before, in % of one core."""


@dataclass(frozen=True)
class Windows:
    first_s: float
    """The first window (also the RSS warm-up): [0, first_s)."""
    last_s: float
    """The last window: [end - last_s, end]."""
    end_s: float


def windows_for(duration_s: float) -> Windows:
    """The first and last windows of a run of ``duration_s``: 10 minutes each, or a third of a
    run shorter than 30 minutes."""
    w = min(WINDOW_MAX_S, duration_s / 3.0)
    return Windows(w, w, duration_s)


def warmup_cycles(minutes: float) -> int:
    """Passes through the script before the clock starts, in a run of any length: until the
    device's history is full (:data:`edgeagent.voice.conversation.MAX_HISTORY` messages) and has
    begun to slide, 6 passes."""
    from edgeagent.voice.conversation import MAX_HISTORY

    del minutes  # every run: a first window that held the filling would compare two states
    return math.ceil(MAX_HISTORY / MESSAGES_PER_CYCLE)


def sample_interval_s(minutes: float) -> float:
    """30 s (the issue's), or 10 s for a run under 10 minutes (a 3-minute run gets 18 samples, not 6)."""
    return 30.0 if minutes >= 10 else 10.0


def rss_limit_mb_per_h(span_s: float) -> float:
    """5 MB/h over a span of 50 minutes or more; over a shorter span the same 4.2 MB in all."""
    span_min = span_s / 60.0
    if span_min <= 0:
        return float("inf")
    return RSS_LIMIT_MB_PER_H * max(1.0, LONG_SPAN_MIN / span_min)


def slope_per_h(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``(t_s, value)`` points, per hour (None: under 3 points or one time)."""
    if len(points) < 3:
        return None
    ts = [t for t, _ in points]
    mean_t = statistics.fmean(ts)
    mean_v = statistics.fmean(v for _, v in points)
    den = sum((t - mean_t) ** 2 for t in ts)
    if den == 0:
        return None
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 3600.0 * num / den


def growth(samples: Sequence[Sample], name: str, win: Windows) -> tuple[int | None, int | None]:
    """(least value in the second half of the first window, least value in the last window) of
    count ``name``."""
    first = [getattr(s, name) for s in samples if win.first_s / 2 <= s.t_s < win.first_s]
    last = [getattr(s, name) for s in samples if s.t_s >= win.end_s - win.last_s]
    return (min(first) if first else None, min(last) if last else None)


def p50_limit_ratio(n: int) -> float:
    """The largest last/first p50 ratio allowed when the smaller window holds ``n`` timed turns."""
    widen = math.sqrt(FULL_WINDOW_TURNS / n) if n > 0 else math.inf
    return 1.0 + (P50_LIMIT_RATIO - 1.0) * max(1.0, widen)


def p50_windows(latencies: Sequence[tuple[float, float]], win: Windows
                ) -> tuple[float | None, float | None, int]:
    """p50 of the ``(t_s, ms)`` turn latencies in the first and in the last window (a warm-up's
    negative times in neither), and how many turns the smaller of them holds."""
    first = [ms for t, ms in latencies if 0 <= t < win.first_s]
    last = [ms for t, ms in latencies if t >= win.end_s - win.last_s]
    return (statistics.median(first) if first else None, statistics.median(last) if last else None,
            min(len(first), len(last)))


def judge(samples: Sequence[Sample], latencies: Sequence[tuple[float, float]], asked: int, answered: int,
          duration_s: float) -> dict[str, Any]:
    """Every figure of the verdict and the list of what failed (``failed``; empty: it passed)."""
    win = windows_for(duration_s)
    failed: list[str] = []
    out: dict[str, Any] = {"duration_s": round(duration_s, 1), "window_s": round(win.first_s, 1)}
    fitted = [(s.t_s, s.rss_mb) for s in samples if s.t_s >= win.first_s]
    slope = slope_per_h(fitted)
    limit = rss_limit_mb_per_h(fitted[-1][0] - fitted[0][0] if len(fitted) > 1 else 0.0)
    out.update(rss_slope_mb_per_h=None if slope is None else round(slope, 2), rss_limit_mb_per_h=round(limit, 1),
               rss_points=len(fitted))
    if slope is None:
        failed.append(f"rss: {len(fitted)} samples after the first window, 3 needed for a slope")
    elif slope > limit:
        failed.append(f"rss: grows {slope:.1f} MB/h after the first window (limit {limit:.1f} MB/h)")
    for name in COUNTS:
        a, b = growth(samples, name, win)
        out[f"{name}_first"], out[f"{name}_last"] = a, b
        if a is None or b is None:
            failed.append(f"{name}: no sample in the first or the last window")
        elif b > a:
            failed.append(f"{name}: {a} -> {b} (the least value of the last window is above the first's)")
    p_first, p_last, n = p50_windows(latencies, win)
    ratio = p50_limit_ratio(n)
    out.update(p50_first_ms=_round(p_first), p50_last_ms=_round(p_last), turns_timed=len(latencies),
               p50_window_turns=n, p50_limit_ratio=round(ratio, 3) if n else None)
    if p_first is None or p_last is None:
        failed.append("latency: no timed turn in the first or the last window")
    elif p_last > ratio * p_first:
        failed.append(f"latency: p50 {p_last:.0f} ms in the last window, {p_first:.0f} ms in the first "
                      f"(limit +{100 * (ratio - 1):.0f} % with {n} turns in the smaller window)")
    out.update(asked=asked, answered=answered)
    if answered < asked:
        failed.append(f"answers: {asked - answered} of {asked} questions unanswered")
    if asked == 0:
        failed.append("answers: no question was asked")
    out["failed"] = failed
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def sample_dicts(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
