"""Small helpers of the listening side: recent audio addressed by stream time, and where speech ended."""

from __future__ import annotations

import collections
import time

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.vad.base import VADEvent


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
