"""``edgeagent devices --test`` on the PulseAudio null sinks scripts/test starts.

A tone played into ``mic_feed`` is what the virtual microphone hears; ``parec`` on
``speaker.monitor`` hears what the command plays back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import PulseDevices

from edgeagent.audio.devices_cli import meter_line

RATE = 16_000


def edgeagent_devices(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    env["EDGEAGENT_CONFIG"] = str(tmp / "none.toml")
    return subprocess.run([sys.executable, "-m", "edgeagent", "devices", "--test", *args], capture_output=True,
                          text=True, timeout=90, env=env)


def background(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.pulse
def test_records_plays_back_and_reports(pulse: PulseDevices, tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    t = np.arange(12 * RATE) / RATE
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), RATE, subtype="PCM_16")
    heard = tmp_path / "speaker.wav"
    player = background("paplay", f"--device={pulse.mic_sink}", str(tone))
    recorder = background("parec", f"--device={pulse.speaker_monitor}", "--file-format=wav", "--rate=16000",
                          "--channels=1", str(heard))
    try:
        out = edgeagent_devices("--input", "pulse", "--output", "pulse", "--seconds", "1.5", "--json", tmp=tmp_path)
    finally:
        stop(player)
        stop(recorder)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["problems"] == [], report
    for end in ("input", "output"):
        assert report[end]["device"] == "pulse" and report[end]["hostapi"], report
        assert report[end]["rate"] > 0 and report[end]["channels"] >= 1, report
    assert report["input"]["seconds"] == pytest.approx(1.5, abs=0.05), report
    assert 1.2 < report["output"]["seconds"] < 4.5, report
    assert -16 < report["peak_dbfs"] < -6 and -19 < report["rms_dbfs"] < -9, report  # the tone: -10.5 dBFS peak
    meter = [ln for ln in out.stderr.splitlines() if ln.startswith("level [")]
    assert len(meter) >= 10 and "#" in meter[-1], out.stderr  # every 0.1 s, not on a terminal: one per line
    played = sf.read(heard, dtype="float32")[0]
    loud = np.abs(played) > 0.1
    assert loud.sum() / RATE > 1.0, f"the speaker played {loud.sum() / RATE:.2f} s of the tone"


@pytest.mark.pulse
def test_a_microphone_that_does_not_open_is_reported_and_the_speaker_still_tried(
        pulse: PulseDevices, tmp_path: Path) -> None:
    out = edgeagent_devices("--input", "no-such-mic", "--output", "pulse", "--seconds", "1", tmp=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "microphone  did not open" in out.stdout, out.stdout
    assert "speaker     " in out.stdout and "at " in out.stdout.split("speaker", 1)[1], out.stdout
    assert "edgeagent: microphone: " in out.stderr and "no-such-mic" in out.stderr, out.stderr


def test_the_meter_spans_minus_60_to_0_dbfs() -> None:
    assert meter_line(float("-inf"), 10) == "[..........]   -inf dBFS"
    assert meter_line(-30.0, 10) == "[#####.....]  -30.0 dBFS"
    assert meter_line(3.0, 10) == "[##########]    3.0 dBFS"
