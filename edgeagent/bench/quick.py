"""The board report (``scripts/bench --quick``): a minute or two, one line to paste into an issue.

    scripts/bench --quick

On the user's own board, after ``scripts/setup``: each local stage once, on the default models,
with fewer rounds than ``scripts/bench-stages`` (the same figures: VAD and wake word per frame,
the final transcript after the end of speech, the LLM's first token, the first audio of a
sentence), then three spoken questions through the whole session for one voice-to-voice p50
(true end of the question -> first reply sample). It prints a table, then the report line:

    edgeagent bench --quick: Raspberry Pi 5 Model B Rev 1.0 (aarch64, 4 cores) | vad_ms_per_frame=...

and the figures as one JSON line last. Nothing is judged against a target: the targets of
``scripts/bench-stages`` and ``scripts/bench`` are for a 2-core x86 machine, and under emulation
(``scripts/check-arm64``) the figures mean nothing. Needs espeak-ng (``scripts/setup`` installs it)
for the spoken questions; no matplotlib. It took 1m31s on the 2-core x86 machine, 46 s of it STT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

QUESTIONS = 3
Bench = tuple[str, str, str, Callable[[], dict[str, float]]]


def _stage_benches() -> tuple[Bench, ...]:
    """(stage, its report figure, what it is, its quick benchmark) of each stage."""
    from edgeagent.bench import llm, stt, tts, vad, wake

    return (
        ("vad", "vad_ms_per_frame", "VAD per 32 ms frame", lambda: vad.bench(runs=1, warmup_windows=30)),
        ("wake", "wake_ms_per_frame", "wake word per 80 ms frame", lambda: wake.bench(runs=1, warmup_steps=10)),
        ("stt", "stt_final_ms", "final transcript after the end of speech", lambda: stt.bench(rounds=1, warmup=1)),
        ("llm", "llm_first_token_ms", "LLM first token", lambda: llm.bench(runs=3, warmup=1)),
        ("tts", "tts_first_audio_ms", "first audio of a sentence", lambda: tts.bench(runs=3, warmup=1, espeak=False)),
    )


def measure(questions: int = QUESTIONS, workdir: Path | None = None) -> dict[str, Any]:
    """Every figure of the report, and the wall time of each part (``*_wall_s``)."""
    from edgeagent.bench import voice

    fig: dict[str, Any] = {}
    for stage, _, _, bench in _stage_benches():
        print(f"bench --quick: {stage} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        fig.update(bench())
        fig[f"{stage}_wall_s"] = round(time.monotonic() - t0, 1)
    print(f"bench --quick: {questions} spoken questions through the session ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    where = workdir or Path(tempfile.mkdtemp(prefix="edgeagent-bench-quick-"))
    spoken = asyncio.run(voice.measure(questions, where, baseline=False, idle_s=1.0, pauses=0))
    fig["voice_wall_s"] = round(time.monotonic() - t0, 1)
    fig["e2e_p50_ms"] = spoken.get("e2e_p50_ms")
    fig["answered_fraction"] = spoken.get("answered_fraction")
    fig["questions"] = questions
    return fig


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def report_line(fig: dict[str, Any]) -> str:
    """The one line: the board, the versions, the five stage figures and the voice-to-voice p50."""
    from edgeagent import __version__
    from edgeagent.device.board import board_line

    keys = [key for _, key, _, _ in _stage_benches()] + ["e2e_p50_ms"]
    figures = " ".join(f"{key}={_num(fig.get(key))}" for key in keys)
    return (f"edgeagent bench --quick: {board_line().removeprefix('board: ')} | {figures} | "
            f"{fig.get('questions')} questions | edgeagent {__version__}, Python {platform.python_version()}")


def table(fig: dict[str, Any]) -> str:
    rows = [f"{'stage':6} {'figure':42} {'measured':>10} {'wall':>6}"]
    for stage, key, what, _ in _stage_benches():
        rows.append(f"{stage:6} {what:42} {_num(fig.get(key)) + ' ms':>10} {fig.get(f'{stage}_wall_s', 0):5.0f}s")
    rows.append(f"{'voice':6} {'voice-to-voice p50, ' + str(fig.get('questions')) + ' questions':42} "
                f"{_num(fig.get('e2e_p50_ms')) + ' ms':>10} {fig.get('voice_wall_s', 0):5.0f}s")
    return "\n".join(rows)


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench --quick", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--questions", type=int, default=QUESTIONS, help=f"spoken questions (default {QUESTIONS})")
    ap.add_argument("--workdir", type=Path, help="where the recording of the replies goes (default: a temp dir)")
    args = ap.parse_args(list(argv))
    if args.questions < 1:
        ap.error("--questions must be 1 or more")
    fig = measure(args.questions, args.workdir)
    print(table(fig))
    print()
    print(report_line(fig))
    print(json.dumps(fig))
    return 0 if fig.get("e2e_p50_ms") is not None else 1
