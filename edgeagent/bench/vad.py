"""VAD stage benchmark (target: <= 0.5 ms of inference per 32 ms window).

Speech comes from the project's own voices (Piper and espeak-ng, several
sentences, with pauses). Two figures:

- ``vad_ms_per_frame``: Silero inference per 512-sample window, called
  directly in this thread (the target figure); the median over runs
  of each run's mean, after a warm-up. On a busy machine the mean carries
  the time this thread was preempted; ``vad_ms_per_frame_median`` (the median
  single window) shows the undisturbed cost;
- ``vad_stream_ms_per_frame``: wall time per window through a whole
  :class:`~edgeagent.vad.silero.SileroVADStream` fed as fast as possible
  (resampling, windowing, the inference thread hop, the segmenter, events).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.bench import p90

SENTENCES = (
    "Please turn on the kitchen lights and set a timer for ten minutes.",
    "What will the weather be like tomorrow afternoon?",
    "Remind me to call my sister when I get home from work.",
    "Play some quiet music in the living room.",
)


def _synthesize(texts: Sequence[str]) -> list[tuple[bytes, int]]:
    """In a child process: each text by Piper and by espeak-ng, as (16-bit PCM, rate)."""
    from edgeagent.tts.espeak import EspeakTTS
    from edgeagent.tts.piper import PiperTTS

    async def main() -> list[tuple[bytes, int]]:
        voices = [PiperTTS(), EspeakTTS()]
        try:
            out = []
            for text in texts:
                for voice in voices:
                    frame = await wait_for(voice.synthesize(text), 60)
                    out.append((frame.to_bytes(), frame.sample_rate))
            return out
        finally:
            for voice in voices:
                await voice.aclose()

    return asyncio.run(main())


def generated_speech(texts: Sequence[str] = SENTENCES, pause_s: float = 0.6) -> AudioFrame:
    """``texts`` spoken by Piper and by espeak-ng in turn, with pauses, at 16 kHz.

    The voices run in a child process, so the peak RSS that scripts/bench-stages
    reports for a stage is the stage's own, not Piper's.
    """
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        spoken = pool.submit(_synthesize, tuple(texts)).result(timeout=300)
    pause = AudioFrame.silence(pause_s, RECOGNITION_RATE)
    parts: list[AudioFrame] = [pause]
    for pcm, rate in spoken:
        parts += [resample(AudioFrame.from_bytes(pcm, rate), RECOGNITION_RATE), pause]
    return AudioFrame.concat(parts)


def bench(runs: int = 5, warmup_windows: int = 100, **silero_options: Any) -> dict[str, float]:
    """Measure Silero on generated speech; returns ``vad_ms_per_frame`` (the target figure),
    ``vad_ms_per_frame_median`` and ``_p90`` (over single windows),
    ``vad_stream_ms_per_frame`` and ``vad_audio_s`` (length of the speech used)."""
    from edgeagent.vad.silero import WINDOW, SileroVAD

    speech = generated_speech()
    floats = speech.to_float32()
    windows = [floats[i : i + WINDOW] for i in range(0, len(floats) - WINDOW + 1, WINDOW)]
    vad = SileroVAD(**silero_options)
    model = vad.model

    state = model.new_state()
    for w in windows[:warmup_windows]:
        model.probabilities(state, [w])
    run_means: list[float] = []
    singles: list[float] = []
    for _ in range(runs):
        state = model.new_state()
        times = []
        for w in windows:
            t0 = time.perf_counter()
            model.probabilities(state, [w])
            times.append(time.perf_counter() - t0)
        run_means.append(statistics.fmean(times))
        singles += times

    async def through_stream() -> float:
        stream = vad.stream()
        frames = speech.chunks(320)
        t0 = time.perf_counter()
        for f in frames:
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
            await vad.aclose()

    stream_s = statistics.median(asyncio.run(stream_runs()))
    n = len(windows)
    return {
        "vad_ms_per_frame": 1000 * statistics.median(run_means),
        "vad_ms_per_frame_median": 1000 * statistics.median(singles),
        "vad_ms_per_frame_p90": 1000 * p90(singles),
        "vad_stream_ms_per_frame": 1000 * stream_s / max(1, n),
        "vad_audio_s": speech.duration,
    }



if __name__ == "__main__":
    for key, value in bench().items():
        print(f"{key:28s} {value:8.3f}")
