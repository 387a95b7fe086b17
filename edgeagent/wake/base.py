"""Wake word contract: 16 kHz frames in, detections out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent.audio.frame import AudioFrame
from edgeagent.stage import Stage, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config

TRUSTED_SCORE = 0.7
"""A wake-up whose model score peaks at or above this is accepted without the words. Measured
with scripts/bench-accuracy's set (threshold 0.1, noise suppression before the wake model only):
the words check alone dropped 2 of the 30 tuning calls, both with peaks of 0.98-0.99 (Whisper
garbled the phrase in 10-12 dB noise); trusting a peak of 0.5, 0.7 or 0.9 kept all 30 and
answered no near miss ("Hey Travis", the highest, peaked between 0.3 and 0.5: trusting 0.3
answered it in 3 voices). 0.7 sits between the two. A word whose firing peaked under it may
fire once more inside its refractory time when its score reaches it (:mod:`edgeagent.wake.trigger`)."""
PEAK_STEPS = 5
"""A firing is reported once its score stops rising, at most this many scoring steps after it
fired (openWakeWord: 80 ms each): its event carries the peak (:class:`PeakHold`)."""


@dataclass(frozen=True)
class WakeEvent:
    word: str
    score: float
    """The highest score of this firing (the score rises for a few steps after it fires)."""
    timestamp: float
    """Stream time in seconds (audio pushed so far) when the word fired."""
    peak_at: float = -1.0
    """Stream time of the peak score (about the end of the phrase); -1: :attr:`timestamp`."""
    again: bool = False
    """The model became sure of the phrase it fired on just before (under :data:`TRUSTED_SCORE`):
    this firing is that one's, not a new wake-up."""

    @property
    def phrase_end(self) -> float:
        """About where the wake phrase ended: at its peak score, or where it fired."""
        return self.peak_at if self.peak_at >= 0 else self.timestamp


class PeakHold:
    """Holds each word's firing until its score stops rising, so that the event carries the
    peak: the words check trusts a high peak (:data:`TRUSTED_SCORE`).
    Costs at most :data:`PEAK_STEPS` steps before the event; none of the question's audio (the
    turn starts at the speech start)."""

    def __init__(self, steps: int = PEAK_STEPS) -> None:
        self.steps = steps
        # word: (fired at, best, its time, steps, again)
        self._held: dict[str, tuple[float, float, float, int, bool]] = {}

    def fired(self, word: str, score: float, at: float, again: bool = False) -> WakeEvent | None:
        """The word fired at ``at`` (``again``: :attr:`WakeEvent.again`): held (None), or out at
        once when holding is off."""
        if self.steps <= 0:
            return WakeEvent(word, score, at, at, again)
        self._held[word] = (at, score, at, 0, again)
        return None

    def step(self, word: str, score: float, now: float) -> WakeEvent | None:
        """The score of ``word`` at the step ending at ``now``: the held event once the score
        stops rising (or after :attr:`steps` steps)."""
        held = self._held.get(word)
        if held is None:
            return None
        at, best, best_at, steps, again = held
        if score > best and steps + 1 < self.steps:
            self._held[word] = (at, score, now, steps + 1, again)
            return None
        del self._held[word]
        if score > best:
            best, best_at = score, now
        return WakeEvent(word, best, at, best_at, again)

    def flush(self) -> list[WakeEvent]:
        """The events still held (the input ended)."""
        out = [WakeEvent(w, best, at, best_at, again) for w, (at, best, best_at, _, again) in self._held.items()]
        self._held.clear()
        return out


class WakeWord(Stage):
    kind = "wake"

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[activation]``: its ``wake_words`` (none: the default list, loaded all the same) and
        ``wake_threshold``."""
        from edgeagent.config.voice import ActivationConfig

        words = cfg.activation.wake_words or ActivationConfig().wake_words
        return {"words": tuple(words), "threshold": cfg.activation.wake_threshold}

    @property
    @abc.abstractmethod
    def words(self) -> tuple[str, ...]:
        """The words this detector listens for."""

    @abc.abstractmethod
    def stream(self) -> StageStream[AudioFrame, WakeEvent]:
        """A stream for one audio source: push 16 kHz frames, iterate detections."""
