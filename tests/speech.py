"""Speech the tests make themselves: espeak-ng and Piper voices, as 16 kHz AudioFrames."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeagent.audio.frame import AudioFrame
from edgeagent.paths import models_dir


def _to_frame(samples: np.ndarray, rate: int, out_rate: int) -> AudioFrame:
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    if rate != out_rate:
        samples = soxr.resample(samples.astype(np.float32), rate, out_rate)
    return AudioFrame.from_float(samples, out_rate)


def espeak(text: str, rate: int = 16_000, voice: str = "en-us", wpm: int = 160) -> AudioFrame:
    """``text`` spoken by espeak-ng."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is not installed: run scripts/setup --dev"
    wav = subprocess.run(
        [exe, "-v", voice, "-s", str(wpm), "--stdout", text], capture_output=True, check=True, timeout=30
    ).stdout
    data, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return _to_frame(data, sr, rate)


@functools.lru_cache(maxsize=1)
def _piper_voice() -> object:
    from piper import PiperVoice

    found = sorted(models_dir().glob("**/en_US-joe-medium.onnx"))
    assert found, f"Piper voice en_US-joe-medium not found under {models_dir()}: run edgeagent models pull"
    return PiperVoice.load(found[0])


def piper(text: str, rate: int = 16_000) -> AudioFrame:
    """``text`` spoken by the packaged Piper voice (en_US-joe-medium), the same every time.

    Piper samples its phoneme lengths and its voice with noise (``noise_scale``,
    ``noise_w_scale``), so by default no two renderings of a sentence are alike, and a
    test's question was now and then heard wrong ("Italy" as "the lead" in 1 of 3 CI
    runs of tests/test_realtime.py). With both at zero the rendering is fixed; checked:
    Whisper heard the test sentences at least as well as with the default noise.
    """
    from piper import SynthesisConfig

    voice = _piper_voice()
    fixed = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, syn_config=fixed))  # type: ignore[attr-defined]
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32) / 32768.0
    return _to_frame(audio, chunks[0].sample_rate, rate)


def with_silence(frame: AudioFrame, before: float = 0.5, after: float = 0.5) -> AudioFrame:
    r = frame.sample_rate
    return AudioFrame.concat([AudioFrame.silence(before, r), frame, AudioFrame.silence(after, r)])


def save(frame: AudioFrame, path: Path) -> Path:
    sf.write(path, frame.samples, frame.sample_rate, subtype="PCM_16")
    return path
