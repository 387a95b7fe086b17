"""STT contract: 16 kHz frames of one utterance in, interim and final transcripts out."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config


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


class STTStream(StageStream[AudioFrame, SpeechEvent]):
    """The frames of one utterance in, its transcripts out (see :meth:`STT.stream`)."""

    def flush(self, quiet_s: float = 0.0) -> None:
        """The utterance is over for now: its FINAL is due. ``quiet_s``: how much of the audio
        pushed last the VAD heard as no speech (a stream may take a decode that covers the
        audio before it as the FINAL). Default: the marker only."""
        super().flush()

    def reopen(self) -> None:
        """The user carried on after flush(): where the stream can, its next FINAL covers the
        whole utterance, not only what came after the flush. Default: it cannot (the next FINAL
        covers what came after)."""


class STT(Stage):
    kind = "stt"

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[stt]``: its ``model`` when set."""
        return {"model": cfg.stt.model} if cfg.stt.model else {}

    @property
    def last_served(self) -> str | None:
        """The label of the provider that served the latest request, where this stage has several
        (a fallback chain); None: this stage itself."""
        return None

    @abc.abstractmethod
    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> STTStream:
        """Push the frames of an utterance; flush() ends it and yields FINAL.

        After a FINAL the stream starts a new utterance; end_input() ends the stream.
        ``prefix``: words the audio is known to begin with (a wake phrase the wake word model
        heard), said in its first ``prefix_s`` seconds (0: not known); an STT that can be told
        them (Whisper) writes them so and hears what follows better, and need not decode that
        stretch alone; the transcripts may begin with them either way.
        """

    @abc.abstractmethod
    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        """Transcribe a whole utterance at once."""
