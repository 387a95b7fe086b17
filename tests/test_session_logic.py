"""The session's logic on scripted stages (scripted_stages.py): fast, and deterministic.

A real :class:`~edgeagent.voice.session.AgentSession`, made the one way the product makes
sessions (``voice/compose.py`` ``session_for``, from a :class:`Models` and a :class:`Config`),
hears a :class:`~edgeagent.bench.scripted.ScriptedMic` in real time and speaks into a
:class:`~edgeagent.bench.scripted.TimedSpeaker`. The user's "speech" is loud noise, placed in the
mic's stream at exact sample positions; the VAD hears it by its level, the STT gives the
script's transcripts, the LLM the script's replies, the voice a tone as long as its text. The
tests assert on the session's events and history, not on how long anything took.

Each path keeps at least one test with the real models (PulseAudio null sinks, ``-m pulse``):

- turn (one answer after the end-of-turn wait; a fragment waits, and its continuation joins the
  same turn): ``test_session_turns.py::test_a_question_with_a_pause_gets_one_answer_and_the_
  fragments_reply_is_never_heard``; ``test_session.py::test_wake_word_then_question_gets_a_
  spoken_answer`` (a complete question, answered once); the longest wait of a fragment with
  nothing after it has no session test with real models (``test_turns.py`` tests the tracker);
- wake word (no turn without it, the phrase taken off the question, a follow-up needs none):
  ``test_session.py::test_no_reply_without_the_wake_word_and_a_follow_up_needs_none``;
- barge-in (speech pauses, words stop, no words resume, a short sound is ignored):
  ``test_session.py::test_barge_in_stops_the_reply_fast_and_a_cough_does_not`` and
  ``::test_a_backchannel_resumes_the_reply_and_stop_ends_it``; ``interruption.enabled = false``
  has no real-model test (it is the one check in ``turn_taking.py`` ``_check_barge_in``);
- handoff: ``test_session.py::test_spoken_tool_call_and_handoff``;
- fallback: ``test_cloud_session.py::test_a_stalled_cloud_llm_is_left_for_the_local_one`` (the
  CLI's session, real local LLM) and ``test_cloud_llm.py::test_failover_to_local_and_back``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from scripted_stages import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    ScriptedWake,
    failing_llm,
    voice,
    wake_marker,
)

from edgeagent import heap
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.scripted import ScriptedMic, TimedSpeaker
from edgeagent.config import Config
from edgeagent.config.voice import ActivationConfig, InterruptionConfig, TurnConfig
from edgeagent.fallback.build import make_chain, wrap
from edgeagent.fallback.chain import FallbackEvent
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext, ChatMessage, ToolCall
from edgeagent.voice import (
    Agent,
    AgentHandoffEvent,
    AgentState,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    MetricsCollectedEvent,
    Models,
    RunContext,
    TurnMetrics,
    UserInputTranscribedEvent,
    WakeWordDetectedEvent,
    function_tool,
)
from edgeagent.voice.compose import session_for
from edgeagent.voice.events import EVENT_NAMES

E = TypeVar("E")
WAIT_S = 10.0
"""The bound on every wait (a scripted step takes milliseconds; this only ends a hung test)."""
QUESTION = "What is the capital of France?"
REPLY = "Paris is the capital of France."
LONG = ("The weather today is sunny with a light breeze from the west. Temperatures will reach twenty "
        "degrees in the afternoon, and the evening will be clear and calm.")  # 154 chars: 3 s of tone

CONFIG = Config(
    activation=ActivationConfig(mode="always"),
    turn=TurnConfig(detection="semantic", min_delay_s=0.2, max_delay_s=0.8),
    interruption=InterruptionConfig(min_duration_s=0.2, false_timeout_s=2.0),
)


def silence(seconds: float) -> AudioFrame:
    return AudioFrame.silence(seconds, RECOGNITION_RATE)


class Scene:
    """A session on scripted stages, mic and speaker; every event collected in order."""

    def __init__(self, tmp_path: Path, *, transcripts: list[str], llm: LLM, cfg: Config = CONFIG,
                 agent: Agent | None = None, seconds_per_char: float = 0.02) -> None:
        self.stt = ScriptedSTT(transcripts)
        self.models = Models(vad=ScriptedVAD(), wake=ScriptedWake(), stt=self.stt, llm=llm,
                             tts=ScriptedTTS(seconds_per_char=seconds_per_char))
        self.session = session_for(self.models, cfg, echo_path=False)
        self.mic = ScriptedMic()
        self.speaker = TimedSpeaker(tmp_path / "speaker.wav")
        self.agent = agent or Agent(instructions="You are a test.")
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        for name in EVENT_NAMES:
            self.session.on(name, self._on_event)

    def _on_event(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    async def __aenter__(self) -> Scene:
        await asyncio.wait_for(self.speaker.start(), WAIT_S)
        await asyncio.wait_for(self.session.start(self.agent, input=self.mic, output=self.speaker), WAIT_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.session.aclose(), WAIT_S)
        await asyncio.wait_for(self.speaker.aclose(), WAIT_S)
        await asyncio.wait_for(self.mic.aclose(), WAIT_S)
        await asyncio.wait_for(self.models.aclose(), WAIT_S)

    def say(self, *parts: AudioFrame) -> None:
        """The user speaks ``parts`` (speech and silence) from now on."""
        self.mic.speak(AudioFrame.concat(parts))

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, what: str, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` (checked at each event, and every 50 ms), at most :data:`WAIT_S`."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"{what}: not within {WAIT_S} s; events: {self.events}"
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    def states(self) -> list[AgentState]:
        return [e.new_state for e in self.of(AgentStateChangedEvent)]

    def turns(self) -> list[TurnMetrics]:
        return [e.metrics for e in self.of(MetricsCollectedEvent) if isinstance(e.metrics, TurnMetrics)]

    async def answered(self, n: int = 1) -> list[TurnMetrics]:
        """Wait for the metrics of the ``n``-th answered turn and the session listening after it."""
        await self.until(f"turn {n} answered", lambda: len(self.turns()) >= n)
        await self.until("listening again", lambda: self.session.state is AgentState.LISTENING)
        return self.turns()

    async def speaking(self) -> int:
        """Wait until the agent speaks; the number of state changes so far."""
        await self.until("speaking", lambda: self.session.state is AgentState.SPEAKING)
        return len(self.states())

    def items(self) -> list[tuple[str, str, bool]]:
        return [(e.item.role, e.item.content, e.item.interrupted) for e in self.of(ConversationItemAddedEvent)]

    def finals(self) -> list[str]:
        return [e.transcript for e in self.of(UserInputTranscribedEvent) if e.is_final]


# -- turn --------------------------------------------------------------------------------


async def test_a_finished_question_is_answered_once_after_the_short_wait(tmp_path: Path) -> None:
    llm = ScriptedLLM(["Paris is ", "the capital ", "of France."])
    async with Scene(tmp_path, transcripts=[QUESTION], llm=llm) as scene:
        scene.say(voice(0.5))
        [turn] = await scene.answered()
        assert scene.items() == [("user", QUESTION, False), ("assistant", REPLY, False)]
        assert scene.finals() == [QUESTION]
        assert turn.transcript == QUESTION and not turn.interrupted
        assert turn.end_of_turn_delay == pytest.approx(CONFIG.turn.min_delay_s)  # the words sound finished
        assert turn.eot_probability == pytest.approx(0.9)
        assert turn.preempt_hit is True and turn.preempt_misses == 0  # begun at the final, kept
        assert scene.states().count(AgentState.SPEAKING) == 1
        assert len(llm.asked) == 1 and llm.asked[0].messages[-1] == ChatMessage("user", QUESTION)


async def test_after_a_reply_the_history_is_evaluated_ahead_of_the_next_turn(tmp_path: Path) -> None:
    llm = ScriptedLLM(["Paris is ", "the capital ", "of France."])
    async with Scene(tmp_path, transcripts=[QUESTION], llm=llm) as scene:
        at_start = len(llm.readied)  # the instructions, as the agent started
        scene.say(voice(0.5))
        await scene.answered()
        await scene.until("the history readied", lambda: len(llm.readied) == at_start + 1)
        assert llm.readied[-1].messages[1:] == [ChatMessage("user", QUESTION), ChatMessage("assistant", REPLY)]


async def test_after_the_history_is_readied_the_heap_gives_its_free_pages_back(tmp_path: Path) -> None:
    llm = ScriptedLLM(["Paris is ", "the capital ", "of France."])
    async with Scene(tmp_path, transcripts=[QUESTION], llm=llm) as scene:
        readied, released = len(llm.readied), heap.released
        scene.say(voice(0.5))
        await scene.answered()
        await scene.until("the heap released", lambda: heap.released == released + 1)
        assert len(llm.readied) == readied + 1  # the history first, then the heap (glibc's malloc_trim)


async def test_a_fragment_waits_the_longest_wait_when_nothing_follows(tmp_path: Path) -> None:
    async with Scene(tmp_path, transcripts=["Turn on the"], llm=ScriptedLLM(["Turn on what?"])) as scene:
        scene.say(voice(0.4))
        [turn] = await scene.answered()
        assert turn.transcript == "Turn on the"
        assert turn.end_of_turn_delay == pytest.approx(CONFIG.turn.max_delay_s)  # a fragment waits longest
        assert turn.eot_probability == pytest.approx(1e-4)


async def test_a_pause_after_a_fragment_waits_and_the_rest_joins_the_same_turn(tmp_path: Path) -> None:
    llm = ScriptedLLM([REPLY])
    async with Scene(tmp_path, transcripts=["What is the", QUESTION], llm=llm) as scene:
        scene.say(voice(0.4), silence(0.4), voice(0.4))  # the pause: half the fragment's wait
        [turn] = await scene.answered()
        assert scene.finals() == [QUESTION]  # one turn, the whole question
        assert scene.items() == [("user", QUESTION, False), ("assistant", REPLY, False)]
        assert turn.transcript == QUESTION and turn.end_of_turn_delay == pytest.approx(CONFIG.turn.min_delay_s)
        assert turn.preempt_misses == 1 and turn.preempt_hit is True  # the fragment's reply: begun, dropped
        assert [ctx.messages[-1].content for ctx in llm.asked] == ["What is the", QUESTION]
        assert scene.states().count(AgentState.SPEAKING) == 1  # nothing of the fragment's reply was heard


async def test_wake_mode_answers_after_the_wake_word_and_a_follow_up_needs_none(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CONFIG, activation=ActivationConfig(mode="wake", follow_up_s=3.0))
    transcripts = ["Hey Jarvis.", "Hey Jarvis, what is the capital of France?", "And of Spain?"]
    llm = ScriptedLLM([REPLY])
    async with Scene(tmp_path, transcripts=transcripts, llm=llm, cfg=cfg) as scene:
        scene.say(voice(0.5), silence(0.2))  # no wake word: not heard
        await scene.until("the mic heard it", lambda: not scene.mic.busy)
        assert scene.stt.heard == [] and [type(e) for e in scene.events] == [AgentStateChangedEvent]
        scene.say(wake_marker(0.3), silence(0.5), voice(0.5))
        await scene.answered(1)
        scene.say(voice(0.5))  # within follow_up_s: no wake word needed
        await scene.answered(2)
        assert [e.word for e in scene.of(WakeWordDetectedEvent)] == ["hey_jarvis"]
        assert scene.stt.heard == transcripts  # the phrase alone, the question told it, the follow-up
        assert scene.finals() == [QUESTION, "And of Spain?"]  # the wake phrase taken off
        assert [role for role, _, _ in scene.items()] == ["user", "assistant", "user", "assistant"]


# -- barge-in ----------------------------------------------------------------------------


async def test_words_over_a_reply_pause_it_and_stop_it(tmp_path: Path) -> None:
    async with Scene(tmp_path, transcripts=["Please stop talking."], llm=ScriptedLLM(["All right."])) as scene:
        handle = scene.session.say(LONG)
        at = await scene.speaking()
        scene.say(voice(0.4))
        await scene.until("paused", lambda: AgentState.LISTENING in scene.states()[at:])
        await asyncio.wait_for(handle.wait_for_playout(), WAIT_S)
        [turn] = await scene.answered()
        assert handle.interrupted
        (role, said, interrupted), *rest = scene.items()
        assert role == "assistant" and interrupted and said and len(said) < len(LONG) and LONG.startswith(said)
        assert rest == [("user", "Please stop talking.", False), ("assistant", "All right.", False)]
        assert turn.transcript == "Please stop talking."


async def test_speech_without_words_over_a_reply_pauses_it_and_it_resumes(tmp_path: Path) -> None:
    async with Scene(tmp_path, transcripts=[""], llm=ScriptedLLM([]), seconds_per_char=0.01) as scene:
        handle = scene.session.say(LONG)
        at = await scene.speaking()
        scene.say(voice(0.4))
        await scene.until("paused", lambda: AgentState.LISTENING in scene.states()[at:])
        paused = len(scene.states())
        await scene.until("resumed", lambda: AgentState.SPEAKING in scene.states()[paused:])
        await asyncio.wait_for(handle.wait_for_playout(), WAIT_S)
        assert not handle.interrupted and handle.spoken_text == LONG
        assert scene.items() == [("assistant", LONG, False)]
        assert scene.finals() == [] and scene.stt.heard == [""]


async def test_a_sound_shorter_than_the_minimum_does_not_pause_the_reply(tmp_path: Path) -> None:
    async with Scene(tmp_path, transcripts=[""], llm=ScriptedLLM([]), seconds_per_char=0.01) as scene:
        handle = scene.session.say(LONG)
        at = await scene.speaking()
        scene.say(voice(0.1))  # half of interruption.min_duration_s
        await asyncio.wait_for(handle.wait_for_playout(), WAIT_S)
        assert scene.states()[at:].count(AgentState.LISTENING) <= 1  # only once the reply is over
        assert AgentState.SPEAKING not in scene.states()[at:]
        assert not handle.interrupted and scene.items() == [("assistant", LONG, False)]


async def test_with_interruptions_off_speech_over_a_reply_is_ignored(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CONFIG, interruption=InterruptionConfig(enabled=False))
    async with Scene(tmp_path, transcripts=["Please stop talking."], llm=ScriptedLLM(["All right."]),
                     cfg=cfg) as scene:
        handle = scene.session.say(LONG)
        at = await scene.speaking()
        scene.say(voice(0.4))
        await scene.until("the words heard", lambda: scene.stt.heard != [])
        await asyncio.wait_for(handle.wait_for_playout(), WAIT_S)
        assert not handle.interrupted and handle.spoken_text == LONG
        assert scene.states()[at:].count(AgentState.LISTENING) <= 1  # only once the reply is over
        assert AgentState.SPEAKING not in scene.states()[at:]
        assert scene.items() == [("assistant", LONG, False)]  # the words over it: no turn
        assert scene.finals() == [] and scene.turns() == []


# -- handoff -----------------------------------------------------------------------------


class Weather(Agent):
    INSTRUCTIONS = "You are the weather expert."

    def __init__(self) -> None:
        super().__init__(instructions=self.INSTRUCTIONS)
        self.entered = 0

    async def on_enter(self) -> None:
        self.entered += 1

    @function_tool
    async def get_forecast(self) -> str:
        """Get the weather forecast for today."""
        return "sunny, 21 degrees"


class Home(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a home assistant.")
        self.weather = Weather()
        self.exited = 0

    async def on_exit(self) -> None:
        self.exited += 1

    @function_tool
    async def transfer_to_weather(self, ctx: RunContext) -> Agent:
        """Transfer the user to the weather expert."""
        return self.weather


def weather_desk(ctx: ChatContext) -> list[str | ToolCall]:
    """The LLM of the handoff test: a tool call for each request, then words for its result."""
    last = ctx.messages[-1]
    if last.role == "tool":
        return ["You are with the weather expert now."] if last.content.startswith("transferred") else ["Sunny."]
    if "weather expert" in last.content:
        return [ToolCall(id="c1", name="transfer_to_weather", arguments="{}")]
    return [ToolCall(id="c2", name="get_forecast", arguments="{}")]


async def test_a_tool_that_returns_an_agent_hands_the_conversation_over(tmp_path: Path) -> None:
    home = Home()
    llm = ScriptedLLM(reply_to=weather_desk)
    transcripts = ["Transfer me to the weather expert.", "What is the weather like?"]
    async with Scene(tmp_path, transcripts=transcripts, llm=llm, agent=home) as scene:
        scene.say(voice(0.5))
        await scene.answered(1)
        scene.say(voice(0.5))
        await scene.answered(2)
        assert [(h.old_agent, h.new_agent) for h in scene.of(AgentHandoffEvent)] == [("Home", "Weather")]
        assert scene.session.current_agent is home.weather and home.weather.entered == 1 and home.exited == 1
        assert [m.role for m in scene.session.history.messages] == [
            "user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"]
        tools = [m.content for m in scene.session.history.messages if m.role == "tool"]
        assert tools == ["transferred to Weather", "sunny, 21 degrees"]
        prompts = [ctx.messages[0].content for ctx in llm.asked]
        assert prompts[0] == "You are a home assistant." and prompts[1:] == [Weather.INSTRUCTIONS] * 3
        added = [(e.item.role, e.agent) for e in scene.of(ConversationItemAddedEvent)]
        assert added[:3] == [("user", "Home"), ("assistant", "Home"), ("tool", "Home")]
        assert {agent for _, agent in added[3:]} == {"Weather"}


# -- fallback ----------------------------------------------------------------------------


async def test_a_failing_llm_falls_to_the_next_and_the_user_is_answered(tmp_path: Path) -> None:
    good = ScriptedLLM([REPLY], name="scripted-up")
    llm = wrap("llm", make_chain("llm", failing_llm("scripted-down"), good, CONFIG.cloud, None))
    async with Scene(tmp_path, transcripts=[QUESTION], llm=llm) as scene:
        scene.say(voice(0.5))
        [turn] = await scene.answered()
        assert scene.items() == [("user", QUESTION, False), ("assistant", REPLY, False)]
        assert turn.llm_provider == "scripted-up"
        switched = scene.of(FallbackEvent)
        assert [(e.kind, e.action, e.from_provider, e.to_provider) for e in switched] == [
            ("llm", "switched", "scripted-down", "scripted-up")]
        assert len(good.asked) == 1
