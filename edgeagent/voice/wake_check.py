"""The words check of a wake-up: is the wake phrase what the user said?

The wake word model fires on sounds, late in the phrase (at the end of "Jarvis", often
as the question's first word begins), and near misses ("Hey Travis") fire it too. A
firing with a peak score under :data:`TRUSTED_SCORE` is checked by its words:
:class:`WakePhrases` (a phonetic match, :mod:`edgeagent.wake.phrase`) says whether a
transcript begins with the phrase. Which transcript (the turn's own, the final of the
phrase said alone, or a decode of its own) is :mod:`edgeagent.voice.wake_gate`'s choice;
:class:`WakeCheck` is the wake-up waiting for it, and its own decode: the stretch the phrase
was said in, from :func:`phrase_start`, with :data:`CHECK_AFTER_S` of what follows (Whisper
writes a phrase cut off at its end, or alone, worse than one followed by the question:
"Hey, I'm just watching" for a fast "Hey Jarvis, what"). Until it is decided, the question
is heard as usual but not answered, and a reply the wake word spoke over is paused. A
match accepts the wake-up; anything else drops it without a word: the listening window
closes again, the question heard meanwhile is dropped, a paused reply resumes, a debug
line says why and :attr:`WakeStats.rejected` counts it.

The question's audio, for a wake word said in the same breath, starts where the phrase
started (:func:`phrase_start`): the model fires late, often in the question's first word,
and any later start cut that word. So its transcript begins with the phrase, which
:meth:`WakePhrases.without_phrase` takes off by the same match (or its last word, should
the VAD have started late: "Jarvis, what…"); a final that is the phrase alone is no words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeagent import aio
from edgeagent.audio.frame import AudioFrame
from edgeagent.stt.base import STT
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice.audio_history import AudioHistory
from edgeagent.voice.turns import Step
from edgeagent.wake.phrase import MAX_DISTANCE, Verdict, match_wake, phrase_of

WAKE_LOOKBACK_S = 2.5
"""The phrase's audio starts at most this long before the wake word fired: "hey jarvis" said
slowly lasts about 1.2 s and the model fires up to ~0.5 s after its end."""
PREFIX_S = 0.3
"""Audio kept before the speech start the VAD found (its onset lags the first sound)."""
SURE_SCORE = 0.3
"""A firing that peaks at or above this (still under :data:`TRUSTED_SCORE`) needs words only
within :data:`SURE_DISTANCE` of the phrase, not :data:`~edgeagent.wake.phrase.MAX_DISTANCE`.
In scripts/bench, Whisper wrote espeak-ng's "Hey Jarvis" as "Hey Jara", "Hey, Jardobis",
"Hey, Jardavis" and "Hey Jardviz" (1.0 each) for firings that peaked at 0.67, 0.68, 0.34 and
0.49: each wake-up was dropped, its question never answered. In scripts/bench-accuracy's set
the only near miss that fires this high is "Hey Travis" (0.39-0.49, 2.0 away); every other
one ("Hey Mavis", "Hey Davis", "Harvest is early": 1.0-1.5 away) stays under 0.1, and ordinary
speech never fired at 0.02 in 30 minutes. A word 1.0 away that the model also scores this high
("Hey Garvis") is taken for the phrase."""
SURE_DISTANCE = 1.0
"""How far the words of a firing at :data:`SURE_SCORE` or more may be from the phrase."""
CHECK_AFTER_S = 1.0
"""The words check decodes the phrase with this much of what follows it (sooner when the
question's turn ends first)."""
log = logging.getLogger(__name__)

PHRASE_ALONE_S = 0.35
"""A wake-up's turn whose speech ended this soon after the phrase's peak score is the phrase
alone ("Hey Jarvis." and a pause): its final has no words, whatever Whisper wrote."""
PHRASE_MAX_S = 1.5
"""A wake-up's turn whose speech lasted at most this long from :func:`phrase_start` may be
the phrase alone (a slow "Hey Jarvis" lasts ~1.2 s, and :data:`PREFIX_S` comes before it)."""
RECENT_SPEECH_S = 1.5
"""A wake word fired this long after the speech ended still belongs to that speech."""


def phrase_start(fired_at: float, speech_start: float | None) -> float:
    """Stream time the phrase of a wake-up fired at ``fired_at`` starts at, given the start of
    the speech it fired in (None: the VAD saw none)."""
    earliest = max(0.0, fired_at - WAKE_LOOKBACK_S)
    if speech_start is None:
        return earliest
    return max(earliest, speech_start - PREFIX_S)


REPLAY_S = 30.0
"""How far back :meth:`SpeechSpan.rewind` can go: the VAD events of the last this many seconds
of stream time are kept."""


@dataclass
class SpeechSpan:
    """Where the VAD's latest speech began and ended (stream times; inf: still going), and
    whether its last window was speech; with the recent VAD events, to go back in time.

    The wake word model and the VAD read the same frames in streams of their own: a wake
    model slower than real time (an overloaded board, emulation) reports the wake word after
    the VAD has reported the speech that followed it, maybe all of the question. TurnTaking
    rewinds to the wake word's own stream time and replays those VAD events
    (:meth:`rewind`), so that the question is heard as it would have been without the lag.
    """

    began: float = -math.inf
    ended: float = -math.inf
    speaking: bool = False
    recent: deque[tuple[VADEvent, float, float, bool]] = field(default_factory=deque)
    """The recent events, each with (began, ended, speaking) as they were before it."""

    def on_vad(self, ev: VADEvent) -> None:
        self.recent.append((ev, self.began, self.ended, self.speaking))
        while self.recent and self.recent[0][0].timestamp < ev.timestamp - REPLAY_S:
            self.recent.popleft()
        self.speaking = ev.speaking
        if ev.type is VADEventType.START_OF_SPEECH:
            self.began, self.ended = ev.timestamp - ev.speech_duration, math.inf
        elif ev.type is VADEventType.END_OF_SPEECH:
            self.ended = ev.timestamp - ev.silence_duration

    def rewind(self, at: float) -> list[VADEvent]:
        """Back to the state at stream time ``at``: the events after it (none when the VAD is not
        ahead of ``at``), in order, are taken off to be replayed through :meth:`on_vad`."""
        late: list[VADEvent] = []
        while self.recent and self.recent[-1][0].timestamp > at:
            ev, self.began, self.ended, self.speaking = self.recent.pop()
            late.append(ev)
        return late[::-1]

    def phrase_start(self, fired_at: float) -> float:
        """:func:`phrase_start` of a wake word fired at ``fired_at`` in (or just after) this speech."""
        return phrase_start(fired_at, self.began if self.ended >= fired_at - RECENT_SPEECH_S else None)


@dataclass
class WakeStats:
    """What became of the wake word's firings in this session; read them, don't reset them."""

    fired: int = 0
    """The wake word model fired (outside a muted mic)."""
    accepted: int = 0
    """Trusted by its score, or its words began with the wake phrase (or the check is off)."""
    rejected: int = 0
    """Dropped: the words of the phrase's stretch did not begin with the wake phrase."""
    decodes: int = 0
    """Decodes the words check made of its own (the turn's transcripts did not decide)."""


@dataclass
class WakeCheck:
    """One wake-up waiting for the decode of its phrase."""

    word: str
    score: float
    armed_before: float
    """The listening window before the wake-up (restored when it is dropped)."""
    turn_before: bool
    """A user turn was open when it fired (kept when the wake-up is dropped)."""
    start: float
    """Stream time the phrase's audio starts (:func:`phrase_start`)."""
    due: float
    """Stream time the decode may start at the latest (:data:`CHECK_AFTER_S` after the phrase)."""
    now: asyncio.Event = field(default_factory=asyncio.Event)
    """Set: decode at once (the question's turn has ended)."""
    retry: bool = False
    """The first decode missed the phrase; the next one (at the question's pause) decides."""
    utterance: int | None = None
    """The STT utterance whose own transcripts decide (the turn opened at the phrase); None:
    a decode of the phrase's stretch decides (:meth:`words`)."""
    paused_reply: bool = False
    """The wake-up paused the agent's reply (stopped when accepted, resumed when dropped)."""
    held: Step | None = None
    """The commit of the question, held until the words decide."""

    async def words(self, stt: STT, history: AudioHistory, clock: Callable[[], float]) -> str | None:
        """The transcript of the phrase's stretch, once due by ``clock`` (stream time) or told
        :attr:`now`; None when the STT failed."""
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(self.now.wait(), max(0.0, self.due - clock()))
        self.now.clear()
        frames = list(history.after(self.start))
        try:
            return (await stt.recognize(AudioFrame.concat(frames))).text if frames else ""
        except Exception as exc:  # the STT failing must not lose the question
            log.warning("the wake word check failed, the wake-up stands: %s", exc)
            return None

    def again_at_the_end(self) -> None:
        """Decode once more when the question pauses (Whisper writes a phrase cut off
        after a second worse than the whole: "Thank you, I will be set" for "Hey Jarvis, set")."""
        self.retry, self.due = True, math.inf


@dataclass
class WakePhrases:
    """The spoken phrases of the wake words, and the match against a transcript."""

    words: Sequence[str]
    max_distance: float = MAX_DISTANCE
    phrases: tuple[str, ...] = field(init=False)
    tails: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.phrases = tuple(phrase_of(w) for w in self.words)
        self.tails = tuple(p.rsplit(" ", 1)[-1] for p in self.phrases if " " in p)

    def spoken(self, word: str) -> str:
        """How the phrase of ``word`` is written at the start of a question ("Hey Jarvis,")."""
        phrase = self.phrases[list(self.words).index(word)] if word in self.words else phrase_of(word)
        return phrase.title() + ","

    def limit(self, score: float) -> float:
        """The farthest a transcript may be from the phrase, for a firing that peaked at ``score``."""
        return max(self.max_distance, SURE_DISTANCE) if score >= SURE_SCORE else self.max_distance

    def said(self, text: str, score: float = 0.0) -> bool:
        """Does ``text`` begin with one of the wake phrases (by the limit of a firing at ``score``)?"""
        return bool(self.phrases) and match_wake(text, self.phrases, self.limit(score)).verdict is Verdict.MATCH

    def without_phrase(self, text: str, score: float = 0.0) -> str:
        """``text`` without a wake phrase (or a phrase's last word: "Jarvis, what…") it begins
        with, matched as :meth:`said` does; the rest starts with a capital."""
        for phrases in (self.phrases, self.tails):
            found = match_wake(text, phrases, self.limit(score)) if phrases else None
            if found is not None and found.verdict is Verdict.MATCH:
                return self.without_phrase(found.rest, score)  # Whisper told the phrase may write it twice
        return text
