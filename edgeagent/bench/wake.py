"""Wake word stage benchmark (target: <= 5 ms per 80 ms step for two words).

Two words at once (hey_jarvis and alexa) on speech from the project's own
voices (see :func:`edgeagent.bench.vad.generated_speech`). Figures:

- ``wake_ms_per_frame``: one 1280-sample step (melspectrogram, embedding,
  both classifiers) called directly in this thread (the target figure); the
  median over runs of each run's mean, after a warm-up;
  ``wake_ms_per_frame_median`` and ``_p90`` are over single steps;
- ``wake_stream_ms_per_frame``: wall time per step through a whole
  :class:`~edgeagent.wake.oww.OpenWakeWordStream` fed as fast as possible.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import numpy as np

from edgeagent.bench import p90
from edgeagent.bench.vad import generated_speech

WORDS = ("hey_jarvis", "alexa")


def bench(runs: int = 5, warmup_steps: int = 30, **oww_options: Any) -> dict[str, float]:
    """Measure openWakeWord with two words; returns ``wake_ms_per_frame`` (the target
    figure), ``wake_ms_per_frame_median``, ``wake_ms_per_frame_p90``,
    ``wake_stream_ms_per_frame`` and ``wake_audio_s``."""
    from edgeagent.wake.features import CHUNK
    from edgeagent.wake.oww import OpenWakeWord

    speech = generated_speech()
    samples = speech.samples.astype(np.float32)
    chunks = [samples[i : i + CHUNK] for i in range(0, len(samples) - CHUNK + 1, CHUNK)]
    wake = OpenWakeWord(oww_options.pop("words", WORDS), **oww_options)

    scorer = wake.scorer()
    for c in chunks[:warmup_steps]:
        scorer.process(c)
    run_means: list[float] = []
    singles: list[float] = []
    for _ in range(runs):
        scorer = wake.scorer()
        times = []
        for c in chunks:
            t0 = time.perf_counter()
            scorer.process(c)
            times.append(time.perf_counter() - t0)
        run_means.append(statistics.fmean(times[5:]))  # the first 5 skip the classifiers
        singles += times[5:]

    async def through_stream() -> float:
        stream = wake.stream()
        t0 = time.perf_counter()
        for f in speech.chunks(320):
            stream.push(f)
        stream.end_input()
        async for _ in stream:
            pass
        return time.perf_counter() - t0

    async def stream_runs() -> list[float]:
        try:
            await through_stream()  # warm-up
            return [await through_stream() for _ in range(max(1, runs // 2))]
        finally:
            await wake.aclose()

    stream_s = statistics.median(asyncio.run(stream_runs()))
    return {
        "wake_ms_per_frame": 1000 * statistics.median(run_means),
        "wake_ms_per_frame_median": 1000 * statistics.median(singles),
        "wake_ms_per_frame_p90": 1000 * p90(singles),
        "wake_stream_ms_per_frame": 1000 * stream_s / max(1, len(chunks)),
        "wake_audio_s": speech.duration,
    }



if __name__ == "__main__":
    for key, value in bench().items():
        print(f"{key:28s} {value:8.3f}")
