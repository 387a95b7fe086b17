"""The user's side of a session: what the listener heard becomes wake-ups, turns and barge-ins.

:class:`TurnTaking` reads the :class:`~edgeagent.voice.listener.Listener`'s queue in
order. Wake words arm a listening window (and stop a reply); VAD windows and final
transcripts go through the :class:`~edgeagent.voice.turns.TurnTracker`, whose steps
open, flush, reopen and close the STT utterance; a committed turn is handed to the
session to answer. Speech over a reply pauses it (``interruption.min_duration_s``);
words stop it, no words or only fillers resume it.

As soon as the transcript of a pause is final, the reply to it begins ahead of the turn
decision (:class:`~edgeagent.voice.preempt.Preemption`); the commit hands it over, the user
carrying on drops it.

Wake-ups are accepted or dropped by :class:`~edgeagent.voice.wake_gate.WakeGate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgeagent.audio.frame import AudioFrame
from edgeagent.config.voice import ActivationConfig, TurnConfig
from edgeagent.stt.base import SpeechEvent, SpeechEventType
from edgeagent.vad.base import VADEvent
from edgeagent.voice.audio_history import AudioHistory
from edgeagent.voice.conversation import TurnRecord
from edgeagent.voice.detectors import TurnDetector
from edgeagent.voice.events import TRANSCRIPT, ErrorEvent, UserInputTranscribedEvent
from edgeagent.voice.listener import Listener
from edgeagent.voice.preempt import Preemption
from edgeagent.voice.reply import Reply
from edgeagent.voice.speech import SpeechHandle
from edgeagent.voice.turns import Action, Phase, Step, TurnTracker
from edgeagent.voice.wake_check import PHRASE_ALONE_S, RECENT_SPEECH_S, SpeechSpan, WakePhrases
from edgeagent.voice.wake_gate import Seen, WakeGate
from edgeagent.voice.words import is_stop, only_fillers

if TYPE_CHECKING:
    from edgeagent.voice.protocol import TurnTakingHost

log = logging.getLogger(__name__)

VAD_WINDOW_S = 0.05
"""A turn due to commit commits on time when the VAD's last window ended at most this long
before (Silero hears 32 ms windows): a window later would only say the silence went on."""
AUDIO_TURN_S = 8.0
"""The audio end-of-turn model hears at most this much of the turn (Smart Turn's window)."""
NOT_TOLD = ("", -math.inf, -math.inf, -math.inf)


class TurnTaking:
    """Wake word, turn taking and barge-in for one session."""

    def __init__(self, session: TurnTakingHost, listener: Listener) -> None:
        self._s = self.session = session
        self._listener = listener
        self.activation = session.activation
        self.tracker = TurnTracker(session.turn_options)
        self._detector = session.detector
        self.armed_until = math.inf if self.activation.mode == "always" else -math.inf
        """Stream time until which speech may open a turn."""
        self.ptt = False
        self.muted = False
        self.turn: TurnRecord | None = None
        """The user turn being heard."""
        self._barge_paused_at: float | None = None  # stream time a reply was paused for speech
        self._speech = SpeechSpan()  # and whether the VAD is in speech (a late wake word rewinds it)
        self.preemption = Preemption(session)
        self.wake_stats = session.wake_stats
        self.wakes = WakeGate(self)
        self._phrase = ""  # the wake phrase the turn began with ("Hey Jarvis,"), if any
        self._phrase_at = (-math.inf, -math.inf)  # stream times that phrase started and ended
        self._tell = NOT_TOLD
        """(phrase, at, end, by): an utterance opened by ``by`` starts at the phrase (said at-end), told it."""
        self._preparing: asyncio.Future[None] | None = None

    @property
    def listening(self) -> bool:
        """A user turn is open, or may open now."""
        if self.muted:
            return False
        return self.tracker.active or self.ptt or self._listener.now <= self.armed_until

    # -- what the wake gate reads and does ---------------------------------------
    @property
    def now(self) -> float:
        """Stream time of the input."""
        return self._listener.now

    @property
    def history(self) -> AudioHistory:
        return self._listener.history

    @property
    def in_speech(self) -> bool:
        """The VAD hears speech now (as of the time it was rewound to)."""
        return self._speech.speaking

    def rewind(self, at: float) -> list[VADEvent]:
        """Back to stream time ``at`` (a wake word reported late), if no turn is open and speech
        then could not open one: the VAD events since, to :meth:`replay` once it has fired."""
        if self.tracker.active or self._accepting(at):
            return []
        return self._speech.rewind(at)

    def replay(self, events: Sequence[VADEvent]) -> None:
        """Speech the VAD heard before a late wake word, and which was ignored: as if in time."""
        for ev in events:
            self._on_vad(ev)

    def phrase_start(self, fired_at: float) -> float:
        """Stream time the phrase of a wake word fired at ``fired_at`` began."""
        return self._speech.phrase_start(fired_at)

    def open_at_phrase(self, start: float, phrase: str, phrase_end: float, *, tell: bool) -> int:
        """Open the question's turn at its wake phrase ``phrase``, said from ``start`` to
        ``phrase_end``, its STT told the phrase (``tell``) or not; returns the utterance's id."""
        self._tell = (phrase if tell else "", start, phrase_end, math.inf)
        self.apply(self.tracker.open_at(start, speaking=True))
        self._phrase, self._phrase_at = phrase, (start, phrase_end)
        return self._listener.utterance_id

    @property
    def question_due(self) -> float:
        """Stream time by which a question after a wake phrase said on its own must begin."""
        return self._speech.ended + RECENT_SPEECH_S

    def question_after_phrase(self, phrase: str, start: float, end: float) -> None:
        """The wake phrase ``phrase`` (``start`` to ``end``) was said on its own: a question that
        begins by :attr:`question_due` is heard from the phrase on, the STT told it unless the
        words of the wake-up are still to be checked (then that question's transcripts check them)."""
        self._tell = ("" if self.wakes.waiting else phrase, start, end, self.question_due)

    def drop_turn(self) -> None:
        """The turn being heard (and a reply begun ahead for it) is dropped."""
        self.tracker.close()
        self.turn = None
        self._listener.drop_utterance()
        self.preemption.drop()

    def mute(self, muted: bool) -> None:
        """Muted: the mic is not heard (the listener feeds silence), the turn being heard is
        dropped and a wake window closes; unmuted, activation goes on as at start."""
        if muted == self.muted:
            return
        self.muted = self._listener.muted = muted
        if muted:
            self.ptt = False
            self.wakes.forget()
            if self.tracker.active:
                self.drop_turn()
            self.preemption.drop()
            self.resume("muted")
        if self.activation.mode != "always":
            self.armed_until = -math.inf

    def set_activation(self, activation: ActivationConfig) -> None:
        """New activation options, from the next event on. A new mode arms as it would at
        start (always: open; wake and ptt: closed until the wake word or the button); a turn
        being heard carries on, and an open wake window keeps its end."""
        old, self.activation = self.activation, activation
        self.wakes.phrases = WakePhrases(activation.wake_words)
        if activation.mode != old.mode:
            if activation.mode == "always":
                self.armed_until = math.inf
            elif old.mode == "always":
                self.armed_until = -math.inf

    def set_turn(self, options: TurnConfig, detector: TurnDetector) -> None:
        """New turn options and detector, for the turn being heard too."""
        self.tracker.options = options
        self._detector = detector

    def follow_up(self) -> None:
        """A reply is over: in wake mode, a follow-up needs no wake word for a while."""
        if self.activation.mode == "wake":
            self.armed_until = self._listener.now + self.activation.follow_up_s

    def push_to_talk(self, pressed: bool) -> None:
        if pressed == self.ptt or (pressed and self.muted):
            return
        self.ptt = pressed
        now = self._listener.now
        if pressed:
            self._s.interrupt()
            self.apply(self.tracker.open_at(max(0.0, now - 0.1), speaking=True))
        else:
            self.apply(self.tracker.end_speech(now))

    async def run(self) -> None:
        listener = self._listener
        while True:
            kind, payload = await listener.heard.get()
            try:
                if kind == "vad":
                    self._on_vad(payload)
                elif kind == "wake" and not self.muted:  # not one heard just before the mute
                    self.wakes.on_wake(payload)
                elif kind == "stt":
                    self._on_stt(*payload)
                elif kind == "error":
                    source, exc = payload
                    self._s.emit(ErrorEvent(exc, source, recoverable=source != "input"))
                elif kind == "end":
                    self.apply(self.tracker.end_speech(listener.now))
            except Exception as exc:  # one bad event must not stop the ears
                log.exception("handling a %s event failed", kind)
                self._s.emit(ErrorEvent(exc, "session"))
            self._s.update_state()

    def _accepting(self, at: float) -> bool:
        """May speech at stream time ``at`` open a user turn?"""
        if self.activation.mode == "ptt" or self.muted:
            return False  # the button opens turns
        return at <= self.armed_until or self._s.current_reply is not None

    def _on_vad(self, ev: VADEvent) -> None:
        self._speech.on_vad(ev)
        if self.activation.mode == "ptt" and not self.tracker.active:
            return
        if self.tracker.phase is Phase.NONE and not self._accepting(ev.timestamp):
            return
        if self.activation.mode != "ptt":
            self.apply(self.tracker.on_vad(ev))
        self.tracker.now = ev.timestamp
        self._check_barge_in(ev.timestamp)

    def _check_barge_in(self, now: float) -> None:
        reply = self._s.current_reply
        if reply is None or not self._s.interruption.enabled or not reply.handle.allow_interruptions:
            return
        if (not reply.paused and self.tracker.phase is Phase.SPEAKING
                and self.tracker.speech_duration >= self._s.interruption.min_duration_s):
            assert self._listener is not None
            lag = time.monotonic() - self._listener.capture_time(self.tracker.speech_start)
            log.info("user speech over the reply: paused %.0f ms after it began (at %.3f)",
                     1000 * lag, time.monotonic())
            reply.pause()
            self._barge_paused_at = now
            self._s.set_playing(False)
        elif (reply.paused and self._barge_paused_at is not None and not self.tracker.active
              and now - self._barge_paused_at >= self._s.interruption.false_timeout_s):
            self.resume("no words within the false interruption timeout")

    def resume(self, why: str) -> None:
        reply = self._s.current_reply
        self._barge_paused_at = None
        if reply is not None and reply.paused:
            log.info("false interruption (%s): the reply resumes", why)
            reply.resume()

    def _on_stt(self, uid: int, ev: SpeechEvent) -> None:
        listener = self._listener
        if listener is None or uid != listener.utterance_id or self.turn is None:
            return
        speech_end = self.tracker.speech_end
        alone = ev.type is SpeechEventType.FINAL and speech_end - self._phrase_at[1] <= PHRASE_ALONE_S
        seen = self.wakes.on_transcript(uid, ev, alone, speech_end)
        if seen is Seen.DROPPED:
            return
        alone = alone or seen is Seen.PHRASE
        phrases = self.wakes.phrases
        said = phrases.without_phrase(ev.text, self.wakes.score) if self.activation.mode == "wake" else ev.text
        if alone:  # the wake phrase alone: Whisper, told it, may go on with words nobody said
            said = ""  # a question soon after is heard with the phrase before it, as if in one breath
            self.question_after_phrase(self._phrase, *self._phrase_at)
        if ev.type is SpeechEventType.INTERIM:
            self._s.emit(UserInputTranscribedEvent(said, is_final=False))
            self._prepare(said)
            return
        self.turn.final_at = time.monotonic()
        stt = self._s.stt
        self.turn.stt_provider = stt.last_served or stt.provider
        (at, end), phrase = self._phrase_at, self._tell[0]
        self.apply(self.tracker.on_final(said))
        if alone and self.tracker.active:  # the user went on: heard again from the phrase on
            self._tell = NOT_TOLD
            self.wakes.opened(listener.open_utterance(at, phrase, end), at_phrase=True)
            self.apply(self.tracker.new_utterance())  # the old one's pending finals are gone
        text = self.tracker.pending_text
        if text:
            task = asyncio.ensure_future(self._judge(text, self._turn_audio()))
            task.add_done_callback(self._s.report_failure("turn detection"))
            if not (only_fillers(text) or is_stop(text, self.activation.stop_words)):
                self.preemption.start(text)  # after the judge: the LLM evaluates the text once

    def _prepare(self, interim: str) -> None:
        """Let the turn detector get ready for the final transcript (one preparation at a time)."""
        if self._preparing is not None and not self._preparing.done():
            return
        task = asyncio.ensure_future(self._detector.prepare(self._s.conversation.llm_context(), interim))
        task.add_done_callback(self._s.report_failure("turn detection"))
        self._preparing = task

    def _turn_audio(self) -> AudioFrame | None:
        """The turn's audio so far (its last :data:`AUDIO_TURN_S`), for the voice's detector."""
        if not self._detector.needs_audio:
            return None
        start = max(self.tracker.speech_start, self._listener.now - AUDIO_TURN_S)
        frames = list(self._listener.history.after(start))
        return AudioFrame.concat(frames) if frames else None

    async def _judge(self, text: str, audio: AudioFrame | None) -> None:
        verdict = await self._detector.judge(self._s.conversation.llm_context(), text, audio)
        if self.turn is not None:
            self.turn.eot_probability = verdict.text_probability
            self.turn.audio_eot_probability = verdict.audio_probability
            self.turn.end_of_turn_delay = verdict.delay
        self.apply(self.tracker.set_delay(text, verdict.delay))
        self._s.update_state()
        due = self.tracker.commit_due
        if due is not None:  # commit when due, not at the VAD's next window after (~30 ms later)
            asyncio.get_running_loop().call_later(max(0.0, due - self._listener.now), self._due, due)

    def _due(self, due: float) -> None:
        # Still the same pause, silent as far as the VAD's last window (at most one behind) knows.
        if self.tracker.commit_due == due and due - self.tracker.now <= VAD_WINDOW_S:
            self.apply(self.tracker.tick(due))
            self._s.update_state()

    def apply(self, steps: Sequence[Step]) -> None:
        listener = self._listener
        for step in steps:
            if step.action is Action.OPEN:
                phrase, at, end, by = self._tell
                at_phrase = step.start <= by  # (Whisper writes a question better after its phrase)
                uid = listener.open_utterance(at, phrase, end) if at_phrase else listener.open_utterance(step.start)
                self.wakes.opened(uid, at_phrase)
                self._phrase, self._phrase_at, self._tell = "", (-math.inf, -math.inf), NOT_TOLD
                self.turn = TurnRecord()
                self.preemption.new_turn()
            elif step.action is Action.FLUSH:
                listener.flush(self.tracker.silence)
                self.wakes.paused()
            elif step.action is Action.REOPEN:
                listener.reopen()
                self.preemption.drop()  # the user carried on: that reply answered a fragment
            elif step.action is Action.COMMIT:
                if not self.wakes.hold(step):  # the words of the wake-up decide first
                    self._commit(step)
            elif step.action is Action.DISCARD:
                log.info("user: (nothing recognised)")
                self.preemption.drop()
                self.turn = None
                listener.drop_utterance()
                self.wakes.utterance_gone()
                if self._s.current_reply is not None and self._s.current_reply.paused:
                    self.resume("no words")

    def _commit(self, step: Step) -> None:
        listener = self._listener
        turn, self.turn = self.turn or TurnRecord(), None
        listener.drop_utterance()
        turn.speech_end = listener.capture_time(step.speech_end)
        turn.committed_at = time.monotonic()
        turn.transcript = step.text
        self._barge_paused_at = None
        ahead = self.preemption.take(step.text)
        self._count_preemption(turn, ahead is not None)
        reply = self._s.current_reply
        if reply is not None and reply.audible and not reply.paused:
            # Speech over the reply too short to pause it (a word, a cough): not an interruption.
            log.info("user: %s (too short to interrupt the reply: ignored)", step.text)
            _drop(ahead)
            return
        if reply is not None and reply.paused and only_fillers(step.text):
            self.resume(f"only {step.text!r}")  # a backchannel ("mm-hmm"), not a turn
            _drop(ahead)
            return
        self._s.emit(UserInputTranscribedEvent(step.text, is_final=True))
        log.info("user: %s", step.text, extra=TRANSCRIPT)
        if is_stop(step.text, self.activation.stop_words):
            log.info("stop word: the agent stops")
            self._s.interrupt()
            if self.activation.mode == "wake":
                self.armed_until = -math.inf
            return
        self._s.interrupt()
        if ahead is not None:
            ahead.handle.turn = turn
            self._s.enqueue(ahead.handle, reply=ahead)
            return
        handle = SpeechHandle(source="user_turn", turn=turn)
        self._s.enqueue(handle, user_text=step.text)

    def _count_preemption(self, turn: TurnRecord, hit: bool) -> None:
        """The turn's preemption figures: hit or not (None when none began), misses."""
        turn.preempt_hit = hit if self.preemption.began else None
        turn.preempt_misses = self.preemption.misses


def _drop(ahead: Reply | None) -> None:
    """A reply begun ahead that the committed turn does not want after all."""
    if ahead is not None:
        ahead.drop()
