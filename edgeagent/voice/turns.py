"""When is the user's turn over? A pure tracker over VAD windows and STT finals, and the detectors.

:class:`TurnTracker` knows nothing about audio or models: it is fed VAD events
(stream times in seconds) and final transcripts, and answers with what to do:

- ``OPEN``: speech started, send audio (from ``start``) to a fresh STT stream;
- ``FLUSH``: the first quiet window after speech: ask the STT for its final
  transcript now, speculatively, in parallel with the endpointing wait;
- ``REOPEN``: the user carried on; the STT continues the same utterance;
- ``COMMIT``: the turn is over, with its text;
- ``DISCARD``: speech ended without words (a cough, the wake word's tail).

A turn ends once its transcript is final and the silence after the speech has
lasted the delay a turn detector asks for (:mod:`edgeagent.voice.detectors`:
shorter when the words and the voice sound finished, longer while either doubts).
Whatever the text, the turn ends after ``max_delay_s`` of silence, and speech
longer than ``max_speech_s`` is cut off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgeagent.config.voice import TurnConfig
from edgeagent.vad.base import VADEvent, VADEventType


class Action(enum.Enum):
    OPEN = "open"
    FLUSH = "flush"
    REOPEN = "reopen"
    COMMIT = "commit"
    DISCARD = "discard"


@dataclass(frozen=True)
class Step:
    action: Action
    start: float = 0.0
    """OPEN: stream time the STT audio starts at."""
    text: str = ""
    """COMMIT: the transcript."""
    speech_end: float = 0.0
    """COMMIT/DISCARD: stream time the speech ended."""


class Phase(enum.Enum):
    NONE = "none"
    SPEAKING = "speaking"
    PAUSED = "paused"


class TurnTracker:
    """One user turn at a time; ``open_at`` lets a wake word open a turn mid-speech."""

    def __init__(self, options: TurnConfig, prefix_padding: float = 0.3) -> None:
        self.options = options
        self.prefix_padding = prefix_padding
        self.phase = Phase.NONE
        self.speech_start = 0.0
        self.speech_end = 0.0
        self.now = 0.0
        self._flushes = 0  # finals asked for in this turn
        self._finals = 0  # finals received
        self._text: str | None = None  # the final of the current pause, once it is in
        self._delay: float | None = None  # silence this text needs before the turn ends
        self._cut = False  # max_speech_s reached

    @property
    def active(self) -> bool:
        return self.phase is not Phase.NONE

    @property
    def speech_duration(self) -> float:
        end = self.now if self.phase is Phase.SPEAKING else self.speech_end
        return max(0.0, end - self.speech_start)

    @property
    def silence(self) -> float:
        return self.now - self.speech_end if self.phase is Phase.PAUSED else 0.0

    @property
    def pending_text(self) -> str | None:
        """The final transcript waiting for the turn decision (None: not in yet)."""
        return self._text

    def open_at(self, start: float, speaking: bool, speech_end: float | None = None) -> list[Step]:
        """Open a turn now (wake word, push-to-talk) with audio from ``start``."""
        self._reset()
        self.speech_start = start
        if speaking:
            self.phase = Phase.SPEAKING
            return [Step(Action.OPEN, start=start)]
        self.phase = Phase.PAUSED
        self.speech_end = speech_end if speech_end is not None else start
        self._flushes = 1
        return [Step(Action.OPEN, start=start), Step(Action.FLUSH)]

    def on_vad(self, ev: VADEvent) -> list[Step]:
        self.now = ev.timestamp
        steps: list[Step] = []
        resumed = ev.type is VADEventType.START_OF_SPEECH or (ev.speaking and ev.silence_duration == 0.0)
        if self.phase is Phase.NONE:
            if ev.type is VADEventType.START_OF_SPEECH:
                self._reset()
                self.phase = Phase.SPEAKING
                self.speech_start = ev.timestamp - ev.speech_duration
                return [Step(Action.OPEN, start=max(0.0, self.speech_start - self.prefix_padding))]
            return steps
        if self.phase is Phase.SPEAKING:
            if (ev.speaking and ev.silence_duration > 0) or ev.type is VADEventType.END_OF_SPEECH:
                return self._pause(ev.timestamp - ev.silence_duration)
            if self.speech_duration >= self.options.max_speech_s:
                self._cut = True
                return self._pause(ev.timestamp)
            return steps
        # PAUSED
        if resumed and not self._cut and ev.type is not VADEventType.END_OF_SPEECH:
            self.phase = Phase.SPEAKING
            self._text = self._delay = None
            return [Step(Action.REOPEN)]
        return self._check()

    def on_final(self, text: str) -> list[Step]:
        """A final transcript arrived (one per FLUSH, in order)."""
        self._finals += 1
        if self.phase is not Phase.PAUSED or self._finals < self._flushes:
            return []  # a stale final: the user carried on after that flush
        self._text = text.strip()
        if not self._text:
            self._delay = 0.0
        return self._check()

    def new_utterance(self) -> list[Step]:
        """The STT utterance was replaced (heard again from the wake phrase): the finals of the
        flushes the old one had not answered will not come. Paused and still waiting for one,
        the new utterance is flushed for the pause's final."""
        self._finals = self._flushes
        if self.phase is not Phase.PAUSED or self._text is not None:
            return []
        self._flushes += 1
        return [Step(Action.FLUSH)]

    def set_delay(self, text: str, delay: float) -> list[Step]:
        """The detector's verdict on ``text``: how much silence it needs (ignored when stale)."""
        if self._text is None or self._text != text.strip() or self.phase is not Phase.PAUSED:
            return []
        self._delay = delay
        return self._check()

    @property
    def commit_due(self) -> float | None:
        """Stream time the pending turn commits at if the silence lasts (None: not judged yet)."""
        if self.phase is not Phase.PAUSED or not self._text or self._delay is None:
            return None
        return self.speech_end + min(self._delay, self.options.max_delay_s)

    def tick(self, now: float) -> list[Step]:
        """Time passed without a VAD window to say so (a timer): the turn may be due."""
        self.now = max(self.now, now)
        return self._check()

    def end_speech(self, at: float) -> list[Step]:
        """Speech is over now (push-to-talk released, input ended): the final decides."""
        self._cut = True
        if self.phase is Phase.SPEAKING:
            return self._pause(at)
        return self._check()

    def close(self) -> None:
        self._reset()

    def _pause(self, speech_end: float) -> list[Step]:
        self.phase = Phase.PAUSED
        self.speech_end = speech_end
        self._flushes += 1
        self._text = self._delay = None
        return [Step(Action.FLUSH)]

    def _check(self) -> list[Step]:
        if self.phase is not Phase.PAUSED or self._text is None:
            return []
        if not self._text:
            if self._cut or self.silence >= self.options.max_delay_s:
                end = self.speech_end
                self._reset()
                return [Step(Action.DISCARD, speech_end=end)]
            return []
        limit = self.options.max_delay_s
        due = self.commit_due
        judged = due is not None and self.now >= due
        if self._cut or judged or self.silence >= limit:
            step = Step(Action.COMMIT, text=self._text, speech_end=self.speech_end)
            self._reset()
            return [step]
        return []

    def _reset(self) -> None:
        self.phase = Phase.NONE
        self._flushes = self._finals = 0
        self._text = self._delay = None
        self._cut = False
