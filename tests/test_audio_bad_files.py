"""Bad audio files for ``edgeagent run --input`` (issue 18 item 6): each is converted and played,
or refused before the models load with one line naming the file and exit 1; a long file is
streamed (memory does not grow with its length)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeagent.audio.wav import WavFileInput
from edgeagent.errors import AudioError
from edgeagent.local_job import open_wav

ROOT = Path(__file__).resolve().parents[1]


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t)
    return mono if channels == 1 else np.tile(mono[:, None], (1, channels))


def nan_inf(p: Path) -> None:
    data = tone(16000, 1.0)
    data[100:200], data[300], data[301] = np.nan, np.inf, -np.inf
    sf.write(p, data.astype(np.float32), 16000, subtype="FLOAT")


def huge_claim(p: Path) -> None:
    sf.write(p, tone(16000, 1.0), 16000, subtype="PCM_16")
    raw = bytearray(p.read_bytes())
    assert raw[36:40] == b"data"
    raw[4:8], raw[40:44] = struct.pack("<I", 0xFFFFFF08), struct.pack("<I", 0xFFFFFF00)  # "4 GB of data"
    p.write_bytes(bytes(raw))


CONVERTED: dict[str, tuple[Callable[[Path], None], float]] = {
    "float-nan-inf": (nan_inf, 1.0),
    "8-bit": (lambda p: sf.write(p, tone(16000, 1.0), 16000, subtype="PCM_U8"), 1.0),
    "8-khz": (lambda p: sf.write(p, tone(8000, 1.0), 8000, subtype="PCM_16"), 1.0),
    "6-channels-44k1": (lambda p: sf.write(p, tone(44100, 1.0, 6), 44100, subtype="PCM_16"), 1.0),
    "24-bit": (lambda p: sf.write(p, tone(16000, 1.0), 16000, subtype="PCM_24"), 1.0),
    "header-claims-gigabytes": (huge_claim, 1.0),
}


@pytest.mark.parametrize("kind", sorted(CONVERTED))
async def test_odd_but_readable_files_are_converted(tmp_path: Path, kind: str) -> None:
    make, seconds = CONVERTED[kind]
    path = tmp_path / f"{kind}.wav"
    make(path)
    inp = open_wav(path, 20, realtime=False, tail_s=0.5)
    frames = [f async for f in inp]
    assert {f.sample_rate for f in frames} == {16000} and {f.num_samples for f in frames} == {320}
    assert len(frames) == inp.frame_count == round((seconds + 0.5) / 0.02)
    audio = np.concatenate([f.samples for f in frames])
    assert np.abs(audio[: 16000 // 2]).max() > 3000  # the tone is there
    assert not audio[-8000 + 400:].any()  # then the tail's silence


def truncated_header(p: Path) -> None:
    sf.write(p, tone(16000, 1.0), 16000, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[:30])


REFUSED: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-length": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated-header": (truncated_header, "a damaged or unsupported WAV file"),
    "not-a-wav": (lambda p: p.write_bytes(b"%PDF-1.4 not audio\n" * 100), "not an audio file"),
    "header-only": (lambda p: sf.write(p, np.zeros(0), 16000, subtype="PCM_16"), "it holds no samples"),
    "directory": (lambda p: p.mkdir(), "it is a directory"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_unreadable_files_are_refused_naming_the_problem(tmp_path: Path, kind: str) -> None:
    make, why = REFUSED[kind]
    path = tmp_path / f"{kind}.wav"
    make(path)
    with pytest.raises(AudioError, match=why) as info:
        open_wav(path, 20, realtime=False)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["zero-length", "not-a-wav", "truncated-header"])
def test_run_refuses_a_bad_input_in_one_line_before_loading_models(tmp_path: Path, kind: str) -> None:
    make, why = REFUSED[kind]
    path = tmp_path / f"{kind}.wav"
    make(path)
    env = {**os.environ, "EDGEAGENT_CONFIG": str(tmp_path / "none.toml")}
    out = subprocess.run([sys.executable, "-m", "edgeagent", "run", "--input", str(path), "--output",
                          str(tmp_path / "reply.wav")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 1, out.stdout + out.stderr
    assert len(lines) == 1 and why in lines[0] and str(path) in lines[0], lines
    assert not (tmp_path / "reply.wav").exists()


async def test_a_long_file_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    """Ten minutes of 48 kHz stereo: read whole (as before) it took ~460 MB of float64; streamed,
    the peak stays a few blocks whatever the length."""
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", 48000, 2, subtype="PCM_16") as fh:
        block = tone(48000, 10.0, 2)
        for _ in range(60):
            fh.write(block)
    inp = WavFileInput(path, realtime=False)
    assert abs(inp.duration - 600.0) < 0.05
    tracemalloc.start()
    try:
        count = 0
        async for _ in inp:
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == inp.frame_count == 30000
    assert inp.fed.is_set()  # run --fast counts its grace from here
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading"
