"""STT stage benchmark (target: FINAL <= 450 ms after the true end of a 5 s utterance).

It does what the session will do: Piper speech of about 5 s is pushed in 20 ms
frames paced in real time, and ``flush()`` is called when the VAD would first
report silence (the frame that completes one 32 ms window after the true end).
The figure is the time from the true end of speech (the last 10 ms block above
-45 dBFS) to the FINAL event, median over several utterances after warm-up.

Also here: the word error rate used by the tests and the benchmark
(:func:`wer`, with :func:`normalize` for case, punctuation and numbers).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench import p90
from edgeagent.stt.base import STT, SpeechEventType

TARGET_FINAL_MS = 450.0
FRAME_S = 0.020
VAD_WINDOW_S = 0.032

#: About 5 s each in the en_US-joe-medium voice.
SENTENCES = (
    "Please turn on the kitchen lights, set a timer for ten minutes and remind me to check the oven soon.",
    "What will the weather be like in Paris tomorrow afternoon, and should I take an umbrella with me today?",
    "Remind me to call my sister when I get home from work tonight, and then to feed the cat and the dog.",
    "Play some quiet music in the living room, lower the blinds and dim the lights to half brightness, please.",
    "How many legs does a spider have, and why do so many of them spin their webs late at night?",
    "Add eggs, milk, butter and two loaves of bread to my shopping list for the market on Saturday morning.",
)

# -- word error rate -------------------------------------------------------------------

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> list[str]:
    """English words for 0 <= n < 10**9 ("twenty one", "one hundred five")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = number_words(n % size) if n % size else []
            return [*number_words(n // size), name, *rest]
    raise AssertionError("unreachable")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; digits spelled out ("10:30" → ten thirty)."""
    text = text.lower().replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = text.replace("'", "").replace("’", "")
    words: list[str] = []
    for token in re.findall(r"[a-z]+|\d+", text):
        if token.isdigit():
            words.extend(number_words(int(token)) if len(token) < 10 else list(token))
        else:
            words.append(token)
    return words


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (r != h))
    return row[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


# -- speech ---------------------------------------------------------------------------


def piper_speech(texts: Sequence[str]) -> list[AudioFrame]:
    """``texts`` spoken by the packaged Piper voice, at 16 kHz.

    Synthesised in a child process, so the voice does not count in this
    process's peak RSS (which scripts/bench-stages reports as the STT stage's).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.npz"
        code = "import sys; from edgeagent.bench.stt import _synthesize; _synthesize(sys.argv[1], sys.argv[2:])"
        subprocess.run([sys.executable, "-c", code, str(out), *texts], check=True, timeout=600)
        with np.load(out) as data:
            return [AudioFrame.from_int16(data[f"a{i}"], RECOGNITION_RATE) for i in range(len(texts))]


def _synthesize(path: str, texts: Sequence[str]) -> None:
    from piper import PiperVoice

    from edgeagent.audio.resample import resample
    from edgeagent.model_files.manifest import model_path

    voice = PiperVoice.load(model_path("piper-en-us-joe") / "en_US-joe-medium.onnx")
    arrays = {}
    for i, text in enumerate(texts):
        chunks = list(voice.synthesize(text))
        samples = np.concatenate([c.audio_int16_array for c in chunks])
        arrays[f"a{i}"] = resample(AudioFrame.from_int16(samples, chunks[0].sample_rate), RECOGNITION_RATE).samples
    np.savez(path, **arrays)  # type: ignore[arg-type]


def speech_span(frame: AudioFrame, threshold_dbfs: float = -45.0) -> tuple[int, int]:
    """First and last sample (exclusive) of the 10 ms blocks above ``threshold_dbfs``."""
    block = frame.sample_rate // 100
    n = frame.num_samples // block * block
    x = frame.samples[:n].astype(np.float32).reshape(-1, block) / 32768.0
    loud = np.flatnonzero(np.sqrt(np.mean(x * x, axis=1)) > 10 ** (threshold_dbfs / 20))
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * block, (int(loud[-1]) + 1) * block


# -- the measurement ------------------------------------------------------------------


async def final_after_end(stt: STT, speech: AudioFrame, lead_s: float = 0.3) -> tuple[float, str]:
    """Push ``speech`` (trimmed, after ``lead_s`` of silence) in real time; flush when
    the VAD would; returns (seconds from the true end of speech to FINAL, its text)."""
    start, stop = speech_span(speech)
    rate = speech.sample_rate
    audio = AudioFrame.concat(
        [AudioFrame.silence(lead_s, rate), speech.slice(start, stop), AudioFrame.silence(0.5, rate)]
    )
    end_s = lead_s + (stop - start) / rate
    frames = audio.chunks(round(FRAME_S * rate))
    flush_after = int(np.ceil((end_s + VAD_WINDOW_S) / FRAME_S))  # frames pushed before flush
    stream = stt.stream()
    loop = asyncio.get_running_loop()

    async def final() -> tuple[float, str]:
        async for event in stream:
            if event.type is SpeechEventType.FINAL:
                return loop.time(), event.text
        raise RuntimeError("the STT stream ended without a FINAL")

    reader = loop.create_task(final())
    try:
        t0 = loop.time()
        for k, frame in enumerate(frames[:flush_after]):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * FRAME_S - loop.time()))  # frame k is complete
            stream.push(frame)
        stream.flush()
        at, text = await wait_for(reader, 60)
        return at - (t0 + end_s), text
    finally:
        reader.cancel()
        await stream.aclose()


def bench(rounds: int = 2, warmup: int = 1, **whisper_options: Any) -> dict[str, float]:
    """Measure WhisperSTT (default model) on Piper speech.

    Returns ``stt_final_ms`` (median time from the true end of speech to FINAL, the
    target figure), ``stt_final_p90_ms``, ``stt_decode_ms`` (median single
    decode of a whole utterance), ``stt_rtf`` (that decode over the audio length)
    and ``stt_wer`` (mean word error rate of the FINALs).
    """
    from edgeagent.stt.whisper import WhisperSTT

    speech = piper_speech(SENTENCES)

    async def main() -> dict[str, float]:
        stt = WhisperSTT(**whisper_options)
        try:
            await stt.warmup()
            for i in range(warmup):
                await final_after_end(stt, speech[i % len(speech)])
            delays, errors = [], []
            for _ in range(rounds):
                for text, frame in zip(SENTENCES, speech, strict=True):
                    delay, got = await final_after_end(stt, frame)
                    delays.append(delay)
                    errors.append(wer(text, got))
            decodes = [(await asyncio.to_thread(stt.transcribe, f.to_float32())).seconds for f in speech]
            durations = [frame.duration for frame in speech]
        finally:
            await stt.aclose()
        delays.sort()
        return {
            "stt_final_ms": 1000 * statistics.median(delays),
            "stt_final_p90_ms": 1000 * p90(delays),
            "stt_decode_ms": 1000 * statistics.median(decodes),
            "stt_rtf": sum(decodes) / sum(durations),
            "stt_wer": statistics.fmean(errors),
        }

    return asyncio.run(main())


if __name__ == "__main__":
    t = time.perf_counter()
    for key, value in bench().items():
        print(f"{key:24s} {value:9.3f}")
    print(f"({time.perf_counter() - t:.0f} s)")
