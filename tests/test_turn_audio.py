"""Smart Turn v3 (the audio end-of-turn model) and the paused questions: the real model, espeak-ng speech."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.pauses import PAUSE_RANGE_S, PAUSED, VOICES, make_paused
from edgeagent.bench.scripted import espeak, trim
from edgeagent.errors import ModelError
from edgeagent.model_files.manifest import model_path
from edgeagent.voice import audio_turn
from edgeagent.voice.audio_turn import SmartTurn

SR = RECOGNITION_RATE


@pytest.fixture(scope="module")
def smart_turn() -> Iterator[SmartTurn]:
    model = SmartTurn()
    yield model
    asyncio.run(asyncio.wait_for(model.aclose(), 10))


def spoken(text: str, voice: str = "en-us", silence_s: float = 0.3) -> AudioFrame:
    return AudioFrame.concat([trim(espeak(text, voice)), AudioFrame.silence(silence_s, SR)])


def test_mel_filters_are_whispers() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    theirs = FeatureExtractor.get_mel_filters(SR, audio_turn.N_FFT, audio_turn.N_MELS)
    np.testing.assert_allclose(audio_turn.mel_filters(), theirs, rtol=1e-5, atol=1e-7)


def test_features_pad_at_the_start_and_keep_the_last_8_s() -> None:
    rng = np.random.default_rng(0)
    short = AudioFrame.from_float(0.1 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR), SR)
    feats = audio_turn.features(short)
    assert feats.shape == (1, 80, 800) and feats.dtype == np.float32
    floor = feats.min()
    assert np.all(feats[0, :, :690] == floor)  # 7 s of padding before the second of tone
    assert np.all(feats[0, :, 710:].max(axis=0) > floor + 1.0)
    assert feats.max() - floor == pytest.approx(2.0)  # log10 clamped 8 below its max, / 4
    long = AudioFrame.from_float(rng.normal(0, 0.1, 10 * SR), SR)
    np.testing.assert_array_equal(audio_turn.features(long),
                                  audio_turn.features(long.slice(2 * SR)))


def test_complete_question_sounds_finished(smart_turn: SmartTurn) -> None:
    assert smart_turn.path == model_path(audio_turn.MODEL_NAME)
    complete = spoken("What is the capital of France?")
    p = smart_turn.probability_sync(complete)
    assert 0.5 < p <= 1.0
    again = asyncio.run(asyncio.wait_for(smart_turn.probability(complete), 30))
    assert again == pytest.approx(p, abs=1e-6)


def test_other_rate_is_refused(smart_turn: SmartTurn) -> None:
    with pytest.raises(ValueError, match="needs 16000 Hz audio, got 8000 Hz"):
        smart_turn.probability_sync(AudioFrame.silence(1.0, 8000))


def test_missing_model_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="edgeagent models pull smart-turn-v3"):
        SmartTurn(tmp_path / "nope.onnx")
    monkeypatch.setenv("EDGEAGENT_MODELS", str(tmp_path))
    with pytest.raises(ModelError, match="missing; fix: edgeagent models pull smart-turn-v3"):
        SmartTurn()


def test_paused_questions() -> None:
    assert len(PAUSED) >= 14 and len(VOICES) >= 2
    qs = make_paused(4, seed=3)
    assert [q.voice for q in qs] == ["en-us", "en-gb", "en-us", "en-gb"]
    assert [q.pause_s for q in make_paused(4, seed=3)] == [q.pause_s for q in qs]
    for q, (fragment, rest) in zip(qs, PAUSED, strict=False):
        assert (q.fragment, q.rest, q.text) == (fragment, rest, f"{fragment} {rest}")
        assert PAUSE_RANGE_S[0] <= q.pause_s <= PAUSE_RANGE_S[1]
        assert q.audio.sample_rate == SR and trim(q.audio).num_samples == q.audio.num_samples
        end = round(q.fragment_end_s * SR)
        assert 0.3 < q.fragment_end_s < q.audio.duration - q.pause_s
        assert np.any(q.audio.samples[end - 160:end]) and np.any(q.audio.samples[end + round(q.pause_s * SR):])
        assert not np.any(q.audio.samples[end:end + round(q.pause_s * SR)])
    second_round = make_paused(len(PAUSED) + 1)[-1]
    assert (second_round.fragment, second_round.voice) == (PAUSED[0][0], "en-gb")


async def test_the_voice_waits_while_a_reply_is_starting(smart_turn: SmartTurn) -> None:
    """The model yields the cores to a starting reply (REPLY_START), and only for a bounded time."""
    from edgeagent.urgency import REPLY_START, REPLY_START_WAIT_S

    complete = spoken("What is the capital of France?")
    release = REPLY_START.acquire()
    try:
        judged = asyncio.ensure_future(smart_turn.probability(complete))
        await asyncio.sleep(REPLY_START_WAIT_S / 4)
        assert not judged.done()
        release()
        release()  # a second release does nothing
        assert 0.0 <= await asyncio.wait_for(judged, 30) <= 1.0
        release = REPLY_START.acquire()  # a hold that is never let go costs one bounded wait
        start = asyncio.get_running_loop().time()
        await asyncio.wait_for(smart_turn.probability(complete), 30)
        assert asyncio.get_running_loop().time() - start >= REPLY_START_WAIT_S
    finally:
        release()
    assert not REPLY_START.held
