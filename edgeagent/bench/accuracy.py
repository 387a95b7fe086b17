"""Wake-up accuracy on the set of :mod:`edgeagent.bench.accuracy_set`: model, then words.

Each item goes through the front end of a device session (WebRTC's audio processing,
echo cancellation on, noise suppression on or off: :func:`front_end`), then:

- the wake model (the default openWakeWord ``hey_jarvis``) scores every 80 ms step, and
  :class:`~edgeagent.wake.oww.Trigger` (trigger level 2, refractory 2 s) turns the scores
  into firings at each threshold tried;
- a firing whose peak score is under ``TRUSTED_SCORE`` is checked by its words, as the
  session checks it: Silero VAD finds the speech, Whisper (the default tiny.en) writes
  the stretch from the start of the speech the firing is in
  (:func:`~edgeagent.voice.wake_check.phrase_start`) with ``CHECK_AFTER_S`` of what
  follows (less when the question ends first; when that misses the phrase and the
  question goes on, once more at its end), and
  :class:`~edgeagent.voice.wake_check.WakePhrases` accepts or drops the wake-up;
- the question of an accepted wake-up is the audio the session's turn gets: from the
  start of the phrase (when the speech goes on after the wake-up) to the end of that
  speech (pauses under the session's ``max_delay_s`` carry on, at most
  ``max_speech_s``), written by Whisper told the phrase (its ``prefix``) and with the
  phrase taken off (:meth:`~edgeagent.voice.wake_check.WakePhrases.without_phrase`).

So the decisions are the session's own functions on the session's own models; what is
not the session is the timing: each stretch is decoded once, whole (a session decodes a
turn as it grows; its final is of the same audio). One transcript per distinct stretch
is decoded (a cache), so a curve over thresholds costs one pass of the models.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.accuracy_set import Item
from edgeagent.config.voice import TurnConfig
from edgeagent.voice.wake_check import (
    CHECK_AFTER_S,
    PHRASE_ALONE_S,
    PHRASE_MAX_S,
    RECENT_SPEECH_S,
    WakePhrases,
    phrase_start,
)
from edgeagent.wake.base import TRUSTED_SCORE, PeakHold
from edgeagent.wake.oww import DEFAULT_REFRACTORY, DEFAULT_TRIGGER_LEVEL, STEP_S
from edgeagent.wake.trigger import Trigger

TAIL_S = 0.3
"""Audio after the speech end that the STT gets (VAD lag, the last consonant)."""


MODES = ("off", "all", "wake")
"""Noise suppression: none; in the echo canceller, for every stage (``audio.noise_suppression``);
before the wake word model only (``audio.wake_noise_suppression``)."""


def front_end(audio: AudioFrame, mode: str) -> tuple[AudioFrame, AudioFrame]:
    """``audio`` through the session's echo canceller (no far end), as the mic's would go:
    (what the VAD and STT hear, what the wake word model hears)."""
    from edgeagent.audio.denoise import NoiseSuppressor
    from edgeagent.audio.echo import EchoCanceller

    echo = EchoCanceller(RECOGNITION_RATE, noise_suppression=mode == "all")
    heard = _whole(audio, [echo.process_capture(f) for f in audio.chunks(320)])
    if mode != "wake":
        return heard, heard
    ns = NoiseSuppressor(RECOGNITION_RATE)
    return heard, _whole(audio, [ns.process(f) for f in heard.chunks(320)])


def _whole(audio: AudioFrame, out: list[AudioFrame]) -> AudioFrame:
    done = AudioFrame.concat([f for f in out if f.num_samples] or [AudioFrame.silence(0, RECOGNITION_RATE)])
    missing = audio.num_samples - done.num_samples
    return AudioFrame.concat([done, AudioFrame.silence(missing / RECOGNITION_RATE, RECOGNITION_RATE)])


@dataclass
class Heard:
    """What the models made of one stretch of audio."""

    scores: np.ndarray
    """The wake word's score at each 80 ms step."""
    segments: list[tuple[float, float]]
    """Speech (start, end) in seconds, as the VAD found it."""


class Models:
    """The default wake word, VAD and STT, with a cache of transcripts."""

    def __init__(self) -> None:
        from edgeagent.stt.whisper import WhisperSTT
        from edgeagent.vad.silero import SileroVAD
        from edgeagent.wake.oww import OpenWakeWord

        self.wake = OpenWakeWord(("hey_jarvis",))
        self.vad = SileroVAD()
        self.stt = WhisperSTT()
        self._texts: dict[tuple[int, int, int, str], str] = {}
        self.decodes = 0

    def hear(self, audio: AudioFrame, wake_audio: AudioFrame | None = None) -> Heard:
        scorer = self.wake.scorer()
        s = (audio if wake_audio is None else wake_audio).samples.astype(np.float32)
        scores = np.array([scorer.process(s[i:i + 1280])["hey_jarvis"] for i in range(0, len(s) - 1279, 1280)])
        return Heard(scores, asyncio.run(self._segments(audio)))

    async def _segments(self, audio: AudioFrame) -> list[tuple[float, float]]:
        from edgeagent.vad.base import VADEventType

        stream = self.vad.stream()
        for f in audio.chunks(512):
            stream.push(f)
        stream.end_input()
        out: list[tuple[float, float]] = []
        start: float | None = None
        async for ev in stream:
            if ev.type is VADEventType.START_OF_SPEECH:
                start = ev.timestamp - ev.speech_duration
            elif ev.type is VADEventType.END_OF_SPEECH and start is not None:
                out.append((start, ev.timestamp - ev.silence_duration))
                start = None
        if start is not None:
            out.append((start, audio.duration))
        return out

    def transcribe(self, audio: AudioFrame, start: float, end: float, key: int, prefix: str = "") -> str:
        k = (key, round(start * 100), round(end * 100), prefix)
        if k not in self._texts:
            part = audio.slice(round(start * RECOGNITION_RATE), round(end * RECOGNITION_RATE))
            self._texts[k] = self.stt.transcribe(part.to_float32(), None, prefix).text
            self.decodes += 1
        return self._texts[k]


@dataclass(frozen=True)
class Firing:
    """One firing, as the stream reports it."""

    at: float
    """Stream time it fired."""
    peak: float
    peak_at: float
    """The peak score, and the time of its step (about the end of the phrase)."""
    out_at: float
    """Stream time the event came out (the score stopped rising: :class:`PeakHold`)."""
    again: bool = False
    """The model became sure of the firing before (:attr:`edgeagent.wake.base.WakeEvent.again`)."""


def firings(scores: np.ndarray, threshold: float) -> list[Firing]:
    """Each firing at ``threshold`` (the provider's default trigger and :class:`PeakHold`)."""
    trigger = Trigger(threshold, DEFAULT_TRIGGER_LEVEL, DEFAULT_REFRACTORY)
    peaks = PeakHold()
    out: list[Firing] = []
    now = 0.0
    for i, s in enumerate(scores):
        now = (i + 1) * STEP_S
        event = peaks.step("w", float(s), now)
        if trigger.update(float(s), now):
            event = peaks.fired("w", float(s), now, again=trigger.again)
        if event is not None:
            out.append(Firing(event.timestamp, event.score, event.phrase_end, now, event.again))
    return out + [Firing(e.timestamp, e.score, e.phrase_end, now, e.again) for e in peaks.flush()]


def _speech_at(segments: Sequence[tuple[float, float]], t: float) -> tuple[float, float] | None:
    """The speech (start, end) a firing at ``t`` belongs to, if any."""
    current = [(s, e) for s, e in segments if s <= t and e >= t - RECENT_SPEECH_S]
    return current[-1] if current else None


def question_stretch(segments: Sequence[tuple[float, float]], fire: Firing, duration: float,
                     turn: TurnConfig) -> tuple[float, float]:
    """The STT audio (start, end) of the question of an accepted wake-up, as the session's turn
    takes it: from just before the phrase's end, or the next speech when the phrase's is over."""
    speech = _speech_at(segments, fire.out_at)
    if speech is not None and speech[1] >= fire.out_at:
        start, end = phrase_start(fire.at, speech[0]), speech[1]
    else:
        later = [(s, e) for s, e in segments if s >= fire.out_at - STEP_S]
        if not later:
            return fire.peak_at, fire.peak_at
        start, end = later[0][0] - TAIL_S, later[0][1]
    for s, e in segments:
        if end < s <= end + turn.max_delay_s and e - start <= turn.max_speech_s:
            end = e
    return start, min(duration, end + TAIL_S)


@dataclass
class Outcome:
    """One item at one threshold."""

    fired: int = 0
    accepted: int = 0
    heard: list[str] = field(default_factory=list)
    """The questions of the accepted wake-ups, the wake phrase taken off."""


def judge(models: Models, audio: AudioFrame, heard: Heard, threshold: float, phrases: WakePhrases,
          key: int, verify: bool = True, turn: TurnConfig | None = None) -> Outcome:
    out = Outcome()
    last: tuple[Firing, bool] | None = None  # the last new firing, accepted or not
    for fire in firings(heard.scores, threshold):
        if fire.again:  # as the session's WakeGate: a sure score accepts the firing its words did not
            if last is None or last[1] or fire.peak < TRUSTED_SCORE:
                continue
            fire, verify_it = last[0], False
        else:
            out.fired += 1
            verify_it = verify and fire.peak < TRUSTED_SCORE
        start, end = question_stretch(heard.segments, fire, audio.duration, turn or TurnConfig())
        text = _accepted(models, audio, heard, fire, (start, end), phrases, key, verify_it)
        last = (fire, text is not None)
        if text is not None:
            out.accepted += 1
            out.heard.append(phrases.without_phrase(text, fire.peak))
    return out


def _accepted(models: Models, audio: AudioFrame, heard: Heard, fire: Firing, question: tuple[float, float],
              phrases: WakePhrases, key: int, check: bool) -> str | None:
    """The question's transcript of a firing the session accepts (None: dropped), as
    :class:`~edgeagent.voice.wake_gate.WakeGate` decides. A turn opened at the phrase is
    checked by its own transcripts (:func:`_by_transcripts`; the STT is told the phrase only
    when no check is needed); a phrase said alone (by the timing, or a speech no longer than
    :data:`PHRASE_MAX_S`) by its own final, and when that misses it, like a firing after the
    speech ended, by the question after it (:func:`_after_phrase`)."""
    start, end = question
    speech = _speech_at(heard.segments, fire.out_at)
    in_turn = speech is not None and speech[1] >= fire.out_at
    if speech is not None and in_turn and speech[1] - fire.peak_at > PHRASE_ALONE_S:
        if not check:
            return models.transcribe(audio, start, end, key, phrases.spoken("hey_jarvis"))
        alone = models.transcribe(audio, start, speech[1] + TAIL_S, key) if speech[1] - start <= PHRASE_MAX_S else ""
        if speech[1] - start > PHRASE_MAX_S or phrases.said(alone, fire.peak):
            return _by_transcripts(models, audio, fire, start, end, phrases, key)
    elif check and speech is not None and in_turn:
        check = not phrases.said(models.transcribe(audio, start, speech[1] + TAIL_S, key), fire.peak)
    return _after_phrase(models, audio, heard, fire, end, phrases, key, check)


def _by_transcripts(models: Models, audio: AudioFrame, fire: Firing, start: float, end: float,
                    phrases: WakePhrases, key: int) -> str | None:
    """The transcripts of an utterance from the phrase on, not told it: a partial (the phrase
    and :data:`CHECK_AFTER_S`) that has the phrase accepts, else the final decides."""
    early = phrases.said(models.transcribe(audio, start, min(fire.peak_at + CHECK_AFTER_S, end), key), fire.peak)
    text = models.transcribe(audio, start, end, key)
    return text if early or phrases.said(text, fire.peak) else None


def _after_phrase(models: Models, audio: AudioFrame, heard: Heard, fire: Firing, end: float,
                  phrases: WakePhrases, key: int, check: bool) -> str | None:
    """The question after a phrase said on its own: when it begins within
    :data:`RECENT_SPEECH_S` of the phrase's end, heard from the phrase on (told it, or its
    transcripts check it); else on its own, after a decode of the phrase (:func:`_by_decode`)."""
    speech = _speech_at(heard.segments, fire.at)
    after = [s for s, _ in heard.segments if speech is not None and s > speech[1]]
    begins = after[0] - TAIL_S if after else end
    if speech is not None and after and begins - speech[1] <= RECENT_SPEECH_S:
        began = phrase_start(fire.at, speech[0])
        if check:
            return _by_transcripts(models, audio, fire, began, end, phrases, key)
        return models.transcribe(audio, began, end, key, phrases.spoken("hey_jarvis"))
    if check and not _by_decode(models, audio, heard, fire, end, phrases, key):
        return None
    return models.transcribe(audio, begins, end, key) if end > begins else ""


def _by_decode(models: Models, audio: AudioFrame, heard: Heard, fire: Firing, end: float, phrases: WakePhrases,
               key: int) -> bool:
    """The words check by a decode of the phrase's stretch, and once more at the question's end."""
    speech = _speech_at(heard.segments, fire.at)
    began = phrase_start(fire.at, speech[0] if speech else None)
    decided = min(fire.peak_at + CHECK_AFTER_S, end)
    if phrases.said(models.transcribe(audio, began, decided, key), fire.peak):
        return True
    return decided < end and phrases.said(models.transcribe(audio, began, end, key), fire.peak)


# -- words ------------------------------------------------------------------------

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_NUMBERS = {str(i): w for i, w in enumerate(_UNITS)}


def norm_words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return [_NUMBERS.get(w, w) for w in words]


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word errors, reference words)."""
    r, h = norm_words(ref), norm_words(hyp)
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        cur = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            cur[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return prev[len(h)], len(r)


def first_word_kept(question: str, heard: str) -> bool:
    q, h = norm_words(question), norm_words(heard)
    return bool(q and h and q[0] == h[0])


def items_of(items: Sequence[Item], *, kind: str | None = None, voices: Sequence[str] | None = None) -> list[Item]:
    return [i for i in items if (kind is None or i.kind == kind) and (voices is None or i.voice in voices)]
