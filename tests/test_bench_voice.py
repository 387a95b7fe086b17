"""The pure parts of scripts/bench: true end of speech, the scripted mic's pacing, the speaker's
timing, and the report (figures, table, chart, JSON)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from edgeagent.audio.frame import AudioFrame
from edgeagent.bench.scripted import ScriptedMic, Spoken, TimedSpeaker, speech_end, trim
from edgeagent.bench.voice import Turn, chart, figures, table, verdicts

RATE = 16_000


def tone(seconds: float, dbfs: float = -20.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE))


def test_speech_end_is_the_last_loud_block_not_the_length() -> None:
    rng = np.random.default_rng(0)
    signal = np.concatenate([silence(0.3), tone(0.5), silence(0.1), tone(0.2, -30.0), silence(0.4)])
    signal += rng.normal(0, 10 ** (-70 / 20), len(signal))  # room noise far below the threshold
    frame = AudioFrame.from_float(signal, RATE)
    assert abs(speech_end(frame) - 1.1) <= 0.01
    assert abs(trim(frame).duration - 0.8) <= 0.02
    assert speech_end(AudioFrame.from_float(silence(0.5), RATE)) == 0.0
    quiet_tail = AudioFrame.from_float(np.concatenate([tone(0.4), tone(0.3, -60.0)]), RATE)
    assert abs(speech_end(quiet_tail) - 0.4) <= 0.01


async def test_scripted_mic_paces_frames_on_an_absolute_schedule() -> None:
    mic = ScriptedMic(noise_dbfs=None)
    said = AudioFrame.from_float(np.concatenate([tone(0.1), silence(0.1)]), RATE)
    frames: list[AudioFrame] = []
    released: list[float] = []

    async def read(n: int) -> None:
        async for frame in mic:
            released.append(time.monotonic())
            frames.append(frame)
            if len(frames) == 5:
                spoken.append(mic.speak(said))
            if len(frames) == n:
                return

    spoken: list[Spoken] = []
    t0 = time.monotonic()
    await asyncio.wait_for(read(30), 5)
    elapsed = time.monotonic() - t0
    assert 0.58 <= elapsed <= 0.9
    start = mic.start
    for i, (frame, at) in enumerate(zip(frames, released, strict=True)):
        assert frame.num_samples == 320
        assert frame.timestamp == start + i * 0.02
        assert at >= frame.timestamp + 0.02 - 0.002  # released once captured in full
    # The question starts now (frame 5 was just captured): at the current capture time.
    (s,) = spoken
    first = round((s.start - start) * RATE)
    assert 5 * 320 <= first < 5 * 320 + 0.01 * RATE
    assert abs(s.end - (s.start + 0.1)) < 1e-9
    assert abs(s.done - (s.start + 0.2)) < 1e-9
    audio = np.concatenate([f.samples for f in frames])
    assert np.array_equal(audio[first : first + said.num_samples], said.samples)
    assert not np.any(audio[:first]) and not np.any(audio[first + said.num_samples :])
    assert not mic.busy
    await asyncio.wait_for(mic.aclose(), 1)


async def test_scripted_mic_adds_room_noise_under_speech() -> None:
    mic = ScriptedMic(noise_dbfs=-60.0, seed=3)
    it = aiter(mic)
    frame = await asyncio.wait_for(anext(it), 1)
    assert -66 < frame.rms_dbfs() < -54
    await asyncio.wait_for(mic.aclose(), 1)


async def test_timed_speaker_records_the_first_reply_sample(tmp_path: Path) -> None:
    speaker = TimedSpeaker(tmp_path / "out.wav")
    await asyncio.wait_for(speaker.start(), 1)
    await asyncio.sleep(0.05)
    assert speaker.first_sample is None and speaker.quiet_for() == float("inf")
    speaker.arm()
    written = time.monotonic()
    reply = AudioFrame.from_float(np.concatenate([silence(0.005), tone(0.1)]), 22_050)
    await asyncio.wait_for(speaker.write(reply), 2)
    await asyncio.wait_for(speaker.drain(), 2)
    assert speaker.first_sample is not None
    assert written <= speaker.first_sample + 0.011 and speaker.first_sample - written < 0.05
    assert speaker.quiet_for() < 0.2
    first = speaker.first_sample
    await asyncio.wait_for(speaker.write(reply), 2)  # not armed: the first sample stays
    await asyncio.wait_for(speaker.drain(), 2)
    assert speaker.first_sample == first
    await asyncio.wait_for(speaker.aclose(), 2)
    assert (tmp_path / "out.wav").stat().st_size > 44


def _turns(e2e: list[float | None], step: float) -> list[Turn]:
    return [Turn(f"question {i}?", heard=f"question {i}", reply="Yes.", e2e_ms=e,
                 marks={} if e is None else {"vad": step, "stt": 2 * step, "llm": 3 * step, "tts": 3.5 * step})
            for i, e in enumerate(e2e)]


def test_segments_add_up_to_the_latency() -> None:
    turn = Turn("q", e2e_ms=600.0, marks={"vad": 40.0, "stt": 400.0, "turn": 380.0, "llm": 450.0, "tts": 700.0})
    seg = turn.segments()
    assert seg == {"vad": 40.0, "stt": 360.0, "turn": 0.0, "llm": 50.0, "tts": 150.0, "out": 0.0}
    assert sum(seg.values()) == 600.0
    assert Turn("q").segments() == {}


def test_report_targets_table_chart_and_json(tmp_path: Path) -> None:
    session = _turns([500.0 + 10 * i for i in range(10)], 100.0)
    baseline = _turns([2000.0 + 20 * i for i in range(10)], 500.0)
    fig = figures(session, baseline, idle_cpu=4.0, rss_mb=700.0, n=10)
    assert fig["e2e_p50_ms"] == 545.0 and fig["e2e_p90_ms"] == 580.0
    assert abs(fig["speedup_vs_sequential"] - 2090.0 / 545.0) < 1e-9
    assert fig["missed"] == [] and all(t["ok"] for t in fig["targets"].values())
    text = table(fig)
    assert "question 3?" in text and "p50" in text and "2090" in text
    assert "MISSED" not in verdicts(fig)
    png = chart(fig, tmp_path / "sub" / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(fig))["session"]["turns"][0]["marks"]["stt"] == 200.0

    slow = _turns([900.0, None, 1200.0, 1100.0] + [800.0] * 6, 100.0)
    fig = figures(slow, None, idle_cpu=20.0, rss_mb=1500.0, n=10)
    assert fig["missed"] == ["e2e_p50_ms", "e2e_p90_ms", "idle_cpu_pct", "peak_rss_mb", "answered_fraction"]
    assert "speedup_vs_sequential" not in fig["targets"]  # no baseline: not measured, not missed
    assert "MISSED" in verdicts(fig) and " - " in table(fig)
    chart(fig, tmp_path / "slow.png")
