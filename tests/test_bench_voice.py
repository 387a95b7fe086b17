"""The pure parts of scripts/bench: true end of speech, the scripted mic's pacing, the speaker's
timing, the paused questions' one-turn verdict, the CPU hog, and the report (figures, table, chart, JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeagent.audio.frame import AudioFrame
from edgeagent.bench.hog import CpuHog
from edgeagent.bench.report import (
    CUT_OFF,
    NO_TURN,
    ONE_TURN,
    SPLIT,
    PausedTurn,
    Turn,
    chart,
    figures,
    fill_from_metrics,
    one_turn_verdict,
    pause_table,
    preempted,
    table,
    verdicts,
)
from edgeagent.bench.scripted import ScriptedMic, Spoken, TimedSpeaker, speech_end, trim
from edgeagent.voice.events import TurnMetrics

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
    session = _turns([300.0 + 10 * i for i in range(10)], 60.0)
    baseline = _turns([2000.0 + 20 * i for i in range(10)], 500.0)
    fig = figures(session, baseline, idle_cpu=4.0, rss_mb=700.0, n=10)
    assert fig["e2e_p50_ms"] == 345.0 and fig["e2e_p90_ms"] == 380.0
    assert abs(fig["speedup_vs_sequential"] - 2090.0 / 345.0) < 1e-9
    assert fig["missed"] == [] and all(t["ok"] for t in fig["targets"].values())
    assert set(fig["targets"]) == {"e2e_p50_ms", "e2e_p90_ms", "speedup_vs_sequential", "idle_cpu_pct",
                                   "peak_rss_mb", "answered_fraction"}  # no paused questions, no hog run
    text = table(fig)
    assert "question 3?" in text and "p50" in text and "2090" in text
    assert "MISSED" not in verdicts(fig) and pause_table(fig) == ""
    png = chart(fig, tmp_path / "sub" / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(fig))["session"]["turns"][0]["marks"]["stt"] == 120.0

    slow = _turns([900.0, None, 1200.0, 1100.0] + [800.0] * 6, 100.0)
    fig = figures(slow, None, idle_cpu=20.0, rss_mb=1500.0, n=10)
    assert fig["missed"] == ["e2e_p50_ms", "e2e_p90_ms", "idle_cpu_pct", "peak_rss_mb", "answered_fraction"]
    assert "speedup_vs_sequential" not in fig["targets"]  # no baseline: not measured, not missed
    assert "MISSED" in verdicts(fig) and " - " in table(fig)
    chart(fig, tmp_path / "slow.png")

    # Issue 16's limits: 460 ms is over p50's 450, a speed-up of 2.5 under 3.
    fig = figures(_turns([460.0] * 10, 50.0), _turns([1150.0] * 10, 300.0), idle_cpu=4.0, rss_mb=700.0, n=10)
    assert fig["missed"] == ["e2e_p50_ms", "speedup_vs_sequential"]


def test_one_turn_verdict_from_the_commit_times() -> None:
    rest_at = 10.0  # capture time of the first word after the pause
    assert one_turn_verdict([10.9], rest_at) == ONE_TURN
    assert one_turn_verdict([9.7], rest_at) == CUT_OFF  # it answered the fragment
    assert one_turn_verdict([9.7, 11.2], rest_at) == CUT_OFF  # ... and then the rest as a second turn
    assert one_turn_verdict([10.4, 11.5], rest_at) == SPLIT
    assert one_turn_verdict([], rest_at) == NO_TURN


def _paused(verdict: str, *, hit: bool | None = None, misses: int = 0) -> PausedTurn:
    commits = {ONE_TURN: [700.0], CUT_OFF: [-450.0, 900.0], SPLIT: [200.0, 800.0], NO_TURN: []}[verdict]
    return PausedTurn("What is the capital of Japan?", "What is the capital of", "en-gb", 0.8, verdict,
                      heard=[f"part {i}" for i in range(len(commits))], commit_ms=commits, reply="Tokyo.",
                      reply_ms=None if verdict == NO_TURN else 400.0, preempt_hit=hit, preempt_misses=misses)


def test_figures_paused_questions_preemptive_replies_and_hog(tmp_path: Path) -> None:
    session = _turns([300.0 + 10 * i for i in range(4)], 60.0)  # p90 330
    session[0].preempt_hit, session[1].preempt_hit, session[1].preempt_misses = True, False, 2
    paused = [_paused(ONE_TURN, hit=True, misses=1), _paused(ONE_TURN), _paused(CUT_OFF), _paused(ONE_TURN)]
    hog = _turns([350.0, 380.0, 420.0, 480.0], 70.0)  # p90 480
    fig = figures(session, None, idle_cpu=4.0, rss_mb=700.0, n=4, paused=paused, hog=hog)
    assert fig["pause_one_turn"] == 3 and fig["pause_questions"] == 4
    assert fig["targets"]["pause_one_turn"]["limit"] == 4  # 11 of 12: the same share of 4 leaves no miss
    assert fig["preempt_hits"] == 2 and fig["preempt_misses"] == 3
    assert fig["hog_p50_ms"] == 400.0 and fig["hog_p90_ms"] == 480.0
    assert abs(fig["hog_p90_ratio"] - 480.0 / 330.0) < 1e-9 and fig["targets"]["hog_p90_ratio"]["ok"]
    assert fig["missed"] == ["pause_one_turn"]
    assert "hog_p90_ms" not in fig["targets"] and "preempt_hits" not in fig["targets"]
    text = table(fig)
    assert "hog e2e" in text and "2 kept, 3 dropped" in text
    rows = text.splitlines()
    assert " P " in rows[2] and " -2 " in rows[3]
    pauses = pause_table(fig)
    assert "3 of 4 taken as one turn" in pauses and "cut off" in pauses and "-450" in pauses
    assert "MISSED" in verdicts(fig) and "pause_one_turn" in verdicts(fig)
    chart(json.loads(json.dumps(fig)), tmp_path / "hog.png")

    twelve = [_paused(ONE_TURN)] * 11 + [_paused(CUT_OFF)]
    slow_hog = _turns([700.0] * 4, 70.0)
    fig = figures(session, None, idle_cpu=4.0, rss_mb=700.0, n=4, paused=twelve, hog=slow_hog)
    assert fig["pause_one_turn"] == 11 and fig["targets"]["pause_one_turn"] == {
        "limit": 11, "value": 11, "ok": True, "higher_is_better": True}
    assert fig["missed"] == ["hog_p90_ratio"]  # 700 / 330 > 1.5


def test_turn_from_the_session_metrics_with_and_without_preemption() -> None:
    m = TurnMetrics("t1", "what is the capital of japan", end_of_utterance_delay=0.25, transcription_delay=0.2,
                    llm_ttft=0.1, tts_ttfa=0.08, e2e_latency=0.4, llm_ttft_after_speech=0.3,
                    tts_ttfa_after_speech=0.38)
    turn = Turn("What is the capital of Japan?", e2e_ms=450.0)
    fill_from_metrics(turn, [m])
    assert turn.heard == "what is the capital of japan"
    assert turn.marks == pytest.approx({"vad": 50.0, "stt": 250.0, "turn": 300.0, "llm": 350.0, "tts": 430.0})
    assert (turn.preempt_hit, turn.preempt_misses) == (None, 0)  # a session that does not report them
    # A session that does: the reply spoken is the timed turn's; drops add up over the question's turns.
    dropped = SimpleNamespace(e2e_latency=None, preempt_hit=None, preempt_misses=2)
    kept = SimpleNamespace(e2e_latency=0.4, preempt_hit=True, preempt_misses=1)
    assert preempted([dropped, kept]) == (True, 3)
    assert preempted([SimpleNamespace(e2e_latency=0.5, preempt_hit=False, preempt_misses=0)]) == (False, 0)
    assert preempted([]) == (None, 0)


def _nice(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _running_python(pid: int) -> bool:
    """The process has become the busy loop: ``nice`` has set the priority and exec'd python.
    (Its own command line, ``nice -n 19 python -c ...``, holds "-c" too: a look for "-c" could
    catch it before it set the priority, and read nice 0: 1 clean-clone CI run in 3 did.)"""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == sys.executable.encode()
    except FileNotFoundError:
        return False


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_cpu_hog_runs_at_nice_19_and_is_gone_after() -> None:
    with CpuHog(2) as hog:
        pids = hog.pids
        assert len(pids) == 2
        for pid in pids:
            await _until(lambda pid=pid: _running_python(pid))
            assert _nice(pid) == 19
        assert all(p.poll() is None for p in hog.procs)  # busy, not exited
    assert hog.pids == [] and all(_gone(pid) for pid in pids)

    hog = CpuHog()
    assert hog.processes == os.cpu_count()
    try:
        with hog:
            pids = hog.pids
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
    except KeyboardInterrupt:
        pass
    assert len(pids) == os.cpu_count() and all(_gone(pid) for pid in pids)
