"""The soak's table and chart, from its figures (:func:`edgeagent.bench.soak.figures`, or soak.json)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from edgeagent.bench.soak_judge import Sample, slope_per_h, windows_for


def _v(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def table(fig: dict[str, Any]) -> str:
    """One row per sample (with the turns timed since the one before), then the steps and the verdict."""
    lines = [f"{'t (s)':>7} {'RSS MB':>8} {'fds':>5} {'threads':>7} {'tasks':>6} {'CPU %':>6} "
             f"{'turns':>5} {'p50 ms':>7}"]
    lines.append("-" * len(lines[0]))
    before = -1.0
    for s in fig["samples"]:
        ms = [m for t, m in fig["latencies"] if before < t <= s["t_s"]]
        lines.append(f"{s['t_s']:>7.0f} {s['rss_mb']:>8.1f} {s['fds']:>5} {s['threads']:>7} {s['tasks']:>6} "
                     f"{_v(s['cpu_pct']):>6} {len(ms):>5} {_v(statistics.median(ms) if ms else None):>7}")
        before = s["t_s"]
    kinds: dict[str, list[Any]] = {}
    for st in fig["steps"]:
        kinds.setdefault(st["kind"], []).append(st)
    lines.append("")
    for kind, steps in kinds.items():
        asked, answered = sum(s["questions"] for s in steps), sum(s["answered"] for s in steps)
        ms = [m for s in steps for m in s["latency_ms"]]
        extra = sum(s["extra_turns"] for s in steps)
        lines.append(f"{kind:10} x{len(steps):<3} answered {answered}/{asked}  p50 "
                     f"{_v(statistics.median(ms) if ms else None)} ms" + (f"  turns taken: {extra}" if extra else ""))
        lines.extend(f"    at {s['t_s']:.0f} s: {s['text'][:60]!r}: {s['note']}" for s in steps if s["note"])
    room = fig.get("room_e2e_ms") or []
    lines.append(f"room questions, end of speech -> first agent audio at the participant: p50 "
                 f"{_v(statistics.median(room) if room else None)} ms")
    lines.append(f"config calls: {fig['config_gets']} get, {fig['config_sets']} set, "
                 f"{len(fig['config_errors'])} failed")
    lines.append("")
    w = fig["window_s"]
    lines.append(f"windows: the first and the last {w:.0f} s of {fig['duration_s']:.0f} s")
    lines.append(f"RSS slope after the first window: {_v(fig['rss_slope_mb_per_h'], '{:.2f}')} MB/h "
                 f"(limit {fig['rss_limit_mb_per_h']} MB/h, {fig['rss_points']} samples)")
    for name in ("fds", "threads", "tasks"):
        lines.append(f"{name}: least {fig[f'{name}_first']} in the first window's second half, "
                     f"{fig[f'{name}_last']} in the last")
    lines.append(f"p50 latency: {_v(fig['p50_first_ms'])} ms in the first window, "
                 f"{_v(fig['p50_last_ms'])} ms in the last ({fig['turns_timed']} turns timed, "
                 f"{fig['p50_window_turns']} in the smaller window: limit +"
                 f"{_v(None if fig['p50_limit_ratio'] is None else 100 * (fig['p50_limit_ratio'] - 1))} %)")
    lines.append(f"answered {fig['answered']}/{fig['asked']}; device exit {fig['device_exit']}; "
                 f"wall {fig.get('wall_s', 0):.0f} s")
    lines.append("PASSED" if not fig["failed"] else "FAILED:\n  " + "\n  ".join(fig["failed"]))
    return "\n".join(lines)


def chart(fig: dict[str, Any], path: Path) -> Path:
    """RSS (with its fitted slope), descriptors/threads/tasks, and each turn's latency over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [Sample(**s) for s in fig["samples"]]
    win = windows_for(fig["duration_s"])
    figure, (a, b, c) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ts = [s.t_s for s in samples]
    a.plot(ts, [s.rss_mb for s in samples], marker=".", label="RSS")
    fitted = [(s.t_s, s.rss_mb) for s in samples if s.t_s >= win.first_s]
    slope = slope_per_h(fitted)
    if slope is not None:
        mt = statistics.fmean(t for t, _ in fitted)
        mv = statistics.fmean(v for _, v in fitted)
        xs = [fitted[0][0], fitted[-1][0]]
        a.plot(xs, [mv + slope / 3600 * (x - mt) for x in xs], "--", label=f"fit {slope:.1f} MB/h")
    a.set_ylabel("MB")
    a.legend(fontsize=8)
    for name in ("fds", "threads", "tasks"):
        b.plot(ts, [getattr(s, name) for s in samples], marker=".", label=name)
    b.set_ylabel("count")
    b.legend(fontsize=8)
    lat = fig["latencies"]
    c.scatter([t for t, _ in lat], [m for _, m in lat], s=10, label="turn e2e")
    for lo, hi, value in ((0.0, win.first_s, fig["p50_first_ms"]), (win.end_s - win.last_s, win.end_s,
                                                                    fig["p50_last_ms"])):
        if value is not None:
            c.hlines(value, lo, hi, colors="black", linestyles="--")
    c.set_ylabel("ms")
    c.set_xlabel("s since the driving began")
    for ax in (a, b, c):
        ax.axvspan(0, win.first_s, alpha=0.08, color="grey")
        ax.axvspan(win.end_s - win.last_s, win.end_s, alpha=0.08, color="grey")
    verdict = "passed" if not fig["failed"] else "FAILED"
    a.set_title(f"soak {fig['duration_s']:.0f} s: {verdict}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
