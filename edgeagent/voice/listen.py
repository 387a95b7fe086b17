"""One utterance, from the mic to its transcript: VAD segments it, STT transcribes it.

Every frame goes to the VAD; from its START_OF_SPEECH on, to the STT too: the
START event's audio (prefix padding and the speech so far), then the frames the
VAD had received after that window. Both streams count 16 kHz samples from their
first frame, so the hand-over is sample-exact. The STT is flushed at END_OF_SPEECH.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.errors import EdgeAgentError
from edgeagent.stage import StageStream
from edgeagent.stt.base import SpeechEvent, SpeechEventType
from edgeagent.vad.base import VADEvent, VADEventType

log = logging.getLogger(__name__)

MAX_SPEECH_S = 15.0
"""An utterance is cut off (and answered) after this long."""
HISTORY_S = 2.0
"""Audio kept while idle, for what is said right after the wake word (the wake word
stream is at most a few 80 ms steps behind the mic)."""
BACKLOG_S = 10.0
"""Audio kept for the STT before the VAD's start of speech: as much as the VAD may lag."""
STT_TIMEOUT_S = 15.0

T = TypeVar("T")


class Utterance:
    """One turn's audio: every frame to the VAD; from its start of speech on, to the STT too."""

    def __init__(self, vad: StageStream[AudioFrame, VADEvent], stt: StageStream[AudioFrame, SpeechEvent]) -> None:
        self.vad = vad
        self.stt = stt
        self._before = AudioHistory(BACKLOG_S)  # frames the VAD has, the STT not yet
        self._recent = AudioHistory(HISTORY_S)  # every frame, for what follows this utterance
        self._speaking = False

    def push(self, frame: AudioFrame) -> None:
        self.vad.push(frame)
        self._recent.add(frame)
        if self._speaking:
            self.stt.push(frame)
        else:
            self._before.add(frame)

    def _start(self, event: VADEvent) -> None:
        """START_OF_SPEECH: its audio (prefix padding, speech so far), then what came after it."""
        self.stt.push(event.frames[0])
        for frame in self._before.after(event.timestamp):
            self.stt.push(frame)
        self._speaking = True

    async def wait_for_end(self, timeout: float) -> VADEvent | None:
        """END_OF_SPEECH, or None when speech did not start within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                event = await asyncio.wait_for(anext(self.vad), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                return None
            except asyncio.TimeoutError:
                if not self._speaking:
                    return None
                log.info("speech longer than %.0f s: cut off", MAX_SPEECH_S)
                self.vad.flush()  # END_OF_SPEECH follows
                deadline = loop.time() + STT_TIMEOUT_S
                continue
            if event.type is VADEventType.START_OF_SPEECH:
                self._start(event)
                deadline = loop.time() + MAX_SPEECH_S
            elif event.type is VADEventType.END_OF_SPEECH:
                return event

    def pushed_after(self, t: float) -> list[AudioFrame]:
        """The frames pushed after VAD stream time ``t`` (e.g. the END_OF_SPEECH window)."""
        return self._recent.after(t)

    async def transcript(self) -> str:
        self.stt.flush()

        async def final() -> str:
            async for event in self.stt:
                if event.type is SpeechEventType.FINAL:
                    return event.text.strip()
            return ""
        return await bounded(final(), STT_TIMEOUT_S, "the transcript")

    async def aclose(self) -> None:
        await self.vad.aclose()
        await self.stt.aclose()


class AudioHistory:
    """The last ``seconds`` of 16 kHz frames, addressed by stream time (seconds since the first)."""

    def __init__(self, seconds: float) -> None:
        self._keep = round(seconds * RECOGNITION_RATE)
        self._frames: collections.deque[tuple[int, AudioFrame]] = collections.deque()
        self._end = 0  # samples added so far

    def add(self, frame: AudioFrame) -> None:
        self._frames.append((self._end, frame))
        self._end += frame.num_samples
        while self._frames and self._frames[0][0] + self._frames[0][1].num_samples < self._end - self._keep:
            self._frames.popleft()

    def after(self, t: float) -> list[AudioFrame]:
        """The audio from stream time ``t`` on (as much of it as is kept)."""
        mark = round(t * RECOGNITION_RATE)
        return [f.slice(max(0, mark - pos)) for pos, f in self._frames if pos + f.num_samples > mark]


def speech_end(event: VADEvent) -> float:
    """Monotonic capture time at which the user stopped speaking, as the VAD placed it."""
    frame = event.frames[0] if event.frames else None
    if frame is not None and frame.timestamp is not None:
        return frame.timestamp + frame.duration - event.silence_duration
    return time.monotonic() - event.silence_duration


async def bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """``await aw`` for at most ``seconds``; a retryable error naming ``what`` after that."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:
        raise EdgeAgentError(f"{what} took longer than {seconds:.0f} s", retryable=True) from None


async def cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it; its own error (not the cancellation) is raised."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
