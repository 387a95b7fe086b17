"""What every clause-by-clause voice shares: the stream, chunking, segment ids, metrics.

A voice subclasses :class:`ClauseTTS` and implements one method,
:meth:`ClauseTTS._clause_audio`: an async iterator of int16 arrays (one or more
per clause) at the voice's native rate. :class:`ClauseStream` feeds it the
clauses of :class:`~edgeagent.tts.clauses.ClauseSplitter` one at a time and
hands the audio out as :class:`~edgeagent.tts.base.SynthesizedAudio` chunks of
at most ``chunk_ms``, so an interruption can drop queued audio finely.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import numpy as np

from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.errors import EdgeAgentError
from edgeagent.metrics import TTSMetrics
from edgeagent.stage import Flush, StageStream
from edgeagent.tts.base import TTS, SynthesizedAudio
from edgeagent.tts.clauses import FIRST_CLAUSE_WORDS, FIRST_CUT_S, ClauseSplitter
from edgeagent.urgency import FIRST_AUDIO

#: Default longest chunk handed out, in milliseconds.
CHUNK_MS = 100.0


ONSET_DBFS = -60.0
"""A reply's audio starts just before its first sample this loud: Piper begins a clause with
25-60 ms below it (inaudible), which only delayed the first sound the user hears."""
ONSET_LEAD_S = 0.005


def from_onset(samples: Int16Array, rate: int) -> Int16Array:
    """``samples`` from :data:`ONSET_LEAD_S` before the first one above :data:`ONSET_DBFS`
    (all of them when none is)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 32768 * 10 ** (ONSET_DBFS / 20))
    if not loud.size:
        return samples
    return samples[max(0, int(loud[0]) - round(ONSET_LEAD_S * rate)):]


class TTSError(EdgeAgentError):
    """A voice cannot be started or failed while speaking."""


@dataclass
class _Segment:
    """Book-keeping of one flushed segment (a reply)."""

    id: str
    characters: int = 0
    samples: int = 0
    processing_s: float = 0.0
    first_ready: float | None = None  # when its first clause was ready to speak
    ttfa_s: float | None = None


class ClauseTTS(TTS):
    """A voice that speaks text clause by clause.

    ``first_clause_words`` bounds the first clause of each reply (smaller: first
    audio sooner, at some cost in prosody); ``chunk_ms`` is the longest chunk
    handed out.
    """

    provider = ""

    def __init__(self, *, first_clause_words: int = FIRST_CLAUSE_WORDS, chunk_ms: float = CHUNK_MS) -> None:
        super().__init__()
        if chunk_ms <= 0:
            raise ValueError("chunk_ms must be positive")
        ClauseSplitter(first_words=first_clause_words)  # validate now, not per stream
        self._first_clause_words = first_clause_words
        self._chunk_ms = chunk_ms

    @abc.abstractmethod
    def _clause_audio(self, text: str) -> AsyncGenerator[Int16Array, None]:
        """The audio of one clause, in one or more pieces, at :attr:`sample_rate`.

        Called on the event loop: CPU-heavy work must go to a thread or process,
        and the iterator must stop promptly when its task is cancelled.
        """

    def stream(self) -> ClauseStream:
        return ClauseStream(self, ClauseSplitter(first_words=self._first_clause_words))

    async def synthesize(self, text: str) -> AudioFrame:
        """All the audio for ``text`` (sentence by sentence); empty when there is nothing to say."""
        stream = ClauseStream(self, ClauseSplitter.sentences())
        try:
            stream.push(text)
            stream.end_input()
            chunks = [c.frame async for c in stream]
        finally:
            await stream.aclose()
        return AudioFrame.concat(chunks) if chunks else AudioFrame.silence(0, self.sample_rate)


class ClauseStream(StageStream[str, SynthesizedAudio]):
    """Text pushed token by token comes out as audio clause by clause.

    Every segment (ended by flush(), or by end_input() when text is pending)
    has its own ``segment_id`` and exactly one chunk with ``is_final``, the
    last; an empty segment gets one empty final chunk. aclose() drops audio
    not yet read and stops synthesis at once (each voice aborts the work in
    flight when its ``_clause_audio`` iterator is cancelled).
    """

    def __init__(self, tts: ClauseTTS, splitter: ClauseSplitter) -> None:
        self._tts = tts
        self._splitter = splitter
        self._rate = tts.sample_rate
        self._chunk = max(1, round(self._rate * tts._chunk_ms / 1000))
        self._seg = _Segment(uuid.uuid4().hex[:12])
        self._first_text: float | None = None  # when the segment's first text came
        super().__init__()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    item = await self._input(self._first_cut_in())
                except asyncio.TimeoutError:  # the first clause has waited long enough for its end
                    await self._speak_all(self._splitter.cut(), last=False)
                    continue
                if item is None:
                    break
                if isinstance(item, Flush):
                    await self._end_segment()
                else:
                    if self._first_text is None and item.strip():
                        self._first_text = time.perf_counter()
                    await self._speak_all(self._splitter.push(item), last=False)
            if self._splitter.pending.strip() or self._seg.characters:
                await self._end_segment()
        except asyncio.CancelledError:
            self._report_metrics(cancelled=True)
            raise

    def _first_cut_in(self) -> float | None:
        """Seconds until the segment's first clause is cut by time (None: no such cut due)."""
        if self._first_text is None or self._seg.characters or not self._splitter.pending.strip():
            return None
        return self._first_text + FIRST_CUT_S - time.perf_counter()

    async def _end_segment(self) -> None:
        clauses = self._splitter.flush()
        await self._speak_all(clauses, last=True)
        if not clauses:
            self._emit_chunk(np.zeros(0, np.int16), "", final=True)
        self._report_metrics(cancelled=False)
        self._seg = _Segment(uuid.uuid4().hex[:12])
        self._first_text = None

    async def _speak_all(self, clauses: list[str], *, last: bool) -> None:
        now = time.perf_counter()
        for i, clause in enumerate(clauses):
            await self._speak(clause, ready=now, last=last and i == len(clauses) - 1)

    async def _speak(self, clause: str, *, ready: float, last: bool) -> None:
        """Synthesize one clause and hand it out in chunks of ``self._chunk``
        samples; the last chunk of the segment's last clause carries is_final."""
        seg = self._seg
        first = not seg.characters
        seg.characters += len(clause)
        if seg.first_ready is None:
            seg.first_ready = ready
        carry: Int16Array = np.zeros(0, np.int16)
        onset = first  # the reply's first sound: no inaudible lead-in before it
        pieces = self._tts._clause_audio(clause)
        try:
            while True:
                t0 = time.perf_counter()
                try:  # until the reply's first audio is out, it has the cores first (urgency.py)
                    with FIRST_AUDIO.hold() if first else contextlib.nullcontext():
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                finally:
                    seg.processing_s += time.perf_counter() - t0
                first = False
                if onset:
                    piece, onset = from_onset(piece, self._rate), False
                carry = np.concatenate([carry, piece]) if len(carry) else piece
                # Keep a remainder (and, in the last clause, a full chunk) back:
                # the final chunk must be the last one handed out.
                rem = len(carry) % self._chunk
                keep = min(len(carry), rem + self._chunk if last and rem < self._chunk // 2 else rem)
                for start in range(0, len(carry) - keep, self._chunk):
                    self._emit_chunk(carry[start : start + self._chunk], clause, final=False)
                carry = carry[len(carry) - keep :]
        finally:
            with contextlib.suppress(Exception):
                await pieces.aclose()
        if len(carry) or last:
            self._emit_chunk(carry, clause, final=last)

    def _emit_chunk(self, samples: Int16Array, clause: str, *, final: bool) -> None:
        seg = self._seg
        if seg.ttfa_s is None and len(samples) and seg.first_ready is not None:
            seg.ttfa_s = time.perf_counter() - seg.first_ready
        seg.samples += len(samples)
        frame = AudioFrame.from_int16(samples, self._rate)
        self._emit(SynthesizedAudio(frame, seg.id, clause, is_final=final))

    def _report_metrics(self, *, cancelled: bool) -> None:
        seg = self._seg
        if not seg.characters:
            return
        self._tts._report(
            TTSMetrics(
                provider=self._tts.provider,
                characters=seg.characters,
                ttfa_s=seg.ttfa_s if seg.ttfa_s is not None else 0.0,
                audio_s=seg.samples / self._rate,
                processing_s=seg.processing_s,
                cancelled=cancelled,
            )
        )
