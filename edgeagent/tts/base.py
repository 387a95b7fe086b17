"""TTS contract: text in (streamed, clause by clause), audio out at the voice's rate."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream


@dataclass(frozen=True)
class SynthesizedAudio:
    frame: AudioFrame
    """Mono int16 at the voice's native rate (resampled only at the output edge)."""
    segment_id: str
    """One id per flushed segment (a reply)."""
    text: str
    """The clause this audio speaks."""
    is_final: bool = False
    """The last chunk of the segment."""


class TTS(Stage):
    kind = "tts"

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @abc.abstractmethod
    def stream(self) -> StageStream[str, SynthesizedAudio]:
        """Push text as it arrives (LLM tokens); audio comes out clause by clause.

        flush() ends a segment: the rest of its text is spoken and the last
        chunk has ``is_final``. aclose() stops synthesis at once.
        """

    @abc.abstractmethod
    async def synthesize(self, text: str) -> AudioFrame:
        """All the audio for ``text`` at once."""
