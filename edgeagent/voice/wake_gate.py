"""Wake-ups of one session's hearing: accepted by their score, or by their words.

A firing at or above :data:`~edgeagent.wake.base.TRUSTED_SCORE` (or with
``activation.verify_wake`` off) is accepted at once, and the question's turn, opened at
the phrase, tells the STT the phrase ("Hey Jarvis,"), so Whisper keeps the question's
first word. A firing under it is checked by its words (:mod:`edgeagent.voice.wake_check`)
at no cost where the session decodes that audio anyway:

- in the same breath as the question (the turn opens at the phrase, the STT not told
  it): the turn's own transcripts decide; the first that begins with the phrase accepts
  the wake-up, a final that does not drops it;
- said alone ("Hey Jarvis." and a pause): the final of the phrase accepts it; when
  Whisper wrote it wrong (it writes a phrase alone worse than one followed by the
  question), or the firing came just after the speech ended, the question that follows
  within :data:`~edgeagent.voice.wake_check.RECENT_SPEECH_S` is heard from the phrase on
  and its transcripts decide, as in one breath;
- otherwise (no question followed, the question came later, or the firing came inside
  a turn) the phrase's stretch is decoded on its own, once due (:class:`WakeCheck`),
  and :attr:`WakeStats.decodes` counts it.

Until it is decided, the question is heard as usual but its commit is held, and a reply
the wake word spoke over is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from typing import TYPE_CHECKING

from edgeagent import aio
from edgeagent.stt.base import SpeechEvent, SpeechEventType
from edgeagent.voice.events import WakeWordDetectedEvent
from edgeagent.voice.turns import Phase, Step
from edgeagent.voice.wake_check import CHECK_AFTER_S, PHRASE_MAX_S, WakeCheck, WakePhrases
from edgeagent.wake.base import TRUSTED_SCORE, WakeEvent

if TYPE_CHECKING:
    from edgeagent.voice.turn_taking import TurnTaking

log = logging.getLogger(__name__)


class Seen(enum.Enum):
    """What a transcript of the turn is, to the wake-up's words check."""

    WORDS = "words"
    """The user's words: go on with them."""
    PHRASE = "phrase"
    """The wake phrase alone, no words of a question."""
    DROPPED = "dropped"
    """The wake-up was dropped, and its turn with it."""

LATE_S = 1.0
"""A wake word reported this long after it fired (a wake model slower than real time: an
overloaded board, emulation) rewinds the hearing to its time and replays the VAD's events
since (:meth:`~edgeagent.voice.turn_taking.TurnTaking.rewind`): the question it missed is heard. In
time (:class:`~edgeagent.wake.base.PeakHold` holds a firing up to ~0.25 s) nothing is rewound."""

WAITING = -1
""":attr:`WakeCheck.utterance` of a check waiting for the question's utterance to open."""


class WakeGate:
    """The wake-ups of one :class:`~edgeagent.voice.turn_taking.TurnTaking`."""

    def __init__(self, hearing: TurnTaking) -> None:
        self._h = hearing
        self.stats = hearing.wake_stats
        self.phrases = WakePhrases(hearing.activation.wake_words)
        self.check: WakeCheck | None = None
        """The wake-up waiting for its words, if any."""
        self.score = 0.0
        """The peak score of the firing of the turn being heard: the phrase is taken off its
        question by the limit of that score
        (:meth:`~edgeagent.voice.wake_check.WakePhrases.without_phrase`); 0 for a turn that no
        firing began (a follow-up): the strict limit."""

    def on_wake(self, ev: WakeEvent) -> None:
        h = self._h
        if ev.again:  # the model became sure of the firing just before: not a new wake-up
            if self.check is not None and ev.score >= TRUSTED_SCORE:
                log.info("wake word %s: the model is now sure (score %.2f)", ev.word, ev.score)
                self._accept(self.check)
            return
        log.info("wake word %s (score %.2f)", ev.word, ev.score)
        self.stats.fired += 1
        self.score = ev.score
        h.session.emit(WakeWordDetectedEvent(ev.word, ev.score))
        late = h.rewind(ev.timestamp) if h.now - ev.timestamp > LATE_S else []
        reply, start = h.session.current_reply, h.phrase_start(ev.timestamp)
        opens = not h.tracker.active and h.in_speech  # the question's turn opens at the phrase
        created = None
        if ev.score >= TRUSTED_SCORE or not h.activation.verify_wake:
            self._accept(self.check)  # a check pending: the model is now sure
        elif self.check is None:
            created = self.check = WakeCheck(ev.word, ev.score, h.armed_until, h.tracker.active, start,
                                             ev.phrase_end + CHECK_AFTER_S)
            if reply is not None and not reply.paused:
                reply.pause()  # until the words decide: stopped, or resumed
                h.session.set_playing(False)
                created.paused_reply = True
        if h.session.current_reply is not None and self.check is None:
            log.info("wake word during the reply: stopped")
            h.session.interrupt()
        h.armed_until = h.now + h.activation.listen_s
        if created is not None and h.tracker.active:
            self._decode_later(created)  # said inside a turn: its transcripts began before it
        elif created is not None:  # the question's transcripts decide (its turn opens at the phrase)
            self._await_question(created, math.inf if opens else h.question_due)
        if opens:
            # The question's audio starts with the phrase (no first word lost); its text loses it.
            h.open_at_phrase(start, self.phrases.spoken(ev.word), ev.phrase_end, tell=created is None)
        elif not h.tracker.active:
            h.question_after_phrase(self.phrases.spoken(ev.word), start, ev.phrase_end)
        h.replay(late)

    @property
    def waiting(self) -> bool:
        """A check waits for the question's utterance (opened from the phrase on)."""
        return self.check is not None and self.check.utterance == WAITING

    def on_transcript(self, uid: int, ev: SpeechEvent, alone: bool, speech_end: float) -> Seen:
        """A transcript of the turn's utterance (its speech ended at ``speech_end``; ``alone``: by
        the timing, the phrase alone); the check its words decide sees it first."""
        check = self.check
        if check is None or check.utterance != uid:
            return Seen.WORDS
        if self.phrases.said(ev.text, check.score):
            log.info("wake word %s (score %.2f) confirmed by the words %r", check.word, check.score, ev.text)
            self._accept(check)
            return Seen.WORDS
        if ev.type is SpeechEventType.INTERIM:
            return Seen.WORDS  # not yet: a later transcript may have it
        if alone or speech_end - check.start <= PHRASE_MAX_S:
            # The phrase alone, written wrong: the question heard from the phrase on decides.
            self._await_question(check, self._h.question_due)
            return Seen.PHRASE
        self._drop(check, f"the turn's final {ev.text!r} does not begin with it")
        return Seen.DROPPED

    def hold(self, step: Step) -> bool:
        """Hold the commit ``step`` until the words decide (True), or not: none pending."""
        check = self.check
        if check is None:
            return False
        check.held = step
        if check.utterance is not None:
            self._decode_later(check)  # the turn's transcripts did not decide: decode the phrase
        check.now.set()
        return True

    def paused(self) -> None:
        """The question paused: a check waiting for it decodes again now."""
        if self.check is not None and self.check.retry:
            self.check.now.set()

    def opened(self, uid: int, at_phrase: bool) -> None:
        """A new utterance ``uid`` opened, from the phrase on (``at_phrase``) or not: a check
        waiting for the question's decides by its transcripts; one whose utterance it replaced
        (or a question too late to hear the phrase) decodes the phrase instead."""
        if not at_phrase:
            self.score = 0.0  # a turn no firing began
        check = self.check
        if check is not None and check.utterance == WAITING and at_phrase:
            check.utterance = uid
        elif check is not None and check.utterance is not None:
            self._decode_later(check)

    def utterance_gone(self) -> None:
        """The turn's utterance was dropped: a check its transcripts were to decide decodes the
        phrase instead (one waiting for the question's goes on waiting)."""
        if self.check is not None and self.check.utterance not in (None, WAITING):
            self._decode_later(self.check)

    def forget(self) -> None:
        """Muted: a pending check ends without a verdict."""
        if self.check is not None:
            self.check.now.set()  # its task ends
            self.check = None

    def _await_question(self, check: WakeCheck, due: float) -> None:
        """Let the question's utterance decide; none opened by ``due`` (stream time): decode."""
        check.utterance = WAITING
        if math.isfinite(due):
            task = asyncio.ensure_future(self._question_due(check, due))
            task.add_done_callback(self._h.session.report_failure("the wake word check"))

    async def _question_due(self, check: WakeCheck, due: float) -> None:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(check.now.wait(), max(0.0, due - self._h.now))
        if check is self.check and check.utterance == WAITING:
            self._decode_later(check)  # no question followed the phrase

    def _decode_later(self, check: WakeCheck) -> None:
        check.utterance = None
        task = asyncio.ensure_future(self._hear_phrase(check))
        task.add_done_callback(self._h.session.report_failure("the wake word check"))

    async def _hear_phrase(self, check: WakeCheck) -> None:
        """Decode the phrase with what follows it once due, then accept or drop the wake-up;
        words that miss it while the question goes on get one more decode at its end."""
        h = self._h
        while check is self.check:
            text = await check.words(h.session.stt, h.history, lambda: h.now)
            self.stats.decodes += 1
            if check is not self.check:
                return  # muted, or accepted meanwhile
            if text is None or self.phrases.said(text, check.score):  # None: the STT failed, the model decides
                log.info("wake word %s (score %.2f) confirmed by the words %r", check.word, check.score, text)
                self._accept(check)
            elif check.retry or check.held is not None or h.tracker.phase is not Phase.SPEAKING:
                self._drop(check, f"its stretch decoded alone, {text!r}, does not begin with it")
            else:
                check.again_at_the_end()
                continue
            h.session.update_state()

    def _accept(self, check: WakeCheck | None) -> None:
        self.stats.accepted += 1
        if check is None:
            return
        self.check = None
        h = self._h
        if check.paused_reply and h.session.current_reply is not None:
            log.info("wake word during the reply: stopped")
            h.session.interrupt()
        if check.held is not None:
            h.apply([check.held])

    def _drop(self, check: WakeCheck, why: str) -> None:
        """The wake-up was not meant: as if it had never fired."""
        self.check = None
        self.stats.rejected += 1
        log.debug("wake word %s (score %.2f) dropped: %s", check.word, check.score, why)
        h = self._h
        h.armed_until = check.armed_before
        if not check.turn_before and (h.tracker.active or check.held is not None):
            h.drop_turn()
        if check.paused_reply:
            h.resume("the wake word was not said")
