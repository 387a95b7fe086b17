"""A long file through ``edgeagent run --input FILE --fast`` (issue 18 item 6, its last part): the
whole agent, not only the reader, runs in the memory of a short file, and the question in it is
answered (exit 0, the reply written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.bench.scripted import espeak, trim

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000
NOISE_DBFS = -60.0
QUESTION = "Hey Jarvis, what is the capital of France?"

pytestmark = pytest.mark.reliability


def make(path: Path, seconds: float, question: AudioFrame) -> None:
    """``seconds`` of 48 kHz stereo quiet noise with ``question`` 10 s before its end, written a minute at a time."""
    rng = np.random.default_rng(3)
    voice = resample(question, RATE).samples.astype(np.float64) / 32768.0
    at, total = round((seconds - 10.0 - len(voice) / RATE) * RATE), round(seconds * RATE)
    level = 10.0 ** (NOISE_DBFS / 20.0)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as fh:
        for start in range(0, total, 60 * RATE):
            block = rng.normal(0.0, level, min(60 * RATE, total - start))
            lo, hi = max(at, start), min(at + len(voice), start + len(block))
            if lo < hi:
                block[lo - start:hi - start] += voice[lo - at:hi - at]
            fh.write(np.repeat(block[:, None], 2, axis=1))


def run(path: Path, tmp: Path) -> tuple[int, str, float]:
    """Exit status, stdout and peak RSS (MB, the kernel's count at exit) of ``edgeagent run --input
    path --fast``."""
    env = {**os.environ, "EDGEAGENT_CONFIG": str(tmp / "none.toml")}
    out = tmp / f"{path.stem}.out"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgeagent", "run", "--input", str(path), "--output",
                                 str(tmp / f"{path.stem}-reply.wav"), "--fast"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(), usage.ru_maxrss / 1024


def test_a_long_file_runs_in_the_memory_of_a_short_one(tmp_path: Path) -> None:
    """20 minutes of 48 kHz stereo (220 MB; read whole as float64 it would be 880 MB) against 30 s:
    the same question answered, and the peak RSS within 40 MB of the short file's (a buffer that
    grew with the input would show its length)."""
    question = trim(espeak(QUESTION))
    runs = {}
    for name, seconds in (("short", 30.0), ("long", 1200.0)):
        path = tmp_path / f"{name}.wav"
        make(path, seconds, question)
        runs[name] = run(path, tmp_path)
        path.unlink()
    for name, (code, out, _) in runs.items():
        assert code == 0, (name, out)
        assert "user: " in out and "agent: " in out and "paris" in out.lower(), (name, out)
    short, long = runs["short"][2], runs["long"][2]
    assert long - short < 40, f"peak RSS {long:.0f} MB for 20 minutes, {short:.0f} MB for 30 s"
