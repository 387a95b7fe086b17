"""Scripted stages: a VAD, wake word, STT, LLM and TTS that replay a script instead of a model.

Each implements the real stage contract (:mod:`edgeagent.stage` and the kind's base), so a real
:class:`~edgeagent.voice.session.AgentSession` runs on them, and its logic (turns, barge-in,
handoff, fallback) is tested in milliseconds of work, never at the mercy of a model's hearing.

- :class:`ScriptedVAD`: a 20 ms (or any) frame louder than ``speech_dbfs`` is speech, quieter is
  silence, through the product's own :class:`~edgeagent.vad.segmenter.Segmenter`; a test speaks
  with :func:`voice` (loud noise) into :class:`~edgeagent.bench.scripted.ScriptedMic`.
- :class:`ScriptedWake`: fires at the end of a :func:`wake_marker` (frames louder than ``marker_dbfs``).
- :class:`ScriptedSTT`: each final transcript (one per flush) is the script's next one, in order
  across utterances ("" when the script has run out: nothing recognised).
- :class:`ScriptedLLM`: replays text pieces and tool calls (the same ones each reply, or what
  ``reply_to`` says for the context), and judges the end of a turn by the last word.
- :class:`ScriptedTTS`: a tone as long as the text (``seconds_per_char``), clause by clause.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.llm.base import LLM, LLMOptions
from edgeagent.llm.chat import ChatChunk, ChatContext, ToolCall
from edgeagent.llm.llama_gen import LLMError
from edgeagent.llm.tools import FunctionTool
from edgeagent.stage import Flush, StageStream
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream
from edgeagent.tts.base import TTS, SynthesizedAudio
from edgeagent.vad.base import VAD, VADEvent, VADEventType, VADOptions
from edgeagent.vad.segmenter import Segmenter, SegmenterUpdate
from edgeagent.wake.base import WakeEvent, WakeWord

SPEECH_DBFS = -40.0
"""A frame louder than this (RMS) is speech to :class:`ScriptedVAD` (the mic's room noise: -65)."""
VOICE_DBFS = -20.0
"""The level of :func:`voice`."""
MARKER_DBFS = -6.0
"""A frame louder than this is the wake word to :class:`ScriptedWake` (:func:`wake_marker`)."""

Script = Sequence[str | ToolCall]


def rms_dbfs(frame: AudioFrame) -> float:
    if not frame.num_samples:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(frame.samples, dtype=np.float64)))) / 32768.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def noise(seconds: float, dbfs: float, seed: int = 1) -> AudioFrame:
    """White noise at ``dbfs`` (RMS), 16 kHz."""
    n = round(seconds * RECOGNITION_RATE)
    level = 10.0 ** (dbfs / 20.0) * 32768.0
    samples = np.random.default_rng(seed).normal(0.0, level, n)
    return AudioFrame.from_int16(np.clip(np.round(samples), -32768, 32767).astype(np.int16), RECOGNITION_RATE)


def voice(seconds: float) -> AudioFrame:
    """``seconds`` of "speech": loud enough for :class:`ScriptedVAD`, not for the wake word."""
    return noise(seconds, VOICE_DBFS)


def wake_marker(seconds: float = 0.2) -> AudioFrame:
    """The wake word: louder than :data:`MARKER_DBFS` (and speech to the VAD too)."""
    return noise(seconds, MARKER_DBFS + 3.0, seed=2)


# -- VAD ---------------------------------------------------------------------------------


class ScriptedVAD(VAD):
    """Speech is what is louder than ``speech_dbfs``: each pushed frame is one VAD window."""

    provider = "scripted"

    def __init__(self, activation_threshold: float = 0.5, *, speech_dbfs: float = SPEECH_DBFS,
                 options: VADOptions | None = None) -> None:
        super().__init__()
        self.options = options or VADOptions(activation_threshold=activation_threshold)
        self.speech_dbfs = speech_dbfs

    def stream(self) -> StageStream[AudioFrame, VADEvent]:
        return _VADStream(self)


class _VADStream(StageStream[AudioFrame, VADEvent]):
    def __init__(self, vad: ScriptedVAD) -> None:
        self._vad = vad
        self._segmenter = Segmenter(vad.options)
        super().__init__()

    async def _run(self) -> None:
        async for item in self._inputs():
            if isinstance(item, Flush):
                self._finish()
                continue
            p = 1.0 if rms_dbfs(item) > self._vad.speech_dbfs else 0.0
            upd = self._segmenter.process(item.num_samples / item.sample_rate, p)
            self._emit(_vad_event(VADEventType.INFERENCE, upd, p))
            if upd.started:
                self._emit(_vad_event(VADEventType.START_OF_SPEECH, upd, p))
            if upd.ended:
                self._emit(_vad_event(VADEventType.END_OF_SPEECH, upd, p))
        self._finish()

    def _finish(self) -> None:
        upd = self._segmenter.finish()
        if upd is not None:
            self._emit(_vad_event(VADEventType.END_OF_SPEECH, upd, 0.0))


def _vad_event(kind: VADEventType, upd: SegmenterUpdate, p: float) -> VADEvent:
    return VADEvent(type=kind, timestamp=upd.time, probability=p, speaking=upd.speaking,
                    speech_duration=upd.speech_duration, silence_duration=upd.silence_duration)


# -- wake word ---------------------------------------------------------------------------


class ScriptedWake(WakeWord):
    """Fires ``words[0]`` (score 1.0: trusted, no words check) at the end of each
    :func:`wake_marker`."""

    provider = "scripted"

    def __init__(self, words: Iterable[str] = ("hey_jarvis",), threshold: float = 0.5, *,
                 marker_dbfs: float = MARKER_DBFS) -> None:
        super().__init__()
        self._words = tuple(words)
        self.threshold = threshold
        self.marker_dbfs = marker_dbfs

    @property
    def words(self) -> tuple[str, ...]:
        return self._words

    def stream(self) -> StageStream[AudioFrame, WakeEvent]:
        return _WakeStream(self)


class _WakeStream(StageStream[AudioFrame, WakeEvent]):
    def __init__(self, wake: ScriptedWake) -> None:
        self._wake = wake
        super().__init__()

    async def _run(self) -> None:
        pushed, on_marker = 0, False
        async for item in self._inputs():
            if isinstance(item, Flush):
                continue
            start = pushed / RECOGNITION_RATE
            pushed += item.num_samples
            loud = rms_dbfs(item) > self._wake.marker_dbfs
            if on_marker and not loud:  # as a wake word model, at the end of the phrase
                self._emit(WakeEvent(self._wake.words[0], 1.0, start, start))
            on_marker = loud


# -- STT ---------------------------------------------------------------------------------


class ScriptedSTT(STT):
    """Each FINAL is the next of ``transcripts`` (in order, across utterances and streams);
    ``heard`` lists the finals given out."""

    provider = "scripted"

    def __init__(self, transcripts: Iterable[str] = (), model: Any = None) -> None:
        super().__init__()
        self.transcripts: deque[str] = deque(transcripts)
        self.heard: list[str] = []

    def next_transcript(self) -> str:
        text = self.transcripts.popleft() if self.transcripts else ""
        self.heard.append(text)
        return text

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> STTStream:
        return _STTStream(self)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        return SpeechEvent(SpeechEventType.FINAL, self.next_transcript(), audio_duration=audio.duration)


class _STTStream(STTStream):
    def __init__(self, stt: ScriptedSTT) -> None:
        self._stt = stt
        super().__init__()

    async def _run(self) -> None:
        seconds = 0.0
        async for item in self._inputs():
            if isinstance(item, Flush):
                self._emit(SpeechEvent(SpeechEventType.FINAL, self._stt.next_transcript(), audio_duration=seconds))
            else:
                seconds += item.duration


# -- LLM ---------------------------------------------------------------------------------

UNFINISHED = ("the", "a", "an", "of", "to", "and", "or", "is", "in", "for", "my", "what")
"""A turn whose last word is one of these is a fragment to :meth:`ScriptedLLM.end_of_turn_logprob`."""


class ScriptedLLM(LLM):
    """Replays ``pieces`` (text, or a ToolCall) one every ``every_s`` seconds for each reply, or
    what ``reply_to(context)`` returns for it; with ``error``, every reply fails with it (after
    ``every_s``). Records when each piece went out (``sent``), when the stream was closed
    (``closed_at``), every context it was asked (``asked``) and every one it was given to
    evaluate ahead of a turn (``readied``, by :meth:`prefill`).

    The turn detector's words model: a turn ending in one of :data:`UNFINISHED` is a fragment
    (P(end) 1e-4), any other a finished turn (P(end) 0.9)."""

    def __init__(self, pieces: Script = (), every_s: float = 0.02, *,
                 reply_to: Callable[[ChatContext], Script] | None = None,
                 error: Exception | None = None, name: str = "scripted") -> None:
        super().__init__()
        self.provider = name
        self.options = LLMOptions()
        self.pieces, self.every_s = list(pieces), every_s
        self.reply_to = reply_to
        self.error = error
        self.sent: list[tuple[float, str]] = []
        self.closed_at: float | None = None
        self.asked: list[ChatContext] = []
        self.readied: list[ChatContext] = []

    def chat(self, ctx: ChatContext, tools: Sequence[FunctionTool] = (), *, temperature: float | None = None,
             max_tokens: int | None = None) -> StageStream[None, ChatChunk]:
        self.asked.append(ctx.copy())
        return _Script(self, self.reply_to(ctx) if self.reply_to is not None else self.pieces)

    async def end_of_turn_logprob(self, ctx: ChatContext, user_text: str, *, reply_text: str | None = None) -> float:
        words = re.findall(r"[a-z']+", user_text.lower())
        return math.log(1e-4 if words and words[-1] in UNFINISHED else 0.9)

    async def prepare_turn(self, ctx: ChatContext, user_text: str) -> bool:
        return True

    async def prefill(self, ctx: ChatContext, tools: Sequence[FunctionTool] = ()) -> int:
        self.readied.append(ctx.copy())
        return 0


class _Script(StageStream[None, ChatChunk]):
    def __init__(self, llm: ScriptedLLM, pieces: Script) -> None:
        self._llm = llm
        self._pieces = list(pieces)
        super().__init__()

    async def _run(self) -> None:
        if self._llm.error is not None:
            await asyncio.sleep(self._llm.every_s)
            raise self._llm.error
        for piece in self._pieces:
            await asyncio.sleep(self._llm.every_s)
            self._llm.sent.append((time.monotonic(), piece if isinstance(piece, str) else "<tool>"))
            self._emit(ChatChunk(text=piece) if isinstance(piece, str) else ChatChunk(tool_calls=(piece,)))

    async def aclose(self) -> None:
        if self._llm.closed_at is None:
            self._llm.closed_at = time.monotonic()
        await super().aclose()


def failing_llm(name: str = "scripted-down") -> ScriptedLLM:
    """An LLM whose every reply fails (a provider that is down)."""
    return ScriptedLLM(error=LLMError(f"{name} is down", retryable=True), name=name)


# -- TTS ---------------------------------------------------------------------------------

_CLAUSE_END = re.compile(r"(?<=[.?!,;:])\s+")
CHUNK_S = 0.1
"""The audio of a clause comes out in chunks of this length."""


class ScriptedTTS(TTS):
    """A 440 Hz tone for each clause, ``seconds_per_char`` a character of its text long."""

    provider = "scripted"

    def __init__(self, speed: float = 1.0, model: str | None = None, *, seconds_per_char: float = 0.02) -> None:
        super().__init__()
        self.seconds_per_char = seconds_per_char / speed

    @property
    def sample_rate(self) -> int:
        return RECOGNITION_RATE

    def tone(self, text: str) -> AudioFrame:
        n = round(len(text.strip()) * self.seconds_per_char * RECOGNITION_RATE)
        t = np.arange(n) / RECOGNITION_RATE
        return AudioFrame.from_float(0.3 * np.sin(2 * np.pi * 440.0 * t), RECOGNITION_RATE)

    def stream(self) -> StageStream[str, SynthesizedAudio]:
        return _TTSStream(self)

    async def synthesize(self, text: str) -> AudioFrame:
        return self.tone(text)


class _TTSStream(StageStream[str, SynthesizedAudio]):
    def __init__(self, tts: ScriptedTTS) -> None:
        self._tts = tts
        self._segment = 0
        super().__init__()

    async def _run(self) -> None:
        text = ""
        async for item in self._inputs():
            if isinstance(item, Flush):
                self._say(text, final=True)
                text = ""
                self._segment += 1
                continue
            *clauses, text = _CLAUSE_END.split(text + item)
            for clause in clauses:
                self._say(clause, final=False)

    def _say(self, clause: str, *, final: bool) -> None:
        audio = self._tts.tone(clause)
        step = round(CHUNK_S * RECOGNITION_RATE)
        chunks = [audio.slice(i, i + step) for i in range(0, audio.num_samples, step)] or [audio]
        for i, chunk in enumerate(chunks):
            self._emit(SynthesizedAudio(chunk, f"s{self._segment}", clause.strip(),
                                        is_final=final and i == len(chunks) - 1))
