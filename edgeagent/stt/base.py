"""STT contract: 16 kHz frames of one utterance in, interim and final transcripts out."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream


class SpeechEventType(enum.Enum):
    INTERIM = "interim"
    FINAL = "final"


@dataclass(frozen=True)
class SpeechEvent:
    type: SpeechEventType
    text: str
    """Empty when nothing was recognised."""
    language: str = "en"
    confidence: float = 0.0
    audio_duration: float = 0.0
    """Seconds of audio this hypothesis covers."""
    final_delay: float = 0.0
    """FINAL only: seconds from flush() to this event."""


class STT(Stage):
    kind = "stt"

    @abc.abstractmethod
    def stream(self, language: str | None = None, *, prefix: str = "") -> StageStream[AudioFrame, SpeechEvent]:
        """Push the frames of an utterance; flush() ends it and yields FINAL.

        After a FINAL the stream starts a new utterance; end_input() ends the stream.
        ``prefix``: words the audio is known to begin with (a wake phrase the wake word model
        heard); an STT that can be told them (Whisper) writes them so and hears what follows
        better; the transcripts may begin with them either way.
        """

    @abc.abstractmethod
    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        """Transcribe a whole utterance at once."""
