"""``scripts/bench-accuracy``: the whole run, its table, its JSON line and its verdict.

For every front end (no noise suppression; WebRTC's on every stage; on what the wake
word model hears only) and every threshold tried, with the
words check and without it: true accepts of the tuning voices and of the held-out voice,
near misses and other non-calls answered, false accepts per hour of ordinary speech, the
WER of the heard questions against Whisper's WER on the question alone, and the share of
questions whose first word survived. The verdict is on the defaults (``ActivationConfig``,
``AudioConfig``), over every voice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeagent.bench.accuracy import MODES, Heard, Models, first_word_kept, front_end, judge, wer
from edgeagent.bench.accuracy_set import HELD_OUT, VOICES, Item, calls, non_calls, ordinary_speech
from edgeagent.config import AudioConfig
from edgeagent.config.voice import ActivationConfig
from edgeagent.voice.wake_check import WakePhrases

THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
TARGET_TRUE_ACCEPTS = 0.95
TARGET_FA_PER_HOUR = 0.5


@dataclass
class Row:
    ns: str
    threshold: float
    verify: bool
    true_accepts: float
    held_out_true_accepts: float
    near_answered: int
    other_answered: int
    fa: int
    fa_per_hour: float
    wer: float
    baseline_wer: float
    first_word: float

    def line(self) -> str:
        return (f"{self.ns:4s} {self.threshold:5.2f} {'words' if self.verify else 'model'} "
                f"{self.true_accepts:6.3f} {self.held_out_true_accepts:6.3f} {self.near_answered:4d} "
                f"{self.other_answered:5d} {self.fa:4d} {self.fa_per_hour:6.2f} {self.wer:6.3f} "
                f"{self.baseline_wer:6.3f} {self.first_word:6.3f}")


HEADER = "ns   thresh check  TA     TA-out near other  FA   FA/h   WER    WER-0  first"


class Run:
    """The set heard once per front end; rows computed from it."""

    def __init__(self, minutes: float, log: Any = print, voices: Sequence[str] = VOICES,
                 models: Models | None = None) -> None:
        self.log = log
        t0 = time.monotonic()
        self.models = models or Models()
        self.items: list[Item] = [i for v in voices for i in (*calls(v), *non_calls(v))]
        self.ordinary = ordinary_speech(minutes) if minutes > 0 else []
        self.hours = sum(p.duration for p in self.ordinary) / 3600
        log(f"set: {len(self.items)} items, {60 * self.hours:.1f} min of ordinary speech "
            f"({time.monotonic() - t0:.0f} s to make)")
        self.phrases = WakePhrases(("hey_jarvis",))
        self._front: dict[str, dict[str, tuple[Any, Heard]]] = {}
        self._baseline: dict[str, tuple[int, int]] = {}
        self._ordinary: dict[str, list[tuple[Any, Heard]]] = {}

    def _hear(self, audio: Any, ns: str) -> tuple[Any, Heard]:
        stt_audio, wake_audio = front_end(audio, ns)
        return stt_audio, self.models.hear(stt_audio, wake_audio)

    def prepare(self, ns: str, ordinary: bool) -> None:
        t0 = time.monotonic()
        self._front[ns] = {item.key: self._hear(item.audio, ns) for item in self.items}
        errors = words = 0
        for k, item in enumerate(i for i in self.items if i.kind == "call"):
            assert item.baseline is not None
            audio, _ = front_end(item.baseline, ns)
            key = -1 - k - 1000 * MODES.index(ns)
            e, n = wer(item.question, self.models.transcribe(audio, 0.0, audio.duration, key))
            errors, words = errors + e, words + n
        self._baseline[ns] = (errors, words)
        if ordinary:
            self._ordinary[ns] = [self._hear(p, ns) for p in self.ordinary]
        self.log(f"noise suppression {ns}: heard in {time.monotonic() - t0:.0f} s")

    def row(self, ns: str, threshold: float, verify: bool) -> Row:
        ta = {True: [0, 0], False: [0, 0]}  # held out: [accepted, calls]
        answered = {"near": 0, "other": 0}
        errors = words = first = 0
        for k, item in enumerate(self.items):
            audio, heard = self._front[ns][item.key]
            out = judge(self.models, audio, heard, threshold, self.phrases, k + 10_000 * MODES.index(ns), verify)
            if item.kind == "call":
                ta[item.voice == HELD_OUT][1] += 1
                if out.accepted:
                    ta[item.voice == HELD_OUT][0] += 1
                    e, n = wer(item.question, out.heard[0])
                    errors, words, first = errors + e, words + n, first + first_word_kept(item.question, out.heard[0])
            elif out.accepted:
                answered[item.kind] += 1
        fa = 0
        for k, (audio, heard) in enumerate(self._ordinary.get(ns, [])):
            key = 100_000 + k + 10_000 * MODES.index(ns)
            fa += judge(self.models, audio, heard, threshold, self.phrases, key, verify).accepted
        accepted = ta[False][0] + ta[True][0]
        base_e, base_n = self._baseline[ns]
        return Row(ns, threshold, verify, ta[False][0] / max(1, ta[False][1]), ta[True][0] / max(1, ta[True][1]),
                   answered["near"], answered["other"], fa, fa / self.hours if ns in self._ordinary else float("nan"),
                   errors / max(1, words), base_e / max(1, base_n), first / max(1, accepted))

    def all_true_accepts(self, ns: str, threshold: float) -> float:
        calls_ = [i for i in self.items if i.kind == "call"]
        got = sum(bool(judge(self.models, *self._front[ns][i.key], threshold, self.phrases,
                             self.items.index(i) + 10_000 * MODES.index(ns)).accepted) for i in calls_)
        return got / len(calls_)


def misses(row: Row, all_ta: float) -> list[str]:
    out = []
    if all_ta < TARGET_TRUE_ACCEPTS:
        out.append(f"true accepts {all_ta:.3f} < {TARGET_TRUE_ACCEPTS}")
    if not row.fa_per_hour <= TARGET_FA_PER_HOUR:
        out.append(f"false accepts per hour {row.fa_per_hour:.2f} > {TARGET_FA_PER_HOUR}")
    if row.near_answered:
        out.append(f"{row.near_answered} near misses answered")
    return out


def tuning_curve(run: Run, ns: str, thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """The tuning voices (:data:`~edgeagent.bench.accuracy_set.TUNING_VOICES`) per threshold,
    words check on: true accepts, near misses and other non-calls answered."""
    from edgeagent.bench.accuracy_set import TUNING_VOICES

    extra = Run(0.0, run.log, voices=TUNING_VOICES, models=run.models)
    extra.prepare(ns, ordinary=False)
    calls_ = sum(i.kind == "call" for i in extra.items)
    out = []
    for th in thresholds:
        row = extra.row(ns, th, True)
        out.append({"threshold": th, "true_accepts": row.true_accepts, "calls": calls_,
                    "near_answered": row.near_answered, "other_answered": row.other_answered})
        run.log(f"  {ns:4s} {th:5.2f} words {row.true_accepts:6.3f} of {calls_} calls; near misses answered "
                f"{row.near_answered}, other non-calls {row.other_answered}")
    return out


def defaults() -> tuple[str, float]:
    audio = AudioConfig()
    ns = "all" if audio.noise_suppression else "wake" if audio.wake_noise_suppression else "off"
    return ns, ActivationConfig().wake_threshold


def sweep(run: Run, fronts: Sequence[str], thresholds: Sequence[float]) -> list[Row]:
    rows = []
    for ns in fronts:
        for th in thresholds:
            for verify in (False, True):
                rows.append(run.row(ns, th, verify))
                run.log(rows[-1].line())
    return rows
