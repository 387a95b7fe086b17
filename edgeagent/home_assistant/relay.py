"""The satellite's audio on Home Assistant's wire (wyoming), both ways, and sending that never fails.

- :class:`QuestionRelay`: an STT that transcribes nothing and hands each frame of the question on,
  so the satellite's :class:`~edgeagent.voice.listener.Listener` (the same ears as a local
  session's: echo cancelled, the utterance opened and dropped as a turn's) streams the question
  to Home Assistant, which transcribes it.
- :func:`chunk_frame`: Home Assistant's answer audio as an :class:`AudioFrame` for the speaker.
- :func:`send_or_log`: a connection that went away is one log line; the server attaches the next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Flush
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream

log = logging.getLogger("edgeagent.home_assistant.satellite")  # the satellite's log, whose part this is

Send = Callable[[Any], Awaitable[None]]
"""Sends a wyoming Event to Home Assistant."""


class QuestionRelay(STT):
    """The satellite's "speech recognition": the question's frames, handed to the run streaming it."""

    provider = "home_assistant"

    def __init__(self, sink: Callable[[AudioFrame], None]) -> None:
        super().__init__()
        self._sink = sink

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> STTStream:
        return _RelayStream(self._sink)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        return SpeechEvent(SpeechEventType.FINAL, "")  # Home Assistant transcribes


class _RelayStream(STTStream):
    def __init__(self, sink: Callable[[AudioFrame], None]) -> None:
        self._sink = sink
        super().__init__()

    async def _run(self) -> None:
        async for item in self._inputs():
            if not isinstance(item, Flush):
                self._sink(item)


def chunk_frame(chunk: Any) -> AudioFrame | None:
    """A wyoming ``AudioChunk`` as a mono frame; None (logged) for a format that is not played."""
    if chunk.width != 2 or chunk.channels < 1:
        log.warning("Home Assistant's audio is %d-byte x %d channels: only 16-bit is played",
                    chunk.width, chunk.channels)
        return None
    samples = np.frombuffer(chunk.audio[: len(chunk.audio) // (2 * chunk.channels) * 2 * chunk.channels], "<i2")
    if chunk.channels > 1:
        samples = samples.reshape(-1, chunk.channels).mean(axis=1)
    return AudioFrame.from_int16(samples, chunk.rate)


async def send_or_log(send: Send, event: Any) -> None:
    """Send, or log why not (the connection went away: the server attaches the next one)."""
    try:
        await send(event)
    except (ConnectionError, OSError, RuntimeError) as exc:
        log.info("could not send %s to Home Assistant: %s", event.type, exc)
