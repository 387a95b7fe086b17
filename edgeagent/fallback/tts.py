"""A TTS made of several: the first audio of each reply must come in time, or the next voice speaks.

The deadline of a segment starts when its text holds a whole first clause (a
clause mark, a handful of words, or flush()), so a slow LLM is not blamed on the
voice. On an error or a missed deadline before any audio of the segment, the
next member gets the whole segment's text; after audio has gone out, it gets
only the text not yet spoken (never a clause twice).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.fallback.chain import Chain, Chained, Member, close_member, forward
from edgeagent.stage import Flush, StageStream
from edgeagent.tts.base import TTS, SynthesizedAudio
from edgeagent.tts.streaming import TTSError

_CLAUSE_READY = re.compile(r"[,.!?;:…]\s|\n|(?:\S+\s+){5}")


class FallbackTTS(Chained, TTS):
    """The chain's voices as one TTS; audio keeps each voice's own rate (outputs resample)."""

    provider = "fallback"

    def __init__(self, chain: Chain) -> None:
        super().__init__()
        self.chain = chain
        for m in chain.members:
            m.stage.on_metrics(self._report)

    @property
    def sample_rate(self) -> int:
        return int(self.chain.candidates()[0].stage.sample_rate)

    def speed_change(self, speed: float) -> Callable[[], None]:
        steps = [m.stage.speed_change(speed) for m in self.chain.members]  # every voice in it

        def all_voices() -> None:
            for step in steps:
                step()

        return all_voices

    def stream(self) -> FallbackTTSStream:
        return FallbackTTSStream(self.chain)

    async def synthesize(self, text: str) -> Any:
        errors = []
        order = self.chain.candidates()
        for i, m in enumerate(order):
            try:
                audio = await wait_for(m.stage.synthesize(text), m.deadline_s + len(text) / 20)
                self.chain.served(m)
                return audio
            except Exception as exc:
                self.chain.failed(m, exc, order[i + 1] if i + 1 < len(order) else None)
                errors.append(f"{m.label}: {exc}")
        raise TTSError("every TTS provider failed: " + "; ".join(errors), retryable=True)

    async def aclose(self) -> None:
        await self.chain.aclose()


class FallbackTTSStream(StageStream[str, SynthesizedAudio]):
    """Text in, audio out, from whichever member serves; :attr:`served_by` names it."""

    def __init__(self, chain: Chain) -> None:
        self._chain = chain
        self._events: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self._order = chain.candidates()
        self._pos = 0
        self._gen = 0
        self._inner: StageStream[str, SynthesizedAudio] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seg_text = ""
        self._spoken = ""  # the clauses of this segment whose audio went out
        self._audio = False
        self._flushed = False
        self._input_ended = False
        self._deadline: float | None = None
        self.served_by: str | None = None
        super().__init__()

    @property
    def _member(self) -> Member:
        return self._order[self._pos]

    async def _run(self) -> None:
        feeder = asyncio.ensure_future(self._feed())
        try:
            self._open("")
            while True:
                timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                try:
                    kind, gen, value = await wait_for(self._events.get(), timeout)
                except asyncio.TimeoutError:
                    await self._switch(asyncio.TimeoutError())
                    continue
                if kind == "in":
                    self._take_input(value)
                elif kind == "in_end":
                    self._input_ended = True
                    assert self._inner is not None
                    self._inner.end_input()
                elif gen != self._gen:
                    continue  # from a member already left
                elif kind == "item":
                    self._take_audio(value)
                elif kind == "error":
                    await self._switch(value)
                elif kind == "end" and self._input_ended:
                    return
        finally:
            feeder.cancel()
            await self._close_inner()

    async def _feed(self) -> None:
        async for item in self._inputs():
            self._events.put_nowait(("in", 0, item))
        self._events.put_nowait(("in_end", 0, None))

    def _take_input(self, item: Any) -> None:
        assert self._inner is not None
        if isinstance(item, Flush):
            self._flushed = True
            self._inner.flush()
        else:
            self._seg_text += item
            self._inner.push(item)
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None and not self._audio and (
                (self._flushed and self._seg_text.strip()) or _CLAUSE_READY.search(self._seg_text)):
            self._deadline = time.monotonic() + self._member.deadline_s

    def _take_audio(self, audio: SynthesizedAudio) -> None:
        if audio.frame.num_samples and not self._audio:
            self._audio = True
            self._deadline = None
            self._chain.served(self._member)
            self.served_by = self._member.label
        if audio.text and not self._spoken.endswith(audio.text):
            self._spoken += audio.text
        self._emit(audio)
        if audio.is_final:
            self._seg_text, self._spoken, self._audio, self._flushed, self._deadline = "", "", False, False, None

    async def _switch(self, exc: BaseException) -> None:
        failed = self._member
        nxt = self._order[self._pos + 1] if self._pos + 1 < len(self._order) else None
        self._chain.failed(failed, exc, nxt)
        await self._close_inner()
        if nxt is None:
            raise TTSError(f"every TTS provider failed (last: {failed.label}: {exc or 'stalled'})", retryable=True)
        self._pos += 1
        self._open(_unspoken(self._seg_text, self._spoken) if self._audio else self._seg_text)

    def _open(self, replay: str) -> None:
        self._gen += 1
        inner: StageStream[str, SynthesizedAudio] = self._member.stage.stream()
        self._inner = inner
        self._reader = asyncio.ensure_future(forward(inner, self._gen, self._events))
        self._deadline = None
        if replay:
            inner.push(replay)
        if self._flushed:
            inner.flush()
        if self._input_ended:
            inner.end_input()
        self._arm()

    async def _close_inner(self) -> None:
        await close_member(self._reader, self._inner)
        self._inner = self._reader = None


def _unspoken(text: str, spoken: str) -> str:
    """The part of ``text`` after the clauses already spoken (best effort on whitespace)."""
    if not spoken:
        return text
    flat = re.sub(r"\s+", " ", text)
    tail = re.sub(r"\s+", " ", spoken).strip()[-40:]
    at = flat.rfind(tail)
    return flat[at + len(tail):] if at >= 0 else ""
