"""Remote config changes put into effect on a running AgentSession (edgeagent.control.live).

Every change goes through a real :class:`ConfigStore` (in a temp dir) with the
:class:`LiveApplier` as its apply hook, as RoomControl does it, on a session of the
default models. The session hears a WAV file at real-time pace (the product's own
``edgeagent run --input`` input) and speaks into a WAV file; the volume test renders in
real time, as a sound card would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from live import bounded, words
from speech import espeak, piper, save

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.wav import WavFileInput, WavFileOutput, read_wav
from edgeagent.config import Config
from edgeagent.config.voice import ActivationConfig
from edgeagent.control.errors import ControlError
from edgeagent.control.live import LiveApplier
from edgeagent.control.store import ConfigStore
from edgeagent.tts.piper import PiperTTS
from edgeagent.voice import Agent, AgentSession, AgentState, Models, WakeWordDetectedEvent
from edgeagent.wake.oww import OpenWakeWord

RATE = 16_000
SENTENCE = "The weather today is sunny with a light breeze from the west."


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    """The remote config over the defaults, kept in a temp dir."""
    return ConfigStore.open(Config(), tmp_path / "remote-config.json")


@pytest.fixture(autouse=True)
async def wake_as_loaded(models: Models) -> AsyncIterator[None]:
    """The shared wake stage back to its words and threshold after each test."""
    yield
    wake = models.wake
    assert isinstance(wake, OpenWakeWord)
    threshold = ActivationConfig().wake_threshold
    if wake.words != ("hey_jarvis",):
        loaded = await asyncio.to_thread(wake.load_words, ("hey_jarvis",))
        await bounded(wake.use_words(loaded, threshold), "restoring the wake words", 10)
    wake.set_threshold(threshold)


class Running:
    """A started session on a WAV input, its output, and the applier of its changes."""

    def __init__(self, session: AgentSession, out: WavFileOutput, applier: LiveApplier) -> None:
        self.session, self.out, self.applier = session, out, applier
        self.events: list[WakeWordDetectedEvent] = []
        session.on("wake_word_detected", self.events.append)


@contextlib.asynccontextmanager
async def running(models: Models, store: ConfigStore, tmp_path: Path, *, heard: AudioFrame | None = None,
                  realtime_out: bool = False) -> AsyncIterator[Running]:
    """A session of ``store.config`` (wake mode) on ``heard`` (default: a minute of silence) at
    real-time pace."""
    wav_in = save(heard if heard is not None else AudioFrame.silence(60.0, RATE), tmp_path / "heard.wav")
    inp = WavFileInput(wav_in, realtime=True)
    out = WavFileOutput(tmp_path / "said.wav", models.tts.sample_rate, realtime=realtime_out)
    cfg = store.config
    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
                           audio_turn=models.audio_turn,
                           activation=cfg.activation, turn=cfg.turn, echo_cancellation=False,
                           ignore_own_playback=False)
    applier = LiveApplier(session, models, out, cfg)
    await bounded(out.start(), "opening the output", 10)
    await bounded(session.start(Agent(instructions=cfg.agent.instructions), input=inp, output=out),
                  "starting the session", 30)
    try:
        yield Running(session, out, applier)
    finally:
        await bounded(applier.aclose(), "closing the applier", 10)
        await bounded(session.aclose(), "closing the session", 15)
        await bounded(inp.aclose(), "closing the input", 5)
        await bounded(out.aclose(), "closing the output", 5)


async def reply_to(session: AgentSession, question: str) -> str:
    handle = session.generate_reply(user_input=question)
    await bounded(handle.wait_for_playout(), f"the reply to {question!r}", 60)
    return handle.text


async def test_new_instructions_change_the_next_reply(models: Models, store: ConfigStore, tmp_path: Path) -> None:
    """The agent's name, set in its instructions while the session runs, is in its next answer.

    (SmolLM2-135M ignores "answer with exactly the word banana", and copies its previous answer
    when the history holds the same question: the control is the same question asked in a
    session of the default instructions.)
    """
    (tmp_path / "control").mkdir()
    async with running(models, store, tmp_path / "control") as r:
        before = await reply_to(r.session, "What is your name?")
    assert "zorblax" not in words(before), before
    async with running(models, store, tmp_path) as r:
        revision, changes = await bounded(store.set({"agent": {"instructions": "Your name is Zorblax."}}, 0,
                                                    r.applier), "the change", 10)
        assert revision == 1 and [c.path for c in changes] == ["agent.instructions"]
        assert r.session.current_agent.instructions == "Your name is Zorblax."
        after = await reply_to(r.session, "What is your name?")
    assert "zorblax" in words(after), after


def wake_audio() -> tuple[AudioFrame, float]:
    """"Hey Jarvis" twice, 4 s apart, and when the first one is over (s).

    espeak-ng at 120 wpm, both at the same place in the wake stream's 80 ms steps: a
    fresh stream scores each at most 0.94, and 0.78 on two steps in a row (the trigger
    level), so a threshold of 0.99 cannot fire and 0.3 does.
    """
    word = espeak("hey jarvis", wpm=120)
    word = AudioFrame.concat([word, AudioFrame.silence((-word.num_samples % 1280) / RATE, RATE)])
    lead, gap = AudioFrame.silence(1.5, RATE), AudioFrame.silence(4.0, RATE)
    return AudioFrame.concat([lead, word, gap, word, AudioFrame.silence(2.0, RATE)]), lead.duration + word.duration


async def test_a_new_wake_threshold_changes_detection_on_the_running_stream(
    models: Models, store: ConfigStore, tmp_path: Path
) -> None:
    """The stream was created at the default; at 0.99 the first "Hey Jarvis" does not fire, at 0.3 the second does."""
    audio, first_over = wake_audio()
    async with running(models, store, tmp_path, heard=audio) as r:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bounded(store.set({"activation": {"wake_threshold": 0.99}}, 0, r.applier), "the change", 10)
        await asyncio.sleep(max(0.0, started + first_over + 1.5 - loop.time()))
        assert r.events == [], "the first wake word fired at threshold 0.99"
        await bounded(store.set({"activation": {"wake_threshold": 0.3}}, 1, r.applier), "the change", 10)
        deadline = loop.time() + 10
        while not r.events:
            assert loop.time() < deadline, "the second wake word did not fire at threshold 0.3"
            await asyncio.sleep(0.05)
        (event,) = r.events
        assert event.word == "hey_jarvis"
        assert event.score >= 0.3, event


async def test_activation_mode_always_to_wake_starts_listening_for_the_wake_word(
    models: Models, tmp_path: Path
) -> None:
    """Started in always mode (no wake word stream); switched to wake, the wake word then fires."""
    store = ConfigStore.open(Config(activation=ActivationConfig(mode="always")), tmp_path / "remote-config.json")
    word = piper("Hey Jarvis.")
    heard = AudioFrame.concat([AudioFrame.silence(2.0, RATE), word, AudioFrame.silence(3.0, RATE)])
    async with running(models, store, tmp_path, heard=heard) as r:
        assert r.session.activation.mode == "always"
        await bounded(store.set({"activation": {"mode": "wake", "listen_s": 6.0}}, 0, r.applier), "the change", 10)
        assert (r.session.activation.mode, r.session.activation.listen_s) == ("wake", 6.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not r.events:
            assert loop.time() < deadline, "no wake word in wake mode"
            await asyncio.sleep(0.05)
        assert [e.word for e in r.events] == ["hey_jarvis"]


def rms(samples: np.ndarray) -> float:
    """RMS of the speech in ``samples`` (not of the gaps: what is above 2% of the peak)."""
    x = samples.astype(np.float64)
    loud = x[np.abs(x) > 0.02 * np.abs(x).max()]
    return float(np.sqrt(np.mean(loud**2)))


async def test_output_volume_half_halves_the_rendered_level(models: Models, store: ConfigStore,
                                                            tmp_path: Path) -> None:
    async with running(models, store, tmp_path, realtime_out=True) as r:
        await bounded(r.session.say(SENTENCE).wait_for_playout(), "the first sentence", 60)
        split = r.out.samples_written
        await bounded(store.set({"audio": {"output_volume": 0.5}}, 0, r.applier), "the change", 10)
        assert r.out.volume == 0.5
        await bounded(r.session.say(SENTENCE).wait_for_playout(), "the second sentence", 60)
        await bounded(r.out.drain(), "the output", 10)
    said = read_wav(tmp_path / "said.wav", models.tts.sample_rate).samples
    full, half = rms(said[:split]), rms(said[split:])
    assert full > 1000, full
    assert 0.42 < half / full < 0.58, (full, half)
    assert np.abs(said[split:]).max() <= 0.55 * 32767


async def test_barge_in_options_change_at_once(models: Models, store: ConfigStore, tmp_path: Path) -> None:
    async with running(models, store, tmp_path) as r:
        await bounded(store.set({"interruption": {"enabled": False, "min_duration_s": 0.4}}, 0, r.applier),
                      "the change", 10)
        assert (r.session.interruption.enabled, r.session.interruption.min_duration_s) == (False, 0.4)
        assert r.session.interruption.false_timeout_s == 2.0  # untouched


async def test_a_failing_hot_change_raises_and_changes_nothing(models: Models, store: ConfigStore,
                                                              tmp_path: Path) -> None:
    async with running(models, store, tmp_path) as r:
        s = r.session
        before = (s.current_agent.instructions, s.activation, r.out.volume, models.wake.words, s.turn_options,
                  store.config, store.revision, store.path.exists())
        patch = {"agent": {"instructions": "Say banana."}, "audio": {"output_volume": 0.25},
                 "turn": {"detection": "vad"},
                 "activation": {"wake_words": ["hey_jarvis", "no_such_word"], "listen_s": 3.0}}
        with pytest.raises(ControlError) as failed:
            await bounded(store.set(patch, 0, r.applier), "the change", 20)
        assert failed.value.code == "apply_failed"
        assert "no_such_word" in str(failed.value)
        after = (s.current_agent.instructions, s.activation, r.out.volume, models.wake.words, s.turn_options,
                 store.config, store.revision, store.path.exists())
        assert after == before
        assert r.applier.config == store.config
        # The same change without the missing word goes through.
        patch["activation"] = {"wake_words": ["hey_jarvis", "alexa"], "listen_s": 3.0}
        revision, _ = await bounded(store.set(patch, 0, r.applier), "the change", 20)
        assert revision == 1
        assert models.wake.words == ("hey_jarvis", "alexa")
        assert (s.activation.listen_s, r.out.volume, s.turn_options.detection) == (3.0, 0.25, "vad")
        assert s.detector.name == "vad"


async def test_a_reload_waits_for_the_idle_moment(models: Models, store: ConfigStore, tmp_path: Path) -> None:
    """tts.model set to the installed voice: a new Piper stage, swapped in after the reply, not during it."""
    assert isinstance(models.tts, PiperTTS)
    voice = str(models.tts.model_path)  # the installed voice
    async with running(models, store, tmp_path, realtime_out=True) as r:
        s, old = r.session, r.session.tts
        handle = s.say(SENTENCE + " " + SENTENCE)
        deadline = asyncio.get_running_loop().time() + 30
        while s.state is not AgentState.SPEAKING:
            assert asyncio.get_running_loop().time() < deadline, "the reply did not start within 30 s"
            await asyncio.sleep(0.02)
        revision, changes = await bounded(store.set({"tts": {"model": voice}}, 0, r.applier), "the change", 10)
        assert revision == 1 and [(c.path, c.needs_reload) for c in changes] == [("tts.model", True)]
        assert s.tts is old, "swapped in the middle of a reply"
        await bounded(asyncio.sleep(1.0), "a second of the reply")
        assert s.tts is old and s.state is AgentState.SPEAKING
        await bounded(handle.wait_for_playout(), "the reply", 60)
        assert not handle.interrupted
        await bounded(r.applier.wait_reloaded(), "the reload", 60)
        assert s.tts is not old and models.tts is s.tts
        assert isinstance(s.tts, PiperTTS) and str(s.tts.model_path) == voice
        again = s.say("Hello again.")
        await bounded(again.wait_for_playout(), "a reply with the new voice", 60)
        assert again.spoken_text.strip()

        # A model file that is not there: refused at once, nothing scheduled.
        llm = s.llm
        with pytest.raises(ControlError) as failed:
            await bounded(store.set({"llm": {"model": str(tmp_path / "missing.gguf")}}, 1, r.applier),
                          "the change", 10)
        assert failed.value.code == "apply_failed" and "missing.gguf" in str(failed.value)
        assert store.revision == 1 and store.config.llm.model is None
        await bounded(r.applier.wait_reloaded(), "no reload", 5)
        assert s.llm is llm and models.llm is llm
