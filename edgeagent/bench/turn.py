"""End-of-turn detectors side by side: the words (LLM), the voice (Smart Turn), and mixes.

Every item is audio as the agent has it at the moment it decides: the speech so
far and :data:`DECIDE_S` of silence after it.

- fragments: each paused question (:mod:`edgeagent.bench.pauses`) cut at the end of
  its fragment ("What is the capital of"), the turn is NOT over;
- complete: each :data:`~edgeagent.bench.scripted.QUESTIONS` text in every voice,
  and each paused question whole, the turn IS over.

Each item is transcribed by the default Whisper STT and scored by the LLM's
``end_of_turn_logprob`` on the transcript as written and with its trailing
punctuation stripped (Whisper's "?" gives the answer away; a streaming
transcript often has none), and by Smart Turn on the audio. A detector says
"finished" when its score reaches the threshold; per detector we count the
fragments it holds (unfinished) and the complete turns it passes (finished),
plus the AUC: the share of (fragment, complete) pairs it ranks the right way.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.pauses import PAUSED, VOICES, make_paused
from edgeagent.bench.scripted import QUESTIONS, espeak, trim
from edgeagent.config.voice import TurnConfig
from edgeagent.voice.detectors import endpoint_delay, voice_may_matter

DECIDE_S = 0.3
"""Silence after the speech when the detector is asked (the turn config's min_delay_s)."""
THRESHOLDS = (0.05, 0.2, 0.5, 0.8)
TEXT_THRESHOLD = 0.05  # TurnConfig.eot_threshold
AUDIO_THRESHOLD = 0.5  # Smart Turn's own decision threshold
STRIP = " .?!,;:…"


@dataclass
class Item:
    kind: str  # "fragment" | "complete"
    source: str  # "paused" | "questions"
    said: str
    voice: str
    audio: AudioFrame = field(repr=False)
    transcript: str = ""
    p_text: float = math.nan
    p_stripped: float = math.nan
    p_audio: float = math.nan

    def record(self) -> dict[str, object]:
        out = asdict(self)
        del out["audio"]
        out["seconds"] = round(self.audio.duration, 2)
        return out


def _with_silence(audio: AudioFrame) -> AudioFrame:
    return AudioFrame.concat([audio, AudioFrame.silence(DECIDE_S, RECOGNITION_RATE)])


def make_items(n_paused: int, voices: Sequence[str] = VOICES, seed: int = 0) -> list[Item]:
    """The fragments, then the complete turns (see the module doc)."""
    items: list[Item] = []
    paused = make_paused(n_paused, voices, seed)
    for q in paused:
        head = q.audio.slice(0, round(q.fragment_end_s * RECOGNITION_RATE))
        items.append(Item("fragment", "paused", q.fragment, q.voice, _with_silence(head)))
    for q in paused:
        items.append(Item("complete", "paused", q.text, q.voice, _with_silence(q.audio)))
    for text in QUESTIONS:
        for voice in voices:
            items.append(Item("complete", "questions", text, voice, _with_silence(trim(espeak(text, voice)))))
    return items


def _p(logprob: float) -> float:
    return math.exp(logprob) if logprob > -700 else 0.0


async def score(items: list[Item]) -> dict[str, float]:
    """Fill in each item's transcript and probabilities with the real default models."""
    from edgeagent.llm.llama import LlamaLLM
    from edgeagent.stt.whisper import WhisperSTT
    from edgeagent.voice.audio_turn import SmartTurn
    from edgeagent.voice.stages import INSTRUCTIONS, new_context

    stt, llm, turn = WhisperSTT(partials=False), LlamaLLM(temperature=0.0), SmartTurn()
    ctx = new_context(INSTRUCTIONS)
    timing: dict[str, list[float]] = {"stt": [], "llm": [], "audio": []}
    try:
        await wait_for(stt.warmup(), 60)
        await wait_for(llm.prefill(ctx), 60)
        await wait_for(turn.probability(items[0].audio), 60)  # warm-up
        for it in items:
            t0 = time.perf_counter()
            it.transcript = (await wait_for(stt.recognize(it.audio), 60)).text.strip()
            t1 = time.perf_counter()
            it.p_text = _p(await wait_for(llm.end_of_turn_logprob(ctx, it.transcript), 60))
            it.p_stripped = _p(await wait_for(
                llm.end_of_turn_logprob(ctx, it.transcript.rstrip(STRIP)), 60))
            t2 = time.perf_counter()
            it.p_audio = await wait_for(turn.probability(it.audio), 60)
            timing["stt"].append(t1 - t0)
            timing["llm"].append((t2 - t1) / 2)
            timing["audio"].append(turn.last_inference_s)
    finally:
        await wait_for(turn.aclose(), 30)
        await wait_for(llm.aclose(), 30)
        await wait_for(stt.aclose(), 30)
    return {f"{k}_ms": 1000 * statistics.median(v) for k, v in timing.items()}


Detector = Callable[[Item], float]


def _geo(a: float, b: float, wa: float = 0.5) -> float:
    return math.pow(a, wa) * math.pow(b, 1.0 - wa)


def _wait_score(text_p: float, audio_p: float | None) -> float:
    """The session's own verdict as a score: 1 for the shortest wait (``min_delay_s``), 0 for
    the longest (``max_delay_s``), with the default ``[turn]`` options."""
    opts = TurnConfig()
    wait = endpoint_delay(opts, text_p, audio_p)
    return 1.0 - (wait - opts.min_delay_s) / (opts.max_delay_s - opts.min_delay_s)


def _combined(i: Item) -> float:
    """``turn.detection = combined`` as the session runs it: the voice only where it may matter."""
    return _wait_score(i.p_stripped, i.p_audio if voice_may_matter(TurnConfig(), i.p_stripped) else None)


DETECTORS: dict[str, Detector] = {
    "session: combined (wait)": _combined,
    "session: semantic (wait)": lambda i: _wait_score(i.p_stripped, None),
    "text (as written)": lambda i: i.p_text,
    "text (stripped)": lambda i: i.p_stripped,
    "audio (Smart Turn)": lambda i: i.p_audio,
    "geomean(text, audio)": lambda i: _geo(i.p_text, i.p_audio),
    "geomean(stripped, audio)": lambda i: _geo(i.p_stripped, i.p_audio),
    "stripped^0.3 * audio^0.7": lambda i: _geo(i.p_stripped, i.p_audio, 0.3),
    "stripped^0.7 * audio^0.3": lambda i: _geo(i.p_stripped, i.p_audio, 0.7),
    "min(stripped, audio)": lambda i: min(i.p_stripped, i.p_audio),
    "max(stripped, audio)": lambda i: max(i.p_stripped, i.p_audio),
    "0.5 stripped + 0.5 audio": lambda i: 0.5 * i.p_stripped + 0.5 * i.p_audio,
    "0.3 stripped + 0.7 audio": lambda i: 0.3 * i.p_stripped + 0.7 * i.p_audio,
    "stripped>=.05 AND audio>=.5": lambda i: float(i.p_stripped >= TEXT_THRESHOLD
                                                   and i.p_audio >= AUDIO_THRESHOLD),
    "stripped>=.05 OR audio>=.5": lambda i: float(i.p_stripped >= TEXT_THRESHOLD
                                                  or i.p_audio >= AUDIO_THRESHOLD),
}


def auc(fragments: Sequence[float], complete: Sequence[float]) -> float:
    """Share of (fragment, complete) pairs where the complete one scores higher (ties half)."""
    wins = sum((c > f) + 0.5 * (c == f) for f in fragments for c in complete)
    return wins / (len(fragments) * len(complete))


def counts(fragments: Sequence[float], complete: Sequence[float], threshold: float) -> tuple[int, int]:
    """(fragments held: score below the threshold, complete passed: score at or above it)."""
    return sum(f < threshold for f in fragments), sum(c >= threshold for c in complete)


def best_threshold(fragments: Sequence[float], complete: Sequence[float]) -> float:
    """The threshold (one of the scores) with the highest balanced accuracy."""
    n_f, n_c = len(fragments), len(complete)

    def balanced(t: float) -> float:
        held, passed = counts(fragments, complete, t)
        return held / n_f + passed / n_c

    return max(sorted(set(complete)), key=balanced)


@dataclass(frozen=True)
class Result:
    """One detector over all items."""

    auc: float
    best_threshold: float
    at_best: tuple[int, int]
    """(fragments held, complete passed) at ``best_threshold``."""
    at: dict[str, tuple[int, int]]
    """The same at each of :data:`THRESHOLDS`."""


def evaluate(items: Sequence[Item]) -> dict[str, Result]:
    out: dict[str, Result] = {}
    for name, fn in DETECTORS.items():
        frag = [fn(i) for i in items if i.kind == "fragment"]
        comp = [fn(i) for i in items if i.kind == "complete"]
        best = best_threshold(frag, comp)
        out[name] = Result(round(auc(frag, comp), 3), best, counts(frag, comp, best),
                           {str(t): counts(frag, comp, t) for t in THRESHOLDS})
    return out


def item_table(items: Sequence[Item]) -> str:
    lines = [f"{'kind':9s} {'voice':6s} {'text':>6s} {'strip':>6s} {'audio':>6s}  transcript"]
    for i in items:
        lines.append(f"{i.kind:9s} {i.voice:6s} {i.p_text:6.3f} {i.p_stripped:6.3f} {i.p_audio:6.3f}"
                     f"  {i.transcript[:60]}")
    return "\n".join(lines)


def table(result: dict[str, Result], n_frag: int, n_comp: int) -> str:
    cols = ["AUC", "best thr: held/passed", *(f"@{t}" for t in THRESHOLDS)]
    lines = [f"held = fragments judged unfinished (of {n_frag}); passed = complete turns judged "
             f"finished (of {n_comp})",
             f"{'detector':28s} {cols[0]:>5s}  {cols[1]:>22s}  " + "  ".join(f"{c:>7s}" for c in cols[2:])]
    for name, r in result.items():
        best = f"{r.best_threshold:.3g}: {r.at_best[0]}/{r.at_best[1]}"
        at = "  ".join(f"{f'{r.at[str(t)][0]}/{r.at[str(t)][1]}':>7s}" for t in THRESHOLDS)
        lines.append(f"{name:28s} {r.auc:5.3f}  {best:>22s}  {at}")
    return "\n".join(lines)


def run(n_paused: int = len(PAUSED) * len(VOICES),
        seed: int = 0) -> tuple[list[Item], dict[str, Result], dict[str, object]]:
    """Build, score and evaluate; returns the items, the results and the JSON figure."""
    items = make_items(n_paused, VOICES, seed)
    timing = asyncio.run(score(items))
    results = evaluate(items)
    fig: dict[str, object] = {
        "n_fragments": sum(i.kind == "fragment" for i in items),
        "n_complete": sum(i.kind == "complete" for i in items),
        "decide_s": DECIDE_S,
        **{k: round(v, 1) for k, v in timing.items()},
        "detectors": {name: asdict(r) for name, r in results.items()},
        "items": [i.record() for i in items],
    }
    return items, results, fig
