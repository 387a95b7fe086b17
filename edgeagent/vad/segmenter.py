"""The speech segmenter: a pure, synchronous state machine over VAD windows.

It turns a sequence of ``(window duration, speech probability)`` pairs into
speech starts and ends, QUIET → STARTING → SPEAKING → STOPPING → QUIET, the way
pipecat's VAD analyser and Home Assistant's voice-command segmenter do. It
knows nothing about audio or models, so it is tested with plain numbers.

Hysteresis (as in LiveKit's Silero plugin): from the quiet side (QUIET,
STARTING) a window is speech when its probability is at least the activation
threshold; from the speaking side (SPEAKING, STOPPING) it stays speech while
the probability is at least the deactivation threshold.

``end_lag`` compensates a model whose probability trails the audio when speech
stops: the speech end is placed that long before the end of the last speech
window (never before its start), and silence is counted from there.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from edgeagent.vad.base import VADOptions

_EPS = 1e-9  # durations are sums of floats; compare with a little slack


class SegmenterState(enum.Enum):
    QUIET = "quiet"
    """No speech."""
    STARTING = "starting"
    """Speech heard, but not yet for ``min_speech_duration``."""
    SPEAKING = "speaking"
    """Speech confirmed (START was reported)."""
    STOPPING = "stopping"
    """Silence inside speech, not yet for ``min_silence_duration``."""


@dataclass(frozen=True)
class SegmenterUpdate:
    """The segmenter after one window. Times are seconds since the segmenter began."""

    state: SegmenterState
    previous: SegmenterState
    started: bool
    """Speech was confirmed with this window: report START_OF_SPEECH."""
    ended: bool
    """Silence lasted ``min_silence_duration`` with this window: report END_OF_SPEECH."""
    time: float
    """End of this window."""
    speech_start: float
    """Start of the first speech window of the current (or just ended) utterance."""
    speech_end: float
    """End of the last speech window of the current (or just ended) utterance."""
    silence_duration: float
    """Silence since ``speech_end`` in STOPPING and at the end (0 otherwise)."""

    @property
    def speaking(self) -> bool:
        """Inside a confirmed utterance (SPEAKING or STOPPING)."""
        return self.state in (SegmenterState.SPEAKING, SegmenterState.STOPPING)

    @property
    def speech_duration(self) -> float:
        """Speech so far: from its start to now while speech goes on, to ``speech_end``
        in STOPPING and at the end, 0 when quiet. Always
        ``speech_start == time - speech_duration - silence_duration`` inside speech."""
        if self.state is SegmenterState.QUIET and not self.ended:
            return 0.0
        if self.state in (SegmenterState.STARTING, SegmenterState.SPEAKING):
            return self.time - self.speech_start
        return max(0.0, self.speech_end - self.speech_start)

    @property
    def first_quiet(self) -> bool:
        """The first quiet window after speech: the moment to start a speculative decode."""
        return self.previous is SegmenterState.SPEAKING and self.state is SegmenterState.STOPPING


def deactivation_threshold(options: VADOptions) -> float:
    """The options' deactivation threshold, or activation - 0.15 (at least 0.01)."""
    if options.deactivation_threshold is not None:
        return options.deactivation_threshold
    return max(options.activation_threshold - 0.15, 0.01)


class Segmenter:
    """Feed it windows with :meth:`process`; read the transitions from the updates."""

    def __init__(self, options: VADOptions | None = None, *, end_lag: float = 0.0) -> None:
        self.options = options or VADOptions()
        self.end_lag = end_lag
        self._activation = self.options.activation_threshold
        self._deactivation = deactivation_threshold(self.options)
        if not 0.0 < self._activation <= 1.0:
            raise ValueError(f"activation_threshold must be in (0, 1], got {self._activation}")
        if end_lag < 0:
            raise ValueError(f"end_lag must not be negative, got {end_lag}")
        if not 0.0 <= self._deactivation <= self._activation:
            raise ValueError(
                f"deactivation_threshold must be in [0, activation], got {self._deactivation}"
            )
        self.time = 0.0
        self.reset()

    def reset(self) -> None:
        """Back to QUIET; the clock keeps running."""
        self.state = SegmenterState.QUIET
        self._speech_start = 0.0
        self._speech_end = 0.0

    def process(self, duration: float, probability: float) -> SegmenterUpdate:
        """Account one window of ``duration`` seconds with speech ``probability``.

        A probability that is not a finite number counts as silence.
        """
        if not math.isfinite(probability):
            probability = 0.0
        start = self.time
        self.time += duration
        previous = self.state
        started = ended = False
        S = SegmenterState
        if self.state in (S.QUIET, S.STARTING):
            if probability >= self._activation:
                if self.state is S.QUIET:
                    self._speech_start = start
                self._speech_end = max(start, self.time - self.end_lag)
                self.state = S.STARTING
                if self.time - self._speech_start + _EPS >= self.options.min_speech_duration:
                    self.state = S.SPEAKING
                    started = True
            else:
                self.state = S.QUIET
        elif probability >= self._deactivation:
            self._speech_end = max(start, self.time - self.end_lag)
            self.state = S.SPEAKING
        else:
            self.state = S.STOPPING
            if self.time - self._speech_end + _EPS >= self.options.min_silence_duration:
                self.state = S.QUIET
                ended = True
        quiet_inside = self.state is S.STOPPING or ended
        return SegmenterUpdate(
            state=self.state,
            previous=previous,
            started=started,
            ended=ended,
            time=self.time,
            speech_start=self._speech_start,
            speech_end=self._speech_end,
            silence_duration=self.time - self._speech_end if quiet_inside else 0.0,
        )

    def finish(self) -> SegmenterUpdate | None:
        """End the current utterance now (end of input); None when none is open."""
        if self.state not in (SegmenterState.SPEAKING, SegmenterState.STOPPING):
            self.state = SegmenterState.QUIET
            return None
        previous = self.state
        self.state = SegmenterState.QUIET
        return SegmenterUpdate(
            state=self.state,
            previous=previous,
            started=False,
            ended=True,
            time=self.time,
            speech_start=self._speech_start,
            speech_end=self._speech_end,
            silence_duration=self.time - self._speech_end,
        )
