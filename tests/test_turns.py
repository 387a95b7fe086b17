"""The turn tracker and its detectors, with plain numbers (no audio), and the Agent's tools."""

from __future__ import annotations

import asyncio
import math

import pytest

from edgeagent.config_voice import TurnConfig
from edgeagent.llm.chat import ChatContext
from edgeagent.llm.tools import RunContext, function_tool
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice.agent import Agent
from edgeagent.voice.events import EventEmitter, WakeWordDetectedEvent
from edgeagent.voice.hearing import _is_stop
from edgeagent.voice.turns import Action, Phase, SemanticDetector, TurnTracker

W = 0.032  # one VAD window


def window(t: float, speaking: bool, silence: float = 0.0, speech: float = 0.0,
           kind: VADEventType = VADEventType.INFERENCE) -> VADEvent:
    return VADEvent(kind, t, 0.9 if speaking and not silence else 0.1, speaking, speech, silence)


def speak(tr: TurnTracker, start: float, end: float) -> list[Action]:
    """Windows of speech from ``start`` to ``end`` (START after the first), actions taken."""
    actions: list[Action] = []
    t = start + W
    actions += [s.action for s in tr.on_vad(window(t, True, speech=W, kind=VADEventType.START_OF_SPEECH))]
    while t < end:
        t += W
        actions += [s.action for s in tr.on_vad(window(t, True, speech=t - start))]
    return actions


def quiet(tr: TurnTracker, speech_end: float, until: float) -> list[tuple[Action, str]]:
    out = []
    t = speech_end + W
    while t <= until:
        out += [(s.action, s.text) for s in tr.on_vad(window(t, True, silence=t - speech_end))]
        t += W
    return out


def test_a_finished_sentence_ends_the_turn_after_the_short_delay() -> None:
    tr = TurnTracker(TurnConfig(min_delay_s=0.3, max_delay_s=2.0))
    assert speak(tr, 1.0, 2.5)[0] is Action.OPEN
    steps = tr.on_vad(window(2.5 + W, True, silence=W))
    assert [s.action for s in steps] == [Action.FLUSH]  # the final is asked for at the first quiet window
    assert tr.on_final("What time is it?") == []  # the detector has not answered yet
    assert tr.set_delay("What time is it?", 0.3) == []  # only 32 ms of silence so far
    acts = quiet(tr, 2.5, 3.0)
    assert acts and acts[0] == (Action.COMMIT, "What time is it?")
    assert tr.phase is Phase.NONE


def test_an_unfinished_sentence_waits_for_the_long_delay_or_more_speech() -> None:
    tr = TurnTracker(TurnConfig(min_delay_s=0.3, max_delay_s=1.0))
    speak(tr, 0.0, 1.0)
    tr.on_vad(window(1.0 + W, True, silence=W))
    tr.on_final("How many legs does a")
    assert tr.set_delay("How many legs does a", 1.0) == []
    assert quiet(tr, 1.0, 1.6) == []
    # the user carries on: the same utterance goes on in the STT
    steps = tr.on_vad(window(1.7, True, silence=0.0, speech=1.7))
    assert [s.action for s in steps] == [Action.REOPEN]
    assert tr.on_final("How many legs does a") == []  # the stale final of the first flush is ignored
    speak_more = [s.action for s in tr.on_vad(window(2.0 + W, True, silence=W))]
    assert speak_more == [Action.FLUSH]
    tr.on_final("How many legs does a spider have?")
    tr.set_delay("How many legs does a spider have?", 0.3)
    acts = quiet(tr, 2.0, 2.6)
    assert acts[0] == (Action.COMMIT, "How many legs does a spider have?")


def test_the_long_delay_ends_any_turn_and_no_words_are_discarded() -> None:
    tr = TurnTracker(TurnConfig(min_delay_s=0.3, max_delay_s=1.0))
    speak(tr, 0.0, 0.5)
    tr.on_vad(window(0.5 + W, True, silence=W))
    tr.on_final("Set a timer")  # the detector never answers: max_delay_s decides
    acts = quiet(tr, 0.5, 1.6)
    assert acts[0] == (Action.COMMIT, "Set a timer")
    speak(tr, 3.0, 3.2)
    tr.on_vad(window(3.2 + W, True, silence=W))
    tr.on_final("")
    acts = quiet(tr, 3.2, 4.3)
    assert acts and acts[0][0] is Action.DISCARD


def test_speech_is_cut_off_at_max_speech() -> None:
    tr = TurnTracker(TurnConfig(max_speech_s=2.0))
    acts = speak(tr, 0.0, 2.2)
    assert Action.FLUSH in acts
    assert [s.action for s in tr.on_final("and so on and so on")] == [Action.COMMIT]


def test_push_to_talk_release_ends_the_turn_at_the_final() -> None:
    tr = TurnTracker(TurnConfig())
    assert [s.action for s in tr.open_at(1.0, speaking=True)] == [Action.OPEN]
    assert [s.action for s in tr.end_speech(3.0)] == [Action.FLUSH]
    assert [(s.action, s.text) for s in tr.on_final("Turn on the light.")] == [(Action.COMMIT, "Turn on the light.")]


class FixedEOT:
    """An end-of-turn model with a fixed answer (the real one is tested in test_llm.py)."""

    def __init__(self, logprob: float) -> None:
        self.logprob = logprob

    async def end_of_turn_logprob(self, ctx: ChatContext, user_text: str) -> float:
        return self.logprob


async def test_the_semantic_detector_picks_the_delay_from_the_probability() -> None:
    opts = TurnConfig(min_delay_s=0.2, max_delay_s=2.5, eot_threshold=0.05)
    likely = SemanticDetector(opts, FixedEOT(math.log(0.4)))
    assert await asyncio.wait_for(likely.delay(ChatContext(), "What time is it?"), 5) == 0.2
    assert likely.last_probability == pytest.approx(0.4)
    unlikely = SemanticDetector(opts, FixedEOT(-20.0))
    assert await asyncio.wait_for(unlikely.delay(ChatContext(), "What time is"), 5) == 2.5


def test_stop_words_match_only_alone() -> None:
    words = ("stop", "never mind")
    assert _is_stop("Stop.", words) and _is_stop("Never mind!", words)
    assert not _is_stop("Stop the music and play jazz", words)
    assert not _is_stop("", words)


@function_tool
async def get_time(ctx: RunContext) -> str:
    """The current time."""
    return "12:00"


class Lamp(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You control a lamp.", tools=[get_time])
        self.on = False

    @function_tool
    async def set_light(self, on: bool) -> str:
        """Turn the light on or off.

        Args:
            on: true for on.
        """
        self.on = on
        return "ok"


async def test_agent_tools_come_from_the_list_and_from_methods() -> None:
    lamp = Lamp()
    assert [t.name for t in lamp.tools] == ["get_time", "set_light"]
    schema = lamp.tools[1].schema()["function"]
    assert schema["parameters"]["properties"] == {"on": {"type": "boolean", "description": "true for on."}}
    assert await asyncio.wait_for(lamp.tools[1].call('{"on": true}'), 5) == "ok"
    assert lamp.on is True
    with pytest.raises(ValueError, match="instructions"):
        Agent(instructions=" ")
    with pytest.raises(ValueError, match="unique"):
        Agent(instructions="x", tools=[get_time, get_time])


def test_event_emitter_names_and_broken_handlers() -> None:
    em = EventEmitter()
    seen: list[str] = []

    @em.on("wake_word_detected")
    def first(ev: WakeWordDetectedEvent) -> None:
        raise RuntimeError("broken listener")

    em.on("wake_word_detected", lambda ev: seen.append(ev.word))
    em.emit(WakeWordDetectedEvent("hey_jarvis", 0.9))
    assert seen == ["hey_jarvis"]
    with pytest.raises(ValueError, match="unknown event"):
        em.on("no_such_event", print)


def test_a_looping_reply_is_recognised() -> None:
    from edgeagent.voice.reply import _looping

    assert _looping("There are 7," + "987," * 8)
    assert not _looping("There are 7," + "987," * 3)
    assert not _looping("The capital of France is Paris. It is large, large and old.")
