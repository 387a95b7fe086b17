"""AgentSession for real: speech played into the virtual mic, the reply recorded from the virtual
speaker (PulseAudio null sinks, see tests/conftest.py), the default models, echo cancellation on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
from conftest import PulseDevices
from live import Live, Recorder, loud_span, play, words
from speech import espeak, piper, save, with_silence

from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
from edgeagent.config.voice import ActivationConfig
from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.voice import (
    Agent,
    AgentHandoffEvent,
    AgentState,
    ConversationItemAddedEvent,
    MetricsCollectedEvent,
    Models,
    RunContext,
    TurnMetrics,
    UserInputTranscribedEvent,
    WakeWordDetectedEvent,
    function_tool,
)

pytestmark = pytest.mark.pulse
log = logging.getLogger(__name__)
RATE = 16_000
QUESTION = "What is the capital of France?"
LONG_TEXT = ("The weather today is sunny with a light breeze from the west. Temperatures will reach twenty "
             "degrees in the afternoon, and the evening will be clear and calm, good for a walk in the park.")


@dataclass(frozen=True)
class Wavs:
    wake_then_question: Path
    no_wake: Path
    follow_up: Path
    barge_in: Path
    cough: Path


def cough(seconds: float = 0.3) -> AudioFrame:
    """A cough-like noise burst: sharp attack, fast decay, band-limited noise."""
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    noise = np.random.default_rng(7).standard_normal(n)
    band = np.convolve(noise, np.ones(4) / 4, "same") - np.convolve(noise, np.ones(64) / 64, "same")
    return AudioFrame.from_float(0.5 * np.minimum(1, t / 0.01) * np.exp(-t / 0.08) * band / np.abs(band).max(), RATE)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> Wavs:
    d = tmp_path_factory.mktemp("session")
    pause = AudioFrame.silence(0.6, RATE)
    return Wavs(
        save(with_silence(AudioFrame.concat([piper("Hey Jarvis."), pause, piper(QUESTION)]), 1.0, 1.5),
             d / "wake_then_question.wav"),
        save(with_silence(piper(QUESTION), 1.0, 1.5), d / "no_wake.wav"),
        save(with_silence(piper("How many legs does a spider have?"), 0.2, 1.0), d / "follow_up.wav"),
        save(with_silence(espeak("Please stop talking now."), 0.0, 0.5), d / "barge_in.wav"),
        save(with_silence(cough(), 0.0, 0.3), d / "cough.wav"),
    )


async def test_wake_word_then_question_gets_a_spoken_answer(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    rec = await Recorder.start(pulse.speaker_monitor)
    try:
        live = Live(models)
        async with live.running():
            await play(pulse.mic_sink, wavs.wake_then_question)
            metrics = await live.wait_for(MetricsCollectedEvent, 60)  # sent once the reply has played
            await live.wait_state(AgentState.LISTENING, 10, live.events.index(metrics))  # the follow-up window
            await asyncio.sleep(0.3)
    finally:
        recorded = await rec.stop()
    states = live.states()
    assert states[:5] == [AgentState.IDLE, AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING,
                          AgentState.LISTENING], states
    assert live.of(WakeWordDetectedEvent)[0].word == "hey_jarvis"
    final = [e for e in live.of(UserInputTranscribedEvent) if e.is_final]
    assert len(final) == 1 and {"capital", "france"} <= words(final[0].transcript), final
    items = [e.item for e in live.of(ConversationItemAddedEvent)]
    assert [m.role for m in items] == ["user", "assistant"], items
    reply = items[1].content
    assert reply.strip() and not items[1].interrupted
    m = metrics.metrics
    assert isinstance(m, TurnMetrics)
    for f in fields(TurnMetrics):
        if f.name.endswith(("delay", "ttft", "ttfa", "latency", "speech")):
            value = getattr(m, f.name)
            assert value is not None and 0.0 <= value < 10.0, (f.name, m)
    assert m.e2e_latency is not None and m.tts_ttfa_after_speech is not None
    assert m.e2e_latency >= m.tts_ttfa_after_speech - 0.05, m  # the sample reaches the device after TTS made it
    assert m.eot_probability is not None and 0.0 <= m.eot_probability <= 1.0
    log.info("turn metrics: %s", m.as_log())

    spoken, loud_s = loud_span(recorded)
    assert loud_s > 0.5, f"only {loud_s:.2f} s of audible reply on the speaker"
    heard = (await asyncio.wait_for(models.stt.recognize(spoken), 60)).text
    common = words(heard) & words(reply)
    assert len(common) >= min(3, len(words(reply))), f"said {reply!r}, heard {heard!r}"


async def test_no_reply_without_the_wake_word_and_a_follow_up_needs_none(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    live = Live(models, activation=ActivationConfig(follow_up_s=6.0))
    async with live.running():
        await play(pulse.mic_sink, wavs.no_wake)
        await asyncio.sleep(2.0)  # an answer would have begun by now
        assert live.states() == [AgentState.IDLE], live.events
        await play(pulse.mic_sink, wavs.wake_then_question)
        first = await live.wait_for(MetricsCollectedEvent, 60)
        at = live.events.index(first)
        await live.wait_state(AgentState.LISTENING, 10, at)
        await asyncio.sleep(0.5)
        await play(pulse.mic_sink, wavs.follow_up)  # no wake word
        second = await live.wait_for(MetricsCollectedEvent, 60, after=at + 1)
    assert len(live.of(WakeWordDetectedEvent)) == 1
    assert {"legs", "spider"} <= words(second.metrics.transcript), second.metrics
    roles = [e.item.role for e in live.of(ConversationItemAddedEvent)]
    assert roles == ["user", "assistant", "user", "assistant"], roles


@contextlib.contextmanager
def pulse_env(**env: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class EarInput(DeviceInput):
    """The session's microphone, keeping what it captured (with capture timestamps)."""

    def __init__(self) -> None:
        super().__init__(rate=RATE)
        self.captured: list[AudioFrame] = []

    def _deliver(self, frames: list[AudioFrame], overflow: bool) -> None:
        super()._deliver(frames, overflow)
        self.captured.extend(frames)

    def onset_after(self, t: float, db: float = -35.0) -> float | None:
        """Capture time of the first loud 10 ms after monotonic time ``t``."""
        for frame in self.captured:
            if frame.timestamp is None or frame.timestamp + frame.duration < t:
                continue
            for i, block in enumerate(frame.chunks(RATE // 100)):
                if block.rms_dbfs() > db and frame.timestamp + i * 0.01 >= t:
                    return frame.timestamp + i * 0.01
        return None


class MouthOutput(DeviceOutput):
    """The session's speaker, noting when each non-silent block was handed to the device."""

    def __init__(self) -> None:
        super().__init__()
        self.sounding: list[float] = []

    def render(self, out: Int16Array, now: float) -> None:
        super().render(out, now)
        if np.abs(out).max(initial=0) > 100:
            self.sounding.append(now)


async def _speak_over(pulse: PulseDevices, wav: Path) -> float:
    """Play ``wav`` into the mic (returns the monotonic time it was started)."""
    t0 = time.monotonic()
    await play(pulse.mic_sink, wav)
    await asyncio.sleep(2.0)
    return t0


async def test_a_queued_reply_interrupted_before_its_turn_is_never_heard(models: Models) -> None:
    live = Live(models)
    async with live.running():
        first = live.session.say("One.")
        second = live.session.say("Two, which nobody hears.")
        second.interrupt()
        await asyncio.wait_for(first.wait_for_playout(), 30)
        await asyncio.wait_for(second.wait_for_playout(), 5)
        assert second.interrupted and second.spoken_text == "" and second.text == ""
        assert first.spoken_text == "One."


async def test_barge_in_stops_the_reply_fast_and_a_cough_does_not(
    models: Models, pulse: PulseDevices, wavs: Wavs
) -> None:
    """Onset and stop are timed on the session's own devices: the capture time of the
    barge-in's first loud 10 ms, and the hand-over time of the last loud output block
    plus the device's output latency (when it leaves the speaker)."""
    # The null sinks have no echo path; AEC3 without any echo to learn from ducks the user's
    # first words for the better part of a second, so this timing runs without it (the
    # test below barges in with echo cancellation on and an echo path).
    live = Live(models, echo_cancellation=False, ignore_own_playback=False)
    ear, mouth = EarInput(), MouthOutput()
    live.inp, live.out = ear, mouth
    async with live.running():
        handle = live.session.say(LONG_TEXT)
        await live.wait_state(AgentState.SPEAKING, 20)
        await asyncio.sleep(1.0)
        t0 = await _speak_over(pulse, wavs.cough)
        assert not handle.interrupted and not handle.done(), "a cough interrupted the reply"
        during = [t for t in mouth.sounding if t >= t0]
        gaps = [b - a for a, b in itertools.pairwise(during) if b - a > 0.4]  # longer than between sentences
        assert during and not gaps, f"the reply went quiet for {max(gaps):.2f} s around a cough"

        t0 = await _speak_over(pulse, wavs.barge_in)
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        assert handle.interrupted
        onset = ear.onset_after(t0)
        assert onset is not None, "the barge-in was not heard"
        before = [t for t in mouth.sounding if t < onset]
        assert before and onset - before[-1] < 0.1, "the agent was not speaking when the user started"
        after = [t for t in mouth.sounding if t >= onset]
        # The reply stops at the first gap after the onset (the agent answers much later).
        ends = [a for a, b in itertools.pairwise(after) if b - a > 0.15]
        log.info("DEBUG onset=%.3f before=%s after=%s", onset, [round(t - onset, 3) for t in before[-5:]],
                 [round(t - onset, 3) for t in after[:60]])
        stop = (ends[0] if ends else after[-1] if after else onset) + 0.01 + mouth.output_latency
        log.info("barge-in: the reply stopped %.0f ms after the user started speaking (output latency %.0f ms)",
                 1000 * (stop - onset), 1000 * mouth.output_latency)
        assert stop - onset <= 0.3, f"the reply went on for {1000 * (stop - onset):.0f} ms"
        transcript = await live.wait_for(UserInputTranscribedEvent, 20, lambda e: e.is_final)
        assert {"stop", "talking"} & words(transcript.transcript), transcript
    said = [e.item for e in live.of(ConversationItemAddedEvent) if e.item.role == "assistant"]
    assert said and said[0].interrupted and len(said[0].content) < len(LONG_TEXT), said


class Weather(Agent):
    INSTRUCTIONS = "You are the weather expert. Use get_forecast for any question about the weather."

    def __init__(self) -> None:
        super().__init__(instructions=self.INSTRUCTIONS)
        self.entered = 0
        self.system_prompts: list[str] = []

    async def on_enter(self) -> None:
        self.entered += 1

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        self.system_prompts.append(turn_ctx.messages[0].content)  # what the LLM sees this turn

    @function_tool
    async def get_forecast(self) -> str:
        """Get the weather forecast for today."""
        return "sunny, 21 degrees"


class Home(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a home assistant. You can switch the light and transfer "
                                      "the user to the weather expert.")
        self.light: list[bool] = []
        self.weather = Weather()

    @function_tool
    async def set_light(self, ctx: RunContext, on: bool) -> str:
        """Switch the room light on or off.

        Args:
            on: true to switch it on, false to switch it off.
        """
        assert ctx.session is not None and ctx.agent is self
        self.light.append(on)
        return "the light is on" if on else "the light is off"

    @function_tool
    async def transfer_to_weather(self, ctx: RunContext) -> Agent:
        """Transfer the user to the weather expert for questions about the weather."""
        return self.weather


async def test_spoken_tool_call_and_handoff(models: Models, pulse: PulseDevices, tmp_path: Path) -> None:
    home = Home()
    live = Live(models, home, activation=ActivationConfig(follow_up_s=8.0))
    # SmolLM2-135M picks its tool by the exact words: "Turn on the light." (as Whisper writes it) went
    # to transfer_to_weather, "Turn on the light" to set_light (1 CI run in 3 failed); "Please switch
    # on the light" called set_light in all six spellings tried (with and without stop, case, "Jarvis,").
    light = save(with_silence(AudioFrame.concat([piper("Hey Jarvis."), AudioFrame.silence(0.5, RATE),
                                                 espeak("Please switch on the light.")]), 0.5, 1.0),
                 tmp_path / "light.wav")
    transfer = save(with_silence(piper("Transfer me to the weather expert."), 0.2, 1.0), tmp_path / "transfer.wav")
    weather = save(with_silence(piper("What is the weather like today?"), 0.2, 1.0), tmp_path / "weather.wav")
    async with live.running():
        await play(pulse.mic_sink, light)
        await live.wait_for(MetricsCollectedEvent, 60)
        assert home.light == [True], live.events
        for wav, turns in ((transfer, 2), (weather, 3)):
            await live.wait_state(AgentState.LISTENING, 10, len(live.events) - 1)
            await asyncio.sleep(0.5)
            await play(pulse.mic_sink, wav)
            await live.wait_for(MetricsCollectedEvent, 60, lambda e, n=turns: len(live.of(MetricsCollectedEvent)) >= n)
    handoffs = live.of(AgentHandoffEvent)
    assert [(h.old_agent, h.new_agent) for h in handoffs] == [("Home", "Weather")], live.events
    assert live.session.current_agent is home.weather and home.weather.entered == 1
    assert home.weather.system_prompts == [Weather.INSTRUCTIONS]
    tools = [m for m in live.session.history.messages if m.role == "tool"]
    assert tools[0].content == "the light is on", tools


SELF_TALK = ("Hey Jarvis, hey Jarvis! I am Jarvis, and I keep saying hey Jarvis. "
             "Hey Jarvis, what time is it? Hey Jarvis.")


async def _talk_to_itself(live: Live) -> tuple[bool, int]:
    """The agent says its own wake word several times; (interrupted, wake words heard)."""
    async with live.running():
        await asyncio.sleep(1.0)
        handle = live.session.say(SELF_TALK)
        await asyncio.wait_for(handle.wait_for_playout(), 40)
        await asyncio.sleep(1.0)
    return handle.interrupted, len(live.of(WakeWordDetectedEvent))


async def test_the_agent_does_not_hear_itself(models: Models, loopback: None, pulse: PulseDevices,
                                              wavs: Wavs) -> None:
    """With the speaker looped back into the mic: echo cancellation (and, without it, ignoring
    the mic while speaking) keeps the agent's own "hey jarvis" from waking or interrupting it."""
    interrupted, woke = await _talk_to_itself(Live(models, echo_cancellation=False, ignore_own_playback=False))
    assert interrupted or woke > 0, "control: without any protection the echo should reach the agent"
    interrupted, woke = await _talk_to_itself(Live(models))
    assert (interrupted, woke) == (False, 0), "with echo cancellation the agent heard itself"
    interrupted, woke = await _talk_to_itself(Live(models, echo_cancellation=False))
    assert (interrupted, woke) == (False, 0), "ignoring the mic while speaking did not keep the echo out"

    live = Live(models)  # and the user can still barge in over the echo
    async with live.running():
        handle = live.session.say(LONG_TEXT)
        await live.wait_state(AgentState.SPEAKING, 20)
        await asyncio.sleep(2.0)
        await play(pulse.mic_sink, wavs.barge_in)
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        transcript = await live.wait_for(UserInputTranscribedEvent, 20, lambda e: e.is_final)
    assert handle.interrupted
    # The user's words were heard over the echo. Whisper (tiny.en) hears them through the echo
    # canceller's residual only roughly, sometimes with a word of the reply mixed in; seen in 5
    # runs and a CI run: "Please stop talking now.", "Please, I'm talking now.", "Leave up talking
    # now.", "Please up talking now.", "Please talk in the aisle.", "Please talk in the afternoon."
    # ("afternoon" is the reply's). So: two of the user's words, whatever else came with them.
    heard = words(transcript.transcript)
    assert len({"please", "stop", "talking", "talk", "now"} & heard) >= 2, transcript


def _hold_the_gil() -> None:
    sum(range(40_000_000))  # one C call, ~0.5 s here: no other Python thread runs meanwhile


async def test_an_underrun_mid_reply_does_not_let_the_agent_hear_itself(models: Models, loopback: None) -> None:
    """The speaker's audio thread starved (a Python callback, so: the GIL held) makes the output
    run dry: the echo comes later than AEC3 expects, and until it re-finds the delay the agent's
    own voice gets through. Seen in CI (an ALSA underrun under load) and here, before the mic was
    ignored while the canceller settles: the reply stopped in 6 runs of 6 ("user: That's it.")."""
    live = Live(models)
    async with live.running():
        await asyncio.sleep(1.0)
        handle = live.session.say(SELF_TALK)
        await live.wait_state(AgentState.SPEAKING, 20)
        for _ in range(3):
            await asyncio.sleep(1.5)
            await asyncio.to_thread(_hold_the_gil)
        await asyncio.wait_for(handle.wait_for_playout(), 40)
        await asyncio.sleep(1.0)
    assert live.out.last_underflow is not None, "the output never ran dry: the test did not do what it says"
    assert (handle.interrupted, len(live.of(WakeWordDetectedEvent))) == (False, 0)


async def test_a_backchannel_resumes_the_reply_and_stop_ends_it(
    models: Models, pulse: PulseDevices, tmp_path: Path
) -> None:
    hmm = save(with_silence(espeak("uh huh"), 0.0, 0.5), tmp_path / "hmm.wav")
    stop = save(with_silence(piper("Stop."), 0.0, 0.5), tmp_path / "stop.wav")
    live = Live(models, echo_cancellation=False, ignore_own_playback=False)  # no echo path here
    async with live.running():
        handle = live.session.say(LONG_TEXT)
        at = await live.wait_state(AgentState.SPEAKING, 20)
        await asyncio.sleep(1.0)
        await play(pulse.mic_sink, hmm)
        paused = await live.wait_state(AgentState.LISTENING, 5, at)  # paused while it listens
        await live.wait_state(AgentState.SPEAKING, 10, paused)  # and goes on
        assert not handle.interrupted and not handle.done()
        await asyncio.sleep(0.5)
        await play(pulse.mic_sink, stop)
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        await live.wait_state(AgentState.IDLE, 10)
        await asyncio.sleep(1.0)
    assert handle.interrupted
    items = [e.item for e in live.of(ConversationItemAddedEvent)]
    assert [(m.role, m.interrupted) for m in items] == [("assistant", True)], items  # no answer to "stop"
    finals = [e.transcript for e in live.of(UserInputTranscribedEvent) if e.is_final]
    assert len(finals) == 1 and words(finals[0]) == {"stop"}, finals


async def test_push_to_talk(models: Models, pulse: PulseDevices, wavs: Wavs) -> None:
    live = Live(models, activation=ActivationConfig(mode="ptt"))
    async with live.running():
        await play(pulse.mic_sink, wavs.wake_then_question)  # not pressed: ignored, wake word or not
        await asyncio.sleep(1.0)
        assert live.states() == [AgentState.IDLE], live.events
        live.session.push_to_talk(True)
        await play(pulse.mic_sink, wavs.no_wake)
        live.session.push_to_talk(False)
        metrics = await live.wait_for(MetricsCollectedEvent, 60)
    assert {"capital", "france"} <= words(metrics.metrics.transcript), metrics
    assert live.states()[:4] == [AgentState.IDLE, AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING]
