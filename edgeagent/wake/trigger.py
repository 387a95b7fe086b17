"""One wake word's decision rule on its score, step by step (openWakeWord's 80 ms steps).

A word fires when its score is at or above the threshold for ``trigger_level`` consecutive
steps; it is then disarmed until the score falls below the threshold again (one utterance
fires once) and stays silent for ``refractory`` seconds.

One exception to the silence: a firing whose score never reached
:data:`~edgeagent.wake.base.TRUSTED_SCORE` (its words will be checked) may fire once more
inside its refractory time, when the score comes back and stays at or above that score for
``trigger_level`` steps (:attr:`Trigger.again`). scripts/bench-accuracy's espeak-ng call
"Hey Jarvis, set a timer…" scored 0.14, 0.26, 0.03, 0.13, 0.05, 0.98, 0.97, 0.95: the
firing came out at the dip carrying 0.26, its words ("Hey, y'all, …") failed the check, and
the refractory silenced the 0.98 that would have been trusted.
"""

from __future__ import annotations

from edgeagent.wake.base import TRUSTED_SCORE


class Trigger:
    """See the module docs."""

    def __init__(self, threshold: float, trigger_level: int, refractory: float) -> None:
        self.threshold = threshold
        self.trigger_level = trigger_level
        self.refractory = refractory
        self.again = False
        """The last firing :meth:`update` reported is the model becoming sure of the one before."""
        self._run = 0
        self._armed = True
        self._last_fire: float | None = None
        self._peak = 0.0  # the highest score of the last firing, until the word re-armed
        self._sure = True  # the last firing reached TRUSTED_SCORE, or fired again already

    def update(self, score: float, now: float) -> bool:
        """Account one step's score at stream time ``now``; True when the word fires."""
        over = score >= self.threshold
        if not self._armed:
            self._peak = max(self._peak, score)
            self._armed = not over
            return False
        if self._last_fire is not None and now - self._last_fire < self.refractory:
            return self._fires_again(score)
        self._run = self._run + 1 if over else 0
        if self._run < self.trigger_level:
            return False
        self._run = 0
        self._armed = False
        self._last_fire = now
        self._peak, self._sure, self.again = score, False, False
        return True

    def _fires_again(self, score: float) -> bool:
        """Inside the refractory time: once, when the model becomes sure of a firing it was not."""
        if self._sure or self._peak >= TRUSTED_SCORE:
            return False
        self._run = self._run + 1 if score >= TRUSTED_SCORE else 0
        if self._run < self.trigger_level:
            return False
        self._run = 0
        self._armed = False
        self._sure = self.again = True
        return True
