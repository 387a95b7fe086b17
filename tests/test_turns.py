"""The turn tracker and its detectors, with plain numbers (no audio), and the Agent's tools."""

from __future__ import annotations

import asyncio
import math

import pytest

from edgeagent.audio.frame import AudioFrame
from edgeagent.config.voice import TurnConfig
from edgeagent.llm.chat import ChatContext
from edgeagent.llm.tools import RunContext, function_tool
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice.agent import Agent
from edgeagent.voice.detectors import Detector, endpoint_delay, make_detector, untrusted_punctuation
from edgeagent.voice.events import EventEmitter, WakeWordDetectedEvent
from edgeagent.voice.turns import Action, Phase, TurnTracker
from edgeagent.voice.words import is_stop

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


def test_a_judged_turn_is_due_at_its_delay_and_commits_on_time_without_a_vad_window() -> None:
    """The session commits when the silence is due (a timer), not at the VAD's next window."""
    tr = TurnTracker(TurnConfig(min_delay_s=0.3, max_delay_s=2.0))
    speak(tr, 1.0, 2.5)
    tr.on_vad(window(2.5 + W, True, silence=W))
    assert tr.commit_due is None  # no final yet
    tr.on_final("What time is it?")
    assert tr.commit_due is None  # not judged yet
    tr.set_delay("What time is it?", 0.3)
    due = tr.commit_due
    assert due == pytest.approx(2.8)
    assert tr.tick(2.79) == []  # not yet
    assert [(s.action, s.text) for s in tr.tick(due)] == [(Action.COMMIT, "What time is it?")]
    assert tr.commit_due is None and tr.tick(5.0) == []
    speak(tr, 6.0, 7.0)
    tr.on_vad(window(7.0 + W, True, silence=W))
    tr.on_final("What is the")
    tr.set_delay("What is the", 1.5)
    tr.on_vad(window(7.5, True, silence=0.0, speech=7.5))  # the user went on before it was due
    assert tr.commit_due is None and tr.tick(8.5) == []


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
    """An end-of-turn model with a fixed answer (the real one is tested in test_llm.py); it
    remembers the text it was asked about."""

    def __init__(self, logprob: float) -> None:
        self.logprob = logprob
        self.asked: list[str] = []
        self.prepared: list[str] = []

    async def end_of_turn_logprob(self, ctx: ChatContext, user_text: str, *,
                                  reply_text: str | None = None) -> float:
        self.asked.append(user_text)
        return self.logprob

    async def prepare_turn(self, ctx: ChatContext, user_text: str) -> bool:
        self.prepared.append(user_text)
        return True


class FixedVoice:
    """An audio end-of-turn model with a fixed answer (the real one: test_turn_audio.py)."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.heard: list[AudioFrame] = []

    async def probability(self, audio: AudioFrame) -> float:
        self.heard.append(audio)
        return self.p


async def test_the_words_detector_picks_the_delay_from_the_probability_without_the_stt_punctuation() -> None:
    opts = TurnConfig(detection="semantic", min_delay_s=0.2, max_delay_s=2.5, eot_threshold=0.05)
    eot = FixedEOT(math.log(0.4))
    likely = make_detector(opts, eot)
    assert likely.name == "semantic" and not likely.needs_audio
    verdict = await asyncio.wait_for(likely.judge(ChatContext(), "What time is it?", None), 5)
    assert verdict.delay == 0.2 and verdict.text_probability == pytest.approx(0.4)
    assert eot.asked == ["What time is it"]  # Whisper's "?" is not trusted: a pause looks like one
    unlikely = Detector(opts, FixedEOT(-20.0), None)
    assert (await asyncio.wait_for(unlikely.judge(ChatContext(), "What time is", None), 5)).delay == 2.5


def test_trailing_punctuation_from_the_stt_is_taken_off() -> None:
    assert untrusted_punctuation(" What is the capital of? ") == "What is the capital of"
    assert untrusted_punctuation("One moment, please...") == "One moment, please"
    assert untrusted_punctuation("3.5") == "3.5"
    assert untrusted_punctuation("?!") == ""


def test_endpointing_adapts_between_the_shortest_and_the_longest_wait() -> None:
    opts = TurnConfig(min_delay_s=0.3, max_delay_s=2.0, eot_threshold=0.05)
    assert endpoint_delay(opts, 0.6, 0.9) == 0.3  # words and voice agree: the shortest wait
    assert endpoint_delay(opts, 0.0005, 0.95) == pytest.approx(2.0)  # a fragment, whatever the voice
    assert endpoint_delay(opts, 0.001, 0.95) > 1.6
    voice_doubts = endpoint_delay(opts, 0.6, 0.05)
    assert 0.3 < voice_doubts <= 0.3 + 0.2 * 1.7 + 1e-9  # the voice alone adds a little
    mild = endpoint_delay(opts, 0.007, None)
    relieved = endpoint_delay(opts, 0.007, 0.98)  # "Can you tell me a joke": the voice is done
    assert 0.3 < relieved < mild < 2.0
    assert endpoint_delay(opts, 0.007, 0.3) >= mild  # an unsure voice relieves nothing
    assert endpoint_delay(opts, 0.0, 0.0) == pytest.approx(2.0)
    assert endpoint_delay(opts, None, None) == 0.3
    assert endpoint_delay(TurnConfig(min_delay_s=0.5, max_delay_s=0.2), 0.0, None) == 0.5


async def test_the_combined_detector_hears_words_and_voice_at_once() -> None:
    opts = TurnConfig(min_delay_s=0.3, max_delay_s=2.0)
    voice = FixedVoice(0.9)
    combined = make_detector(opts, FixedEOT(math.log(0.5)), voice)
    assert combined.name == "combined" and combined.needs_audio
    audio = AudioFrame.silence(1.0, 16_000)
    sure = await asyncio.wait_for(combined.judge(ChatContext(), "What time is it?", audio), 5)
    assert (sure.delay, sure.audio_probability) == (0.3, None) and voice.heard == []  # the words decide
    unsure_words = make_detector(opts, FixedEOT(math.log(0.01)), voice)
    verdict = await asyncio.wait_for(unsure_words.judge(ChatContext(), "Hello world!", audio), 5)
    assert verdict.audio_probability == 0.9 and voice.heard == [audio]
    assert 0.3 < verdict.delay < endpoint_delay(opts, 0.01, None)  # the voice sounds done: shorter
    doubt = await asyncio.wait_for(
        make_detector(opts, FixedEOT(math.log(0.1)), FixedVoice(0.1)).judge(ChatContext(), "Hello", audio), 5)
    assert doubt.delay > 0.3  # the words are just done, the voice doubts: longer
    fragment = FixedVoice(0.99)
    cut = await asyncio.wait_for(
        make_detector(opts, FixedEOT(-10.0), fragment).judge(ChatContext(), "What is the", audio), 5)
    assert cut.delay == pytest.approx(2.0) and fragment.heard == []
    with pytest.raises(ValueError, match="Smart Turn"):
        make_detector(opts, FixedEOT(0.0), None)
    with pytest.raises(ValueError, match="end_of_turn_logprob"):
        make_detector(opts, object(), voice)
    assert make_detector(TurnConfig(detection="audio"), object(), voice).name == "audio"


def test_stop_words_match_only_alone() -> None:
    words = ("stop", "never mind")
    assert is_stop("Stop.", words) and is_stop("Never mind!", words)
    assert not is_stop("Stop the music and play jazz", words)
    assert not is_stop("", words)


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


def test_degenerate_reply_text_is_recognised_within_a_few_tokens() -> None:
    from edgeagent.voice.reply import degenerate

    assert degenerate("There are 7," + "987," * 5)
    assert degenerate("There are 7,987,987,987,98")  # 16 digits and separators: no number to read out
    assert degenerate("The answer is " + "x" * 40)
    assert degenerate("ha ha ha " + "no no " * 5)
    assert not degenerate("There are 7," + "987," * 3)
    assert not degenerate("The capital of France is Paris. It is large, large and old.")
    assert not degenerate("It costs 1,000,000 dollars, or 3.14 each.")
    assert not degenerate("Bye bye!")
    # A sentence over and over (SmolLM2, in a CI run): cut as it ends the second time, not before.
    said = "They can learn to fly by experience and instinct, and they can also learn to fly by instinct. "
    before = "Birds can learn to fly by experience and instinct. "
    first = next(n for n in range(1, 400) if degenerate((before + said * 3)[:n]))
    assert len(before + said) + 60 < first <= len(before + said * 2), (before + said * 3)[:first]
    assert not degenerate("I think so. I think so. Yes, I am sure.")  # short pieces twice are speech
    assert not degenerate("Paris is the capital of France. Berlin is the capital of Germany. "
                          "Rome is the capital of Italy.")


def test_the_first_clause_can_be_cut_by_time_at_its_last_complete_word() -> None:
    from edgeagent.tts.clauses import ClauseSplitter

    sp = ClauseSplitter(first_words=3)  # the time cut comes before the word limit
    assert sp.push("Leonardo da Vin") == []
    assert sp.cut() == ["Leonardo da"]
    assert sp.pending == "Vin"
    assert sp.cut() == []  # one unfinished word waits for its end
    assert sp.push("ci painted it ") == []
    assert sp.cut() == ["Vinci painted it"]
    digits = ClauseSplitter()
    digits.push("7,987,98")
    assert digits.cut() == ["7,987,98"]  # no space ever comes: a number goes out whole


def test_a_replaced_utterance_leaves_no_final_owed() -> None:
    """The STT utterance is opened again from the wake phrase while a flush of the old one is
    unanswered (a fast "Hey Jarvis, set a timer…": its phrase's final came alone, the user had
    paused again since): that final never comes. The tracker stops waiting for it (and, paused,
    flushes the new utterance), so the question's own final ends the turn; it used to be taken
    for a stale one, every later final too, and the turn never ended."""
    tr = TurnTracker(TurnConfig(min_delay_s=0.3, max_delay_s=2.0))
    assert tr.open_at(1.0, speaking=True)[0].action is Action.OPEN
    assert [s.action for s in tr.on_vad(window(1.6, True, silence=W))] == [Action.FLUSH]  # flush 1
    assert [s.action for s in tr.on_vad(window(1.7, True))] == [Action.REOPEN]
    assert [s.action for s in tr.on_vad(window(1.9, True, silence=W))] == [Action.FLUSH]  # flush 2
    assert tr.on_final("") == []  # the phrase alone: flush 1's final, stale (flush 2 is pending)
    assert [s.action for s in tr.new_utterance()] == [Action.FLUSH]  # paused: the new one is asked
    assert tr.on_final("Set a timer.") == []  # the question's final counts, waiting for the detector
    assert tr.set_delay("Set a timer.", 0.3) == []
    acts = quiet(tr, 1.9 - W, 2.4)
    assert acts and acts[0] == (Action.COMMIT, "Set a timer."), acts
    speaking = TurnTracker(TurnConfig())
    speaking.open_at(1.0, speaking=True)
    speaking.on_vad(window(1.6, True, silence=W))
    speaking.on_vad(window(1.7, True))
    assert speaking.new_utterance() == []  # speaking: the next pause flushes the new utterance
