"""Turn detectors: how much silence a user turn needs before it ends (adaptive endpointing).

A detector judges the final transcript of a pause, and the audio of the turn up to
now, and answers with a :class:`Verdict`: the silence the turn needs, within
``[turn.min_delay_s, turn.max_delay_s]``, and the probabilities it was based on.

- ``vad``: always ``min_delay_s``; ``stt``: none (the final transcript ends the turn).
- ``semantic``: the words. The local LLM's probability of its end-of-turn token (or
  a sentence end) right after the text, with the STT's trailing punctuation taken
  off first: Whisper punctuates a pause as if it were an end ("What is the capital
  of?"), and only the words themselves tell a fragment from a question
  (:func:`untrusted_punctuation`).
- ``audio``: the voice. Smart Turn (:mod:`edgeagent.voice.audio_turn`) on the last
  seconds of the turn's audio.
- ``combined`` (default): the words first; the voice where the words leave room for
  doubt (:func:`voice_may_matter`): neither a sure end nor a clear fragment. There
  :func:`endpoint_delay` turns the two into one wait: shorter when both find the turn
  over, longer as either doubts. Elsewhere the voice could not change the wait much,
  and asking it anyway would cost the reply ~40 ms of CPU on a 2-core board (Smart
  Turn on one core slowed the LLM's prompt and first token from 63 to 133 ms here).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

from edgeagent.audio.frame import AudioFrame
from edgeagent.config.voice import TurnConfig
from edgeagent.llm.chat import ChatContext

AUDIO_WEIGHT = 0.2
"""How far the voice alone may push the wait towards ``max_delay_s`` (the words: all the way).
Smart Turn misjudges synthetic voices both ways (``scripts/bench-turn``: AUC 0.42 on espeak-ng
fragments against complete questions, the words without punctuation 0.95)."""
AUDIO_RELIEF = 0.75
"""A voice that sounds finished takes up to this share off the words' doubt, while that doubt
is mild (the words are not clearly a fragment): "Can you tell me a joke" scored 0.007."""
MILD_DOUBT = 0.5
"""The words' doubt below which the voice may relieve it (a fragment's is 0.85-1)."""
AUDIO_DONE = 0.5
"""Smart Turn's probability at or above which the voice sounds finished."""
AUDIO_SPAN = 0.4
"""Away from :data:`AUDIO_DONE`, the voice's doubt (or confidence) grows linearly over this much."""
TEXT_DOUBT_DECADES = 2.0
"""Below ``turn.eot_threshold``, the words' doubt is full this many decades further down."""
TEXT_SURE = 4.0
"""The words are a sure end at this many times ``turn.eot_threshold``: the voice is not asked."""

_TRAILING = re.compile(r"[\s.?!…,;:]+$")


@dataclass(frozen=True)
class Verdict:
    delay: float
    """Seconds of silence the turn needs."""
    text_probability: float | None = None
    """P(end of turn) from the words, if they were asked."""
    audio_probability: float | None = None
    """P(complete) from the voice, if it was asked."""


class TurnDetector(Protocol):
    name: str
    needs_audio: bool

    async def judge(self, ctx: ChatContext, text: str, audio: AudioFrame | None) -> Verdict:
        """How much silence the turn with final ``text`` (after ``ctx``) and ``audio`` needs."""

    async def prepare(self, ctx: ChatContext, interim: str) -> None:
        """An interim transcript of the turn (after ``ctx``): get ready to judge its final one."""


class EndOfTurnModel(Protocol):
    async def end_of_turn_logprob(self, ctx: ChatContext, user_text: str, *,
                                  reply_text: str | None = None) -> float: ...

    async def prepare_turn(self, ctx: ChatContext, user_text: str) -> bool:
        """Cache the words heard so far while idle (False: busy, nothing done)."""


class AudioTurnModel(Protocol):
    async def probability(self, audio: AudioFrame) -> float: ...


def untrusted_punctuation(text: str) -> str:
    """``text`` without the punctuation an STT put at its end (a pause is not a full stop)."""
    return _TRAILING.sub("", text.strip())


def text_doubt(p: float, threshold: float) -> float:
    """0 when the words' P(end) is at least ``threshold``, 1 when it is
    :data:`TEXT_DOUBT_DECADES` decades below, log-linear in between."""
    if p >= threshold:
        return 0.0
    if p <= 0.0:
        return 1.0
    return min(1.0, math.log10(threshold / p) / TEXT_DOUBT_DECADES)


def audio_doubt(p: float) -> float:
    """0 when the voice sounds finished (:data:`AUDIO_DONE`), 1 well below it."""
    return min(1.0, max(0.0, (AUDIO_DONE - p) / AUDIO_SPAN))


def audio_confidence(p: float) -> float:
    """0 at :data:`AUDIO_DONE` and below, 1 well above it."""
    return min(1.0, max(0.0, (p - AUDIO_DONE) / AUDIO_SPAN))


def voice_may_matter(options: TurnConfig, text_p: float | None) -> bool:
    """Whether the voice is worth hearing after the words said ``text_p``: not for a sure
    end (at least :data:`TEXT_SURE` times the threshold), nor for a clear fragment (the
    words' doubt at :data:`MILD_DOUBT` or more, which the voice may not relieve)."""
    if text_p is None:
        return True
    return text_p < TEXT_SURE * options.eot_threshold and text_doubt(text_p, options.eot_threshold) < MILD_DOUBT


def endpoint_delay(options: TurnConfig, text_p: float | None, audio_p: float | None) -> float:
    """The silence to wait: ``min_delay_s`` when the detectors asked find the turn over, longer
    as either doubts, up to ``max_delay_s``. The words lead (a fragment waits the longest,
    whatever the voice says); the voice adds at most :data:`AUDIO_WEIGHT` of doubt of its own,
    and takes up to :data:`AUDIO_RELIEF` off a mild doubt of the words when it sounds finished."""
    doubt = 0.0
    if text_p is not None:
        doubt = text_doubt(text_p, options.eot_threshold)
        if audio_p is not None and doubt < MILD_DOUBT:
            doubt *= 1.0 - AUDIO_RELIEF * audio_confidence(audio_p)
    if audio_p is not None:
        doubt = max(doubt, AUDIO_WEIGHT * audio_doubt(audio_p))
    lo, hi = options.min_delay_s, max(options.min_delay_s, options.max_delay_s)
    return lo + (hi - lo) * doubt


class FixedDelay:
    """The same wait whatever was said: ``vad`` the short one, ``stt`` none (the final
    transcript ends the turn)."""

    needs_audio = False

    def __init__(self, name: str, delay: float) -> None:
        self.name, self.delay = name, delay

    async def judge(self, ctx: ChatContext, text: str, audio: AudioFrame | None) -> Verdict:
        return Verdict(self.delay)

    async def prepare(self, ctx: ChatContext, interim: str) -> None:
        return None


class Detector:
    """``semantic``, ``audio`` or ``combined``: the words, the voice, or both at once.

    The words are evaluated as the next user message after the conversation so far,
    which the reply then reuses from the KV cache, so the check costs little more than
    the reply's own prompt evaluation.
    """

    def __init__(self, options: TurnConfig, text: EndOfTurnModel | None, audio: AudioTurnModel | None) -> None:
        self.options = options
        self._text = text
        self._audio = audio
        self.name = "combined" if text and audio else "semantic" if text else "audio"
        self.needs_audio = audio is not None

    async def judge(self, ctx: ChatContext, text: str, audio: AudioFrame | None) -> Verdict:
        text_p = await self._words(ctx, text)
        audio_p = await self._voice(audio) if voice_may_matter(self.options, text_p) else None
        return Verdict(endpoint_delay(self.options, text_p, audio_p), text_p, audio_p)

    async def prepare(self, ctx: ChatContext, interim: str) -> None:
        """The words heard so far, all but the last (an interim's last word is the least sure),
        go into the LLM's cache: at the final transcript the probe (and the reply after it)
        evaluate only the rest. That takes ~4 ms a token off the reply's first token here."""
        words = untrusted_punctuation(interim).rsplit(None, 1)
        if self._text is not None and len(words) == 2:
            await self._text.prepare_turn(ctx, words[0])

    async def _words(self, ctx: ChatContext, text: str) -> float | None:
        if self._text is None:
            return None
        words = untrusted_punctuation(text)
        if not words:
            return 0.0
        # The reply to the text as written (preempt.py) evaluates the same prompt, with the
        # punctuation: the model takes it along (one batch), and the reply samples at once.
        logprob = await self._text.end_of_turn_logprob(ctx, words, reply_text=text)
        return math.exp(logprob) if logprob > -700 else 0.0

    async def _voice(self, audio: AudioFrame | None) -> float | None:
        if self._audio is None or audio is None or not audio.num_samples:
            return None
        return await self._audio.probability(audio)


def make_detector(options: TurnConfig, llm: object, audio_model: AudioTurnModel | None = None) -> TurnDetector:
    """The detector ``options.detection`` names. ``semantic`` and ``combined`` need an LLM with
    ``end_of_turn_logprob``; ``audio`` and ``combined`` an audio end-of-turn model."""
    kind = options.detection
    if kind in ("semantic", "combined") and not hasattr(llm, "end_of_turn_logprob"):
        raise ValueError(f"turn.detection = {kind} needs an LLM with end_of_turn_logprob; "
                         f"{type(llm).__name__} has none (use audio, vad or stt)")
    if kind in ("audio", "combined") and audio_model is None:
        raise ValueError(f"turn.detection = {kind} needs the audio end-of-turn model (Smart Turn): "
                         "load it with Models.load() or pass audio_turn= to the session "
                         "(or use semantic, vad or stt)")
    if kind == "semantic":
        return Detector(options, llm, None)  # type: ignore[arg-type]
    if kind == "audio":
        return Detector(options, None, audio_model)
    if kind == "combined":
        return Detector(options, llm, audio_model)  # type: ignore[arg-type]
    return FixedDelay(kind, 0.0 if kind == "stt" else options.min_delay_s)
