"""VAD contract: 16 kHz frames in, speech start/end events out."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config


class VADEventType(enum.Enum):
    START_OF_SPEECH = "start_of_speech"
    INFERENCE = "inference"
    END_OF_SPEECH = "end_of_speech"


@dataclass(frozen=True)
class VADOptions:
    """Silero defaults as in LiveKit Agents."""

    activation_threshold: float = 0.5
    """Probability at or above which a window counts as speech."""
    deactivation_threshold: float | None = None
    """Probability below which a window counts as silence; None = activation - 0.15."""
    min_speech_duration: float = 0.05
    """Speech must last this long (s) before START_OF_SPEECH."""
    min_silence_duration: float = 0.55
    """Silence must last this long (s) before END_OF_SPEECH."""
    prefix_padding: float = 0.5
    """Audio kept from before the speech start (s), so the first syllable is not lost."""


@dataclass(frozen=True)
class VADEvent:
    type: VADEventType
    timestamp: float
    """Stream time in seconds (audio pushed so far) at the end of the window."""
    probability: float
    """Speech probability of the last window."""
    speaking: bool
    """The segmenter's state after this window."""
    speech_duration: float
    silence_duration: float
    """Silence so far inside speech (s).

    It turns >0 on the first quiet window: the moment to start a speculative STT decode.
    """
    frames: tuple[AudioFrame, ...] = ()
    """START: prefix padding + speech so far; END: the whole utterance with padding."""


class VAD(Stage):
    kind = "vad"
    options: VADOptions

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[vad]``: its ``activation_threshold``."""
        return {"activation_threshold": cfg.vad.activation_threshold}

    @abc.abstractmethod
    def stream(self) -> StageStream[AudioFrame, VADEvent]:
        """A stream for one audio source: push 16 kHz frames, iterate events."""
