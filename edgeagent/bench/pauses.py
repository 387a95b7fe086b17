"""Questions with a pause in the middle, for turn detection: the user stops to think.

Each of :data:`PAUSED` is a question cut where it is plainly unfinished (after an
article, a preposition, "what is", "how many"), spoken by espeak-ng as the
fragment, a silence of 0.6-1.2 s, then the rest. A good turn detector waits
through the pause and answers the whole question once.

The fragment is rendered with a trailing comma, so espeak-ng gives it the
level, continuing intonation of a clause that goes on, not the falling pitch of
a finished sentence (a speaker who pauses mid-question does not sound done).

:func:`make_paused` is pure apart from running espeak-ng: the same arguments give
the same audio and pauses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.bench.scripted import espeak, speech_end, trim

PAUSED: tuple[tuple[str, str], ...] = (
    ("Set an alarm for", "half past seven."),
    ("What is the capital of", "France?"),
    ("Can you tell me how many", "legs a spider has?"),
    ("What is", "the boiling point of water?"),
    ("How many", "continents are there?"),
    ("Who painted the", "Mona Lisa?"),
    ("What is the weather like in", "London today?"),
    ("Please turn on the", "lights."),
    ("Can you play a song by", "the Beatles?"),
    ("What language is spoken in", "Brazil?"),
    ("How long does it take to", "boil an egg?"),
    ("What is the tallest mountain in", "the world?"),
    ("Tell me a joke about", "cats."),
    ("What is the chemical symbol for", "gold?"),
    ("How do plants", "make food?"),
)
"""(unfinished fragment, rest) of each question. Kept where Whisper tiny.en hears the
fragment in both voices about right: dropped were ones it turned into a finished
question ("How far away is the" -> "How far away is that?", "Remind me to call my
sister at" -> "Remind me to call my sister.") or into nonsense."""

VOICES = ("en-us", "en-gb")
"""espeak-ng voices the questions are spoken in, in turn."""

PAUSE_RANGE_S = (0.6, 1.2)


@dataclass(frozen=True)
class PausedQuestion:
    text: str
    """The whole question (fragment and rest)."""
    fragment: str
    rest: str
    voice: str
    pause_s: float
    """Silence between the fragment's last sound and the rest's first."""
    audio: AudioFrame
    """Fragment, pause, rest at 16 kHz, without silence before or after."""
    fragment_end_s: float
    """The true end of the fragment's speech within ``audio`` (seconds)."""


def make_paused(n: int = 12, voices: Sequence[str] = VOICES, seed: int = 0) -> list[PausedQuestion]:
    """``n`` paused questions, cycling through :data:`PAUSED` and ``voices``.

    Question ``i`` is ``PAUSED[i % len(PAUSED)]`` in voice ``voices[(i % len(PAUSED)
    + i // len(PAUSED)) % len(voices)]``, so with ``n = len(PAUSED) * len(voices)`` every question is heard in
    every voice. Pauses are drawn from 0.6-1.2 s (10 ms steps) by a generator seeded
    with ``seed``.
    """
    if n < 1 or not voices:
        raise ValueError("at least one question and one voice")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fragment, rest = PAUSED[i % len(PAUSED)]
        voice = voices[(i % len(PAUSED) + i // len(PAUSED)) % len(voices)]
        pause_s = round(rng.uniform(*PAUSE_RANGE_S), 2)
        head = trim(espeak(f"{fragment},", voice=voice))
        tail = trim(espeak(rest, voice=voice))
        audio = AudioFrame.concat([head, AudioFrame.silence(pause_s, RECOGNITION_RATE), tail])
        out.append(PausedQuestion(f"{fragment} {rest}", fragment, rest, voice, pause_s, audio,
                                  speech_end(head)))
    return out
