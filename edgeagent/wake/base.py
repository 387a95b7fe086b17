"""Wake word contract: 16 kHz frames in, detections out."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream


@dataclass(frozen=True)
class WakeEvent:
    word: str
    score: float
    timestamp: float
    """Stream time in seconds (audio pushed so far) when the word fired."""


class WakeWord(Stage):
    kind = "wake"

    @property
    @abc.abstractmethod
    def words(self) -> tuple[str, ...]:
        """The words this detector listens for."""

    @abc.abstractmethod
    def stream(self) -> StageStream[AudioFrame, WakeEvent]:
        """A stream for one audio source: push 16 kHz frames, iterate detections."""
