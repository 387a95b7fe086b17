"""TTS stage benchmark (target: first audio <= 150 ms for a 12-word sentence).

First audio is timed from pushing the whole sentence and flushing a fresh stream
to the first SynthesizedAudio chunk, median over several runs after warm-up.
The real-time factor is synthesis time over audio length for a few sentences.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Any

from edgeagent.aio import wait_for
from edgeagent.bench import p90
from edgeagent.tts.clauses import ClauseSplitter
from edgeagent.tts.streaming import ClauseTTS

if TYPE_CHECKING:
    from edgeagent.tts.piper import PiperTTS

#: Twelve words each, no comma: the first clause is cut by the word limit.
SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remember that the meeting starts at nine tomorrow morning in town.",
    "I have set a timer for ten minutes and will remind you.",
)
TARGET_FIRST_AUDIO_MS = 150.0


async def first_audio_s(tts: ClauseTTS, text: str) -> float:
    """Seconds from pushing ``text`` and flushing to the first audio chunk."""
    stream = tts.stream()

    async def first() -> float:
        async for chunk in stream:
            if chunk.frame.num_samples:
                return time.perf_counter() - t0
        raise RuntimeError(f"{tts.provider} gave no audio for {text!r}")

    try:
        t0 = time.perf_counter()
        stream.push(text)
        stream.flush()
        return await wait_for(first(), 30)
    finally:
        await stream.aclose()


async def _measure(tts: ClauseTTS, runs: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        await first_audio_s(tts, SENTENCES[i % len(SENTENCES)])
    times = [await first_audio_s(tts, SENTENCES[i % len(SENTENCES)]) for i in range(runs)]
    processing = audio = 0.0
    for text in SENTENCES:
        t0 = time.perf_counter()
        frame = await wait_for(tts.synthesize(text), 60)
        processing += time.perf_counter() - t0
        audio += frame.duration
    return {
        "first_audio_ms": 1000 * statistics.median(times),
        "first_audio_p90_ms": 1000 * p90(times),
        "rtf": processing / audio,
    }


async def _piper_cpu(tts: PiperTTS, runs: int) -> dict[str, float]:
    """CPU seconds Piper's thread spends on the first clause of a reply: what first audio
    costs on an idle core, whatever else the machine is doing."""
    clauses = [ClauseSplitter().push(SENTENCES[i % len(SENTENCES)])[0] for i in range(runs)]
    cpu = [await tts.clause_cpu_s(clause) for clause in clauses]
    return {"tts_first_clause_cpu_ms": 1000 * statistics.median(cpu)}


def bench(runs: int = 9, warmup: int = 2, espeak: bool = True, **piper_options: Any) -> dict[str, float]:
    """Measure Piper (the default voice) and, unless ``espeak=False``, espeak-ng.

    Returns ``tts_first_audio_ms`` (median, the target figure),
    ``tts_first_audio_p90_ms``, ``tts_rtf``, ``tts_first_clause_cpu_ms`` (CPU
    time of the first clause: the first audio of an unloaded machine, minus
    ~1 ms of event-loop overhead) and ``tts_espeak_*`` likewise.
    """

    from edgeagent.tts.piper import PiperTTS

    async def main() -> dict[str, float]:
        out: dict[str, float] = {}
        piper = PiperTTS(**piper_options)
        try:
            out.update({f"tts_{k}": v for k, v in (await _measure(piper, runs, warmup)).items()})
            out.update(await _piper_cpu(piper, runs))
        finally:
            await piper.aclose()
        if espeak:
            from edgeagent.tts.espeak import EspeakTTS

            fallback = EspeakTTS()
            out.update({f"tts_espeak_{k}": v for k, v in (await _measure(fallback, runs, warmup)).items()})
        return out

    return asyncio.run(main())


if __name__ == "__main__":
    for key, value in bench().items():
        print(f"{key:28s} {value:8.3f}")
