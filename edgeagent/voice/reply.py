"""The mouth of a session: one reply, from LLM tokens (and tool calls) through TTS to the speaker.

The LLM's text deltas are pushed into one TTS stream as they come; its audio is
written to the output while the LLM still generates (clause by clause, see
:mod:`edgeagent.tts.streaming`). Tool calls are run between LLM rounds; a tool
that returns an Agent hands the conversation over, and the next round speaks
with the new agent's instructions and tools.

:meth:`Reply.pause` stops the sound at once (the output buffer is cleared) but
keeps the reply, for a barge-in that may turn out to be a cough;
:meth:`Reply.resume` carries on. Cancelling the task that runs :meth:`Reply.run`
(an interruption) stops the LLM and the TTS and drops queued audio.

A preemptive reply (:meth:`Reply.begin`) generates text and audio while the
user's turn is still being decided, but holds back everything with an effect
outside it: no sample reaches the output and no tool runs until :meth:`Reply.run`
releases it; :meth:`Reply.drop` throws it away without a trace.

A reply whose text degenerates (the same piece over and over, a run of digits
with no end, no space for :data:`NO_SPACE_CHARS` characters) is cut at once
(:func:`degenerate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.io import AudioOutput
from edgeagent.audio.playback import BufferedOutput
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext, ToolCall
from edgeagent.llm.tools import FunctionTool
from edgeagent.stage import StageStream
from edgeagent.tts.base import TTS, SynthesizedAudio
from edgeagent.urgency import REPLY_START
from edgeagent.voice.speech import SpeechHandle

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 4
"""LLM rounds per reply (each may call tools); the LLM itself also bounds tool steps."""


class ReplyHost(Protocol):
    """What a reply needs from its session."""

    def llm_context(self) -> ChatContext: ...
    def current_tools(self) -> Sequence[FunctionTool]: ...
    async def run_tools(self, calls: Sequence[ToolCall], text: str, handle: SpeechHandle) -> None: ...
    def on_first_audio(self, handle: SpeechHandle) -> None: ...


@dataclass
class ReplyTimes:
    """Monotonic times of this reply's first steps (None: not reached)."""

    llm_request: float | None = None
    llm_first: float | None = None
    tts_first_text: float | None = None
    tts_first_audio: float | None = None
    first_out: float | None = None
    llm_provider: str | None = None
    """Who served the text (a fallback chain's member label, else the stage's provider)."""
    tts_provider: str | None = None


class Reply:
    """One spoken reply; :meth:`run` it in a task, cancel the task to interrupt."""

    def __init__(
        self,
        handle: SpeechHandle,
        host: ReplyHost,
        llm: LLM,
        tts: TTS,
        out: AudioOutput,
        *,
        text: str | None = None,
        ctx: ChatContext | None = None,
        user_text: str | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.handle = handle
        self._host = host
        self._llm = llm
        self._tts = tts
        self._out = out
        self._text = text  # say(): fixed text, no LLM
        self._ctx = ctx  # the first round's context (on_user_turn_completed may have added to it)
        self._max_tokens = max_tokens
        self.user_text = user_text
        """The user's words this reply answers (added to the history when it starts)."""
        self.times = ReplyTimes()
        self._playing = asyncio.Event()
        self._playing.set()
        self._paused_at: float | None = None
        self.audible = False
        """Some of its audio has been handed to the output."""
        self._generated = ""  # all the LLM text, spoken or not
        self._number = ""  # a number at the end of the text, not yet pushed (see _push_words)
        self._released = asyncio.Event()
        self._released.set()
        self._task: asyncio.Task[None] | None = None
        self._started: Callable[[], None] = _nothing  # releases REPLY_START (see _work)

    def set_context(self, ctx: ChatContext) -> None:
        """The context of the first LLM round (e.g. as on_user_turn_completed left it)."""
        self._ctx = ctx

    # -- control -----------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return not self._playing.is_set()

    def pause(self) -> None:
        """Silence now (queued output dropped); :meth:`resume` carries on from the next chunk."""
        if self.paused:
            return
        self._playing.clear()
        self._paused_at = time.monotonic()
        self._out.clear()

    def resume(self) -> None:
        self._playing.set()
        self._paused_at = None

    # -- preemption ----------------------------------------------------------------

    @property
    def begun(self) -> bool:
        """Started by :meth:`begin` (generating ahead, held until :meth:`run`)."""
        return self._task is not None

    def begin(self) -> None:
        """Start generating now, holding its audio and tool calls back until :meth:`run`."""
        if self._task is not None:
            raise RuntimeError("the reply has already begun")
        self._released.clear()
        self._task = asyncio.ensure_future(self._work())

    def drop(self) -> None:
        """Throw a begun reply away: LLM and TTS stop, nothing of it was heard or kept."""
        if self._task is not None and not self._released.is_set():
            self._task.cancel()

    # -- the work ----------------------------------------------------------------

    async def run(self) -> None:
        """Speak the reply (one begun ahead carries on where it is) until it is over."""
        self._released.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._work())
        await self._task

    async def _work(self) -> None:
        self._started = REPLY_START.acquire()  # until the first audio is synthesised
        tts = self._tts.stream()
        timed = self._out if isinstance(self._out, BufferedOutput) else None
        speaker = asyncio.ensure_future(self._speak(tts))
        finished = False
        try:
            if self._text is not None:
                self._push(tts, self._text)
            else:
                await self._generate(tts)
                if self._number:
                    self._push(tts, self._number)
            tts.flush()
            await speaker
            finished = True
        finally:
            self._started()
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await speaker
            await tts.aclose()
            self.times.tts_provider = tts.served_by or self._tts.provider
            if timed is not None and timed.on_frame_started == self._frame_started:
                timed.on_frame_started = None
            if not finished and self.audible:  # interrupted or failed: nothing of it may play on
                self._out.clear()

    async def _generate(self, tts: StageStream[str, SynthesizedAudio]) -> None:
        ctx = self._ctx
        for _ in range(MAX_TOOL_ROUNDS):
            if ctx is None:
                ctx = self._host.llm_context()
            tools = self._host.current_tools()
            if self.times.llm_request is None:
                self.times.llm_request = time.monotonic()
            stream = self._llm.chat(ctx, tools, max_tokens=self._max_tokens)
            calls: list[ToolCall] = []
            round_text: list[str] = []
            try:
                async for chunk in stream:
                    if self.times.llm_first is None:
                        self.times.llm_first = time.monotonic()
                    if chunk.text:
                        round_text.append(chunk.text)
                        self._generated += chunk.text
                        if degenerate(self._generated):
                            log.warning("the LLM text degenerates (%r...): reply cut", self._generated[-40:])
                            self._number = ""  # the loop is never read out
                            return
                        self._push_words(tts, chunk.text)
                    calls.extend(chunk.tool_calls)
            finally:
                await stream.aclose()
                self.times.llm_provider = stream.served_by or self._llm.provider
            if not calls:
                return
            await self._released.wait()  # a preemptive reply runs no tool before its turn is committed
            await self._host.run_tools(calls, "".join(round_text), self.handle)
            ctx = None
        log.warning("the reply stopped after %d rounds of tool calls", MAX_TOOL_ROUNDS)

    def _push_words(self, tts: StageStream[str, SynthesizedAudio], text: str) -> None:
        """Push LLM text, holding back a number until its word ends: a number that turns into
        a loop ("7,987,987,...") is then never read out."""
        text = self._number + text
        number = _TRAILING_NUMBER.search(text)
        self._number = number.group() if number else ""
        text = text[: number.start()] if number else text
        if text:
            self._push(tts, text)

    def _push(self, tts: StageStream[str, SynthesizedAudio], text: str) -> None:
        if self.times.tts_first_text is None and text.strip():
            self.times.tts_first_text = time.monotonic()
        self.handle.text += text
        tts.push(text)

    async def _speak(self, tts: StageStream[str, SynthesizedAudio]) -> None:
        async for audio in tts:
            if audio.frame.num_samples:
                if self.times.tts_first_audio is None:
                    self.times.tts_first_audio = time.monotonic()
                    self._started()
                await self._released.wait()
                await self._playing.wait()
                await self._write(audio.frame)
                self.handle.spoken_text = _spoken(self.handle.spoken_text, audio)
            if audio.is_final:
                break
        await self._released.wait()
        await self._playing.wait()
        await self._out.drain()

    async def _write(self, frame: AudioFrame) -> None:
        if not self.audible:
            self.audible = True
            if isinstance(self._out, BufferedOutput):
                self._out.on_frame_started = self._frame_started
            self._host.on_first_audio(self.handle)
        if not isinstance(self._out, BufferedOutput) and self.times.first_out is None:
            self.times.first_out = time.monotonic()
        await self._out.write(frame)

    def _frame_started(self, frame: AudioFrame, handed_over: float) -> None:
        if self.times.first_out is None:
            self.times.first_out = handed_over


_LOOP = re.compile(r"(.{2,24}?)\1{4,}$", re.DOTALL)
_DIGITS = re.compile(r"[\d][\d,.]{15,}$")
_TRAILING_NUMBER = re.compile(r"\S*\d\S*$")
NO_SPACE_CHARS = 40
"""No word is this long: text without a space for this many characters is not speech."""
SAID_TWICE_CHARS = (25, 240)
"""A piece of text this long (least, most characters) said twice in a row is a loop: SmolLM2
can say one sentence over and over ("They can learn to fly by experience and instinct, and they
can also learn to fly by instinct." four times, 30 s of speech, in a CI run)."""


def degenerate(text: str) -> bool:
    """The text ends in a loop a voice must not read out: one short piece five times over
    ("987,987,987,..."), a number of 16 or more digits and separators,
    :data:`NO_SPACE_CHARS` characters without a space, or a longer piece (a sentence) twice
    in a row. Each is caught within a few tokens of where it begins (well under 1 s of LLM
    time), a sentence as its second time ends."""
    tail = text[-240:]
    if _DIGITS.search(tail) or _LOOP.search(tail) or _said_twice(text[-2 * SAID_TWICE_CHARS[1]:]):
        return True
    return len(tail) >= NO_SPACE_CHARS and not any(ch.isspace() for ch in tail[-NO_SPACE_CHARS:])


def _said_twice(tail: str) -> bool:
    """``tail`` ends in one piece of :data:`SAID_TWICE_CHARS` characters said twice in a row
    (in whatever phase: text with period p has its last p characters twice over at its end)."""
    least, most = SAID_TWICE_CHARS
    return any(tail[-p:] == tail[-2 * p : -p] for p in range(least, min(most, len(tail) // 2) + 1))


def _nothing() -> None:
    pass


def _spoken(so_far: str, audio: SynthesizedAudio) -> str:
    """Add a clause's text the first time one of its chunks is played."""
    if audio.text and not so_far.endswith(audio.text):
        return f"{so_far} {audio.text}".strip()
    return so_far


