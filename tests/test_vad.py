"""Silero VAD on real speech (espeak-ng and Piper), and the pure segmenter."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from speech import espeak, piper

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.errors import ModelError
from edgeagent.metrics import VADMetrics
from edgeagent.registry import provider_class
from edgeagent.vad.base import VADEvent, VADEventType, VADOptions
from edgeagent.vad.segmenter import Segmenter, SegmenterState
from edgeagent.vad.silero import END_LAG, WINDOW_S, SileroVAD

RATE = 16_000
TOLERANCE = 0.100  # issue 3: segments within 100 ms


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


async def run_vad(vad: SileroVAD, frames: list[AudioFrame], timeout: float = 60.0) -> list[VADEvent]:
    """Push every frame, end the input, collect all events (bounded in time)."""
    stream = vad.stream()
    try:
        for f in frames:
            stream.push(f)
        stream.end_input()

        async def collect() -> list[VADEvent]:
            return [ev async for ev in stream]

        return await asyncio.wait_for(collect(), timeout)
    finally:
        await stream.aclose()


@dataclass(frozen=True)
class Segment:
    start: float
    end: float


def segments(events: list[VADEvent]) -> list[Segment]:
    """Speech segments as the VAD reports them (see the SileroVAD module docstring)."""
    out = []
    for ev in events:
        if ev.type is VADEventType.END_OF_SPEECH:
            end = ev.timestamp - ev.silence_duration
            out.append(Segment(end - ev.speech_duration, end))
    return out


def energy_extent(frame: AudioFrame, below_peak_db: float = 45.0) -> tuple[float, float]:
    """First and last 10 ms of ``frame`` whose level is within 45 dB of its loudest 10 ms.

    This is the fair reference for "where the speech is": espeak-ng and Piper
    put a few to tens of ms of near-silence around the words, which is not
    speech; a threshold relative to the utterance's own peak treats the quiet
    espeak and the loud Piper voice alike and still keeps soft onsets and
    final fricatives (they sit 20-40 dB below the vowels).
    """
    x = frame.to_float32().astype(np.float64)
    n = RATE // 100
    rms = np.sqrt(np.mean(x[: len(x) // n * n].reshape(-1, n) ** 2, axis=1))
    db = 20 * np.log10(rms + 1e-12)
    loud = np.nonzero(db > db.max() - below_peak_db)[0]
    return loud[0] * n / RATE, (loud[-1] + 1) * n / RATE


UTTERANCES = [
    (espeak, "The quick brown fox jumps over the lazy dog"),
    (piper, "Please turn on the kitchen lights"),
    (espeak, "What is the weather like tomorrow"),
    (piper, "How many legs does a spider have"),
    (espeak, "Play some music in the living room"),
    (piper, "Remind me to call my mother tonight"),
]
LEAD = 0.7
GAPS = [1.0, 1.5, 1.2, 1.0, 2.0, 1.0]  # after each utterance; all > min_silence (0.55 s)


NOISE_DBFS = -60.0


@pytest.fixture(scope="module")
def known_file() -> tuple[AudioFrame, list[Segment]]:
    """Utterances from both voices separated by known silences, and where the speech is.

    A -60 dBFS noise floor is added, as any real microphone has: digital zeros
    are not a realistic input (Silero scores them oddly right after speech).
    """
    parts = [AudioFrame.silence(LEAD, RATE)]
    truth: list[Segment] = []
    t = LEAD
    for (voice, text), gap in zip(UTTERANCES, GAPS, strict=True):
        utt = voice(text)
        a, b = energy_extent(utt)
        truth.append(Segment(t + a, t + b))
        parts += [utt, AudioFrame.silence(gap, RATE)]
        t += utt.duration + gap
    clean = AudioFrame.concat(parts).to_float32()
    noise = np.random.default_rng(7).standard_normal(len(clean)) * 10 ** (NOISE_DBFS / 20)
    return AudioFrame.from_float(clean + noise, RATE), truth


async def test_finds_known_segments_within_100ms(
    vad: SileroVAD, known_file: tuple[AudioFrame, list[Segment]]
) -> None:
    audio, truth = known_file
    events = await run_vad(vad, audio.chunks(320))  # 20 ms frames, like a microphone
    found = segments(events)
    assert len(found) == len(truth), f"found {found}, expected {truth}"
    errors = [(g.start - w.start, g.end - w.end) for g, w in zip(found, truth, strict=True)]
    print("VAD boundary errors (ms):", [(round(a * 1000), round(b * 1000)) for a, b in errors])
    for got, want in zip(found, truth, strict=True):
        assert abs(got.start - want.start) <= TOLERANCE, (got, want)
        assert abs(got.end - want.end) <= TOLERANCE, (got, want)
    starts = [e for e in events if e.type is VADEventType.START_OF_SPEECH]
    assert len(starts) == len(truth)
    assert all(not math.isnan(e.probability) for e in events)


async def test_start_and_end_carry_padded_audio(
    vad: SileroVAD, known_file: tuple[AudioFrame, list[Segment]]
) -> None:
    audio, _ = known_file
    events = await run_vad(vad, [audio])
    pad = vad.options.prefix_padding
    for ev in events:
        if ev.type is VADEventType.START_OF_SPEECH:
            (frame,) = ev.frames
            assert frame.sample_rate == RATE
            assert frame.duration == pytest.approx(pad + ev.speech_duration, abs=WINDOW_S + 1e-6)
        elif ev.type is VADEventType.END_OF_SPEECH:
            (frame,) = ev.frames
            whole = pad + ev.speech_duration + ev.silence_duration
            assert frame.duration == pytest.approx(whole, abs=WINDOW_S + 1e-6)
            assert ev.silence_duration >= vad.options.min_silence_duration - 1e-6
            assert not ev.speaking
        else:
            assert ev.frames == ()
    # The END frame holds the speech itself: it is loud, unlike the silence between.
    ends = [e for e in events if e.type is VADEventType.END_OF_SPEECH]
    assert all(e.frames[0].rms_dbfs() > -40 for e in ends)


async def test_first_quiet_window_is_reported_before_the_end(
    vad: SileroVAD, known_file: tuple[AudioFrame, list[Segment]]
) -> None:
    """The session starts its speculative STT decode at the first quiet INFERENCE event."""
    audio, _ = known_file
    events = await run_vad(vad, [audio])
    inference = [e for e in events if e.type is VADEventType.INFERENCE]
    first_quiet = [
        cur.timestamp
        for prev, cur in itertools.pairwise(inference)
        if prev.speaking and prev.silence_duration == 0 and cur.speaking and cur.silence_duration > 0
    ]
    for end in (e for e in events if e.type is VADEventType.END_OF_SPEECH):
        quiet_at = max(t for t in first_quiet if t < end.timestamp)
        # Silence is counted from one window (END_LAG) before the first quiet window.
        wait = vad.options.min_silence_duration - END_LAG
        assert end.timestamp - quiet_at == pytest.approx(wait, abs=WINDOW_S + 1e-6)


async def test_any_frame_length_gives_the_same_result(vad: SileroVAD) -> None:
    speech = espeak("Turn off the radio")
    audio = AudioFrame.concat([AudioFrame.silence(0.4, RATE), speech, AudioFrame.silence(1.0, RATE)])
    reference = await run_vad(vad, [audio])
    for size in (1, 100, 512, 4000):
        events = await run_vad(vad, audio.chunks(size))
        assert [(e.type, e.probability) for e in events] == [
            (e.type, e.probability) for e in reference
        ], size


@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
async def test_wrong_rate_is_converted(
    vad: SileroVAD, known_file: tuple[AudioFrame, list[Segment]], rate: int
) -> None:
    audio, truth = known_file
    other = resample(audio, rate)
    frames = other.chunks(rate // 50)
    found = segments(await run_vad(vad, frames))
    assert len(found) == len(truth)
    # 8 kHz removes everything above 4 kHz, where the 16 kHz reference saw the quiet
    # fricative endings ("-s", "-f"): the VAD may end such an utterance up to ~0.2 s
    # early (seen: 0.18 s). Other rates keep the 16 kHz bound plus one window.
    slack = 0.15 if rate < RECOGNITION_RATE else 0.05
    for got, want in zip(found, truth, strict=True):
        assert abs(got.start - want.start) <= TOLERANCE + slack
        assert abs(got.end - want.end) <= TOLERANCE + slack


async def test_rate_changes_inside_a_stream_lose_no_audio(vad: SileroVAD) -> None:
    frames = [
        *AudioFrame.silence(1.0, 48_000).chunks(960),
        *AudioFrame.silence(1.0, RATE).chunks(320),
        *AudioFrame.silence(1.0, 8_000).chunks(160),
    ]
    events = await run_vad(vad, frames)
    assert events[-1].timestamp == pytest.approx(3.0, abs=WINDOW_S)


async def test_nan_clipped_and_empty_frames_do_not_crash(vad: SileroVAD) -> None:
    rng = np.random.default_rng(1)
    nan = np.full(3200, np.nan, dtype=np.float32)
    clipped = np.sign(rng.standard_normal(16000)).astype(np.float32) * 10.0  # full-scale square
    frames = [
        AudioFrame.from_float(nan, RATE),
        AudioFrame.from_float(clipped, RATE),
        AudioFrame.from_int16(np.zeros(0, np.int16), RATE),
        AudioFrame.from_int16(np.full(7, 32767, np.int16), RATE),
        espeak("Hello there"),
        AudioFrame.from_int16(np.full(5000, -32768, np.int16), RATE),
    ]
    events = await run_vad(vad, frames)
    assert all(0.0 <= e.probability <= 1.0 for e in events)
    assert events and events[-1].timestamp > 1.0
    assert await run_vad(vad, []) == []


async def test_flush_closes_an_open_utterance(vad: SileroVAD) -> None:
    stream = vad.stream()
    try:
        stream.push(AudioFrame.concat([AudioFrame.silence(0.3, RATE), piper("Good morning everyone")]))
        stream.flush()

        async def until_end() -> VADEvent:
            async for ev in stream:
                if ev.type is VADEventType.END_OF_SPEECH:
                    return ev
            raise AssertionError("no END_OF_SPEECH after flush")

        end = await asyncio.wait_for(until_end(), 30)
        assert end.speech_duration > 0.5
    finally:
        await stream.aclose()


async def test_frames_carry_capture_time(vad: SileroVAD) -> None:
    speech = espeak("Lights on")
    audio = AudioFrame.concat([AudioFrame.silence(1.0, RATE), speech, AudioFrame.silence(1.0, RATE)])
    frames = [
        AudioFrame(f.samples, RATE, 500.0 + i * 0.02) for i, f in enumerate(audio.chunks(320))
    ]
    events = await run_vad(vad, frames)
    start = next(e for e in events if e.type is VADEventType.START_OF_SPEECH)
    frame = start.frames[0]
    assert frame.timestamp is not None
    expected = 500.0 + start.timestamp - start.speech_duration - vad.options.prefix_padding
    assert frame.timestamp == pytest.approx(expected, abs=WINDOW_S + 1e-6)


async def test_reports_metrics(vad: SileroVAD) -> None:
    got: list[object] = []
    vad.on_metrics(got.append)
    await run_vad(vad, [AudioFrame.silence(2.5, RATE)])
    records = [m for m in got if isinstance(m, VADMetrics)]
    assert len(records) >= 2
    assert sum(m.frames for m in records) == math.ceil(2.5 / WINDOW_S)
    assert all(m.window_ms == pytest.approx(32.0) and m.inference_ms_avg > 0 for m in records)


def test_broken_model_file_names_file_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError) as err:
        SileroVAD(bad)
    assert str(bad) in str(err.value) and "edgeagent models pull silero-vad" in str(err.value)


def test_registry_names_silero() -> None:
    assert provider_class("vad", "silero") is SileroVAD


# -- the pure segmenter -------------------------------------------------------

W = 0.032


def feed(seg: Segmenter, probs: list[float]) -> list[tuple[SegmenterState, bool, bool]]:
    out = []
    for p in probs:
        u = seg.process(W, p)
        out.append((u.state, u.started, u.ended))
    return out


def opts(**kw: float) -> VADOptions:
    base = {"min_speech_duration": 0.064, "min_silence_duration": 0.096, "prefix_padding": 0.0}
    return VADOptions(**{**base, **kw})


def test_segmenter_stays_quiet_on_silence_and_short_blips() -> None:
    seg = Segmenter(opts())
    steps = feed(seg, [0.0, 0.1, 0.9, 0.2, 0.0])  # one speech window < min_speech
    assert [s for s, _, _ in steps] == [
        SegmenterState.QUIET,
        SegmenterState.QUIET,
        SegmenterState.STARTING,
        SegmenterState.QUIET,
        SegmenterState.QUIET,
    ]
    assert not any(started or ended for _, started, ended in steps)


def test_segmenter_starts_after_min_speech_and_ends_after_min_silence() -> None:
    seg = Segmenter(opts())
    probs = [0.0, 0.0, 0.8, 0.9, 0.9, 0.1, 0.1, 0.1, 0.0]
    updates = [seg.process(W, p) for p in probs]
    started = [i for i, u in enumerate(updates) if u.started]
    ended = [i for i, u in enumerate(updates) if u.ended]
    assert started == [3]  # two speech windows = 64 ms
    assert updates[3].speech_start == pytest.approx(2 * W)
    assert ended == [7]  # three quiet windows = 96 ms
    end = updates[7]
    assert end.speech_end == pytest.approx(5 * W)
    assert end.speech_duration == pytest.approx(3 * W)
    assert end.silence_duration == pytest.approx(3 * W)
    assert end.state is SegmenterState.QUIET and not end.speaking
    assert [u.first_quiet for u in updates].count(True) == 1 and updates[5].first_quiet
    assert updates[8].state is SegmenterState.QUIET and updates[8].speech_duration == 0.0


def test_segmenter_hysteresis() -> None:
    seg = Segmenter(opts(activation_threshold=0.5))  # deactivation 0.35
    # 0.4 cannot start speech...
    assert [s for s, _, _ in feed(seg, [0.4, 0.4, 0.4])] == [SegmenterState.QUIET] * 3
    # ...but keeps it going once started.
    steps = feed(seg, [0.6, 0.6, 0.4, 0.4, 0.4, 0.4, 0.3])
    assert steps[1][1]  # started
    assert all(s is SegmenterState.SPEAKING for s, _, _ in steps[1:6])
    assert steps[6][0] is SegmenterState.STOPPING


def test_segmenter_short_pause_does_not_end_speech() -> None:
    seg = Segmenter(opts())
    updates = [seg.process(W, p) for p in [0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9]]
    assert not any(u.ended for u in updates)
    assert updates[3].state is SegmenterState.STOPPING
    assert updates[5].state is SegmenterState.SPEAKING
    assert updates[6].silence_duration == 0.0
    assert updates[6].speech_duration == pytest.approx(7 * W)


def test_segmenter_nan_is_silence_and_finish_closes() -> None:
    seg = Segmenter(opts())
    assert seg.finish() is None
    feed(seg, [0.9, 0.9, 0.9])
    u = seg.process(W, float("nan"))
    assert u.state is SegmenterState.STOPPING
    end = seg.finish()
    assert end is not None and end.ended and end.speech_duration == pytest.approx(3 * W)
    assert seg.state is SegmenterState.QUIET


def test_segmenter_zero_min_speech_starts_at_once() -> None:
    seg = Segmenter(opts(min_speech_duration=0.0))
    u = seg.process(W, 0.7)
    assert u.started and u.state is SegmenterState.SPEAKING and u.speech_start == 0.0


@pytest.mark.parametrize(
    "kw", [{"activation_threshold": 0.0}, {"activation_threshold": 0.5, "deactivation_threshold": 0.7}]
)
def test_segmenter_rejects_bad_thresholds(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Segmenter(opts(**kw))


def test_segmenter_end_lag_moves_the_end_back() -> None:
    seg = Segmenter(opts(), end_lag=W)
    updates = [seg.process(W, p) for p in [0.9, 0.9, 0.9, 0.1, 0.1, 0.0]]
    assert updates[1].started and updates[1].speech_duration == pytest.approx(2 * W)
    assert updates[2].silence_duration == 0.0
    assert updates[3].first_quiet and updates[3].silence_duration == pytest.approx(2 * W)
    end = updates[4]  # silence counted from one window back: 3 windows after 2 quiet ones
    assert end.ended and end.speech_end == pytest.approx(2 * W)
    assert end.speech_duration == pytest.approx(2 * W)
    assert end.speech_start == pytest.approx(end.time - end.speech_duration - end.silence_duration)
