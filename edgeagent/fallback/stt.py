"""An STT made of several: each utterance's FINAL must come in time after flush(), or the next one hears it.

The stream keeps the frames of the utterance in progress, so a member that
fails (mid-utterance or after the flush) is replaced by the next one, which
gets the whole utterance replayed. INTERIM results come from whichever member
is serving.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame
from edgeagent.errors import EdgeAgentError
from edgeagent.fallback.chain import Chain, Chained, Member, close_member, forward
from edgeagent.stage import Flush
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream


class STTError(EdgeAgentError):
    """Every speech-to-text provider failed."""

    retryable = True


class FallbackSTT(Chained, STT):
    provider = "fallback"

    def __init__(self, chain: Chain) -> None:
        super().__init__()
        self.chain = chain
        for m in chain.members:
            m.stage.on_metrics(self._report)

    @property
    def last_served(self) -> str | None:
        return self.chain.last_served

    async def warmup(self) -> None:
        """Warm up the members that need it (Whisper's first decode is slow)."""
        for m in self.chain.members:
            await m.stage.warmup()

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> FallbackSTTStream:
        return FallbackSTTStream(self.chain, language, prefix, prefix_s)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        errors = []
        order = self.chain.candidates()
        for i, m in enumerate(order):
            try:
                event: SpeechEvent = await wait_for(m.stage.recognize(audio, language), m.deadline_s)
                self.chain.served(m)
                return event
            except Exception as exc:
                self.chain.failed(m, exc, order[i + 1] if i + 1 < len(order) else None)
                errors.append(f"{m.label}: {exc}")
        raise STTError("every STT provider failed: " + "; ".join(errors))

    async def aclose(self) -> None:
        await self.chain.aclose()


class FallbackSTTStream(STTStream):
    def __init__(self, chain: Chain, language: str | None, prefix: str = "", prefix_s: float = 0.0) -> None:
        self._chain = chain
        self._language, self._prefix, self._prefix_s = language, prefix, prefix_s
        self._events: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self._order = chain.candidates()
        self._pos = 0
        self._gen = 0
        self._inner: STTStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._frames: list[AudioFrame] = []
        self._after_final = False
        self._flushed = False
        self._input_ended = False
        self._deadline: float | None = None
        self.served_by: str | None = None
        super().__init__()

    @property
    def _member(self) -> Member:
        return self._order[self._pos]

    def reopen(self) -> None:
        """The user carried on after the flush: the next FINAL covers the whole utterance."""
        self._events.put_nowait(("reopen", 0, None))

    async def _run(self) -> None:
        feeder = asyncio.ensure_future(self._feed())
        try:
            self._open()
            while True:
                timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                try:
                    kind, gen, value = await wait_for(self._events.get(), timeout)
                except asyncio.TimeoutError:
                    await self._switch(asyncio.TimeoutError())
                    continue
                if kind in ("in", "in_end", "reopen"):
                    self._take_input(kind, value)
                elif gen != self._gen:
                    continue
                elif kind == "item":
                    self._take_event(value)
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

    def _take_input(self, kind: str, item: Any) -> None:
        inner = self._inner
        assert inner is not None
        if kind == "reopen":
            self._after_final = False
            inner.reopen()
            return
        if kind == "in_end":
            self._input_ended = True
            inner.end_input()
            if self._frames and not self._after_final:
                self._arm()
            return
        if isinstance(item, Flush):
            self._flushed = True
            inner.flush()
            self._arm()
            return
        if self._after_final:
            self._frames, self._after_final = [], False
        self._frames.append(item)
        inner.push(item)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._member.deadline_s

    def _take_event(self, event: SpeechEvent) -> None:
        if event.type is SpeechEventType.FINAL:
            self._deadline = None
            self._flushed = False
            self._after_final = True
            self._chain.served(self._member)
            self.served_by = self._member.label
        self._emit(event)

    async def _switch(self, exc: BaseException) -> None:
        failed = self._member
        nxt = self._order[self._pos + 1] if self._pos + 1 < len(self._order) else None
        self._chain.failed(failed, exc, nxt)
        await self._close_inner()
        if nxt is None:
            raise STTError(f"every STT provider failed (last: {failed.label}: {exc or 'stalled'})")
        self._pos += 1
        self._open()

    def _open(self) -> None:
        self._gen += 1
        inner: STTStream = self._member.stage.stream(self._language, prefix=self._prefix, prefix_s=self._prefix_s)
        self._inner = inner
        self._reader = asyncio.ensure_future(forward(inner, self._gen, self._events))
        self._deadline = None
        if not self._after_final:
            for f in self._frames:
                inner.push(f)
        if self._flushed:
            inner.flush()
            self._arm()
        if self._input_ended:
            inner.end_input()

    async def _close_inner(self) -> None:
        await close_member(self._reader, self._inner)
        self._inner = self._reader = None
