"""Does a transcript begin with the wake phrase? A phonetic match, and the words after it.

The wake word model fires on sounds; the STT writes the words of the same stretch
of audio. :func:`match_wake` checks that those words begin with the wake phrase,
however Whisper spells it ("Hey Jarvis", "Hey, Jarvis", "Hi Jarvis", "Hey Jervis",
"heyjarvis"), and gives the text after it: that is the question.

How: each word becomes a string of rough phones (:func:`phones`): one symbol for
every vowel sound, one per consonant sound, where letters that sound alike share a
symbol ("ch" and "j" and a soft "g"; "c" as "k" or "s"; "z" as "s"; doubled letters
once). The phones of the transcript's first words are compared with the phrase's by
an edit distance (:func:`distance`) whose costs follow what a mishearing does: a
vowel for another is free, a consonant for a near one ("t"/"d", "f"/"v") costs
0.5, for another 1; a vowel or a weak "r", "l", "w", "y" dropped or added costs 0.5,
any other consonant 1, a word-initial "h" 0.75. A prefix within
:data:`MAX_DISTANCE` of the phrase matches; the phrase may end inside the last word
of that prefix ("Hey Jarvis's"). Leading fillers ("uh, hey Jarvis") are skipped.

What it separates, on the near misses of scripts/bench-accuracy: "Hey Travis" (1 consonant for
another + a reordered "r": 2.0), "Hey Mavis" (1.5), "Jarvis Cocker" (no "hey":
1.25), "Harvey's jars" (2.0+) do not match; "Hi Jarvis" (0), "Hey Jervis" (0),
"Hey Javis" (0.5), "A Jarvis" (0.75) do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

MAX_DISTANCE = 0.75
"""The most a transcript's first words may differ from the wake phrase and still match."""

VOWEL = "a"
WEAK = frozenset("rlwy")
"""Consonants that are often dropped or added in an STT's spelling (after vowels)."""
NEAR = ({"t", "d"}, {"p", "b"}, {"k", "g"}, {"f", "v"}, {"b", "v"}, {"s", "z", "x"}, {"j", "x"}, {"m", "n"},
        {"r", "l"}, {"0", "t"}, {"0", "d"}, {"0", "f"}, {"0", "v"}, {"0", "s"})
"""Consonant phones that are easily heard one for the other ("x" is "sh", "0" is "th")."""
FILLERS = frozenset(("uh", "um", "umm", "ah", "oh", "eh", "er", "erm", "hm", "hmm", "mm", "so", "okay", "ok"))

_WORD = re.compile(r"[a-z0-9']+")
_DIGRAPHS = (("tch", "j"), ("ch", "j"), ("sh", "x"), ("ph", "f"), ("th", "0"), ("ck", "k"), ("qu", "kw"),
             ("wh", "w"), ("gh", ""), ("dg", "j"))


class Verdict(Enum):
    MATCH = "match"
    """The transcript begins with the wake phrase."""
    PARTIAL = "partial"
    """The transcript is (so far) only the start of the wake phrase ("Hey"): wait for more."""
    NO = "no"
    """It does not begin with the wake phrase."""


@dataclass(frozen=True)
class WakeMatch:
    verdict: Verdict
    rest: str = ""
    """MATCH: the transcript after the wake phrase, its first letter capitalised."""
    distance: float = 0.0
    """How far the matched words were from the phrase (0: the same sounds)."""
    phrase: str = ""
    """The wake phrase that matched (or came nearest)."""


def phrase_of(word: str) -> str:
    """The spoken phrase of a wake word model name: ``hey_jarvis`` → ``hey jarvis``; a path:
    its file name without the version (``/x/hey_mycroft_v0.1.onnx`` → ``hey mycroft``)."""
    name = word.rsplit("/", 1)[-1].removesuffix(".onnx")
    name = re.sub(r"_v\d+(\.\d+)*$", "", name)
    return " ".join(w for w in re.split(r"[_\-\s]+", name.lower()) if w)


def phones(word: str) -> str:
    """Rough phones of one lowercase word (see the module docs)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    for letters, sound in _DIGRAPHS:
        w = w.replace(letters, sound.upper())
    out: list[str] = []
    for i, c in enumerate(w):
        nxt = w[i + 1] if i + 1 < len(w) else ""
        if c.isupper() or c == "0":
            p = c.lower()
        elif c in "aeiou" or (c == "y" and i > 0):
            p = VOWEL
        elif c == "c":
            p = "s" if nxt in ("e", "i", "y") else "k"
        elif c == "g":
            p = "j" if nxt in ("e", "i", "y") and i > 0 else "g"
        elif c == "z":
            p = "s"
        elif c == "x":
            out.extend("ks")
            continue
        elif c == "h":
            if i > 0:
                continue  # silent after a letter ("oh", "john")
            p = "h"
        else:
            p = c
        if p and (not out or out[-1] != p):
            out.append(p)
    return "".join(out)


def _sub(a: str, b: str, anchor: bool) -> float:
    """``a`` (of the phrase) heard as ``b``; an anchor (a word's first consonant) costs double."""
    if a == b:
        return 0.0
    if a == VOWEL or b == VOWEL:
        return 0.5 if (b if a == VOWEL else a) in WEAK else 1.0
    near = any(a in s and b in s for s in NEAR)
    return (0.5 if near else 1.0) if anchor else (0.25 if near else 0.5)


def _missing(p: str, anchor: bool) -> float:
    """Phone ``p`` of the phrase not heard."""
    if p == VOWEL or p in WEAK:
        return 0.5
    if not anchor:
        return 0.5
    return 0.75 if p == "h" else 1.0


def _extra(p: str, at_start: bool) -> float:
    """Phone ``p`` heard where the phrase has none."""
    if p == VOWEL or p in WEAK:
        return 0.5
    return 0.75 if p == "h" and at_start else 1.0


def distance(target: str, heard: str, *, anchors: frozenset[int] = frozenset(), free_tail: int | None = None) -> float:
    """Weighted edit distance from the phones ``target`` to ``heard``; ``anchors``: positions
    in ``target`` of the first consonant of each word (mishearing those costs more); with
    ``free_tail``, ``heard`` may go on past position ``free_tail`` at no cost (the rest of
    its last word)."""
    m, n = len(target), len(heard)
    prev = [0.0] * (n + 1)
    for j in range(1, n + 1):
        prev[j] = prev[j - 1] + _extra(heard[j - 1], j == 1)
    for i in range(1, m + 1):
        t, anchor = target[i - 1], i - 1 in anchors
        cur = [prev[0] + _missing(t, anchor)] + [0.0] * n
        for j in range(1, n + 1):
            cur[j] = min(prev[j - 1] + _sub(t, heard[j - 1], anchor),
                         prev[j] + _missing(t, anchor),
                         cur[j - 1] + _extra(heard[j - 1], j == 1))
        prev = cur
    if free_tail is None:
        return prev[n]
    return min(prev[free_tail:]) if free_tail <= n else prev[n]


def match_wake(text: str, phrases: Sequence[str], max_distance: float = MAX_DISTANCE) -> WakeMatch:
    """Does ``text`` begin with one of ``phrases`` (spoken phrases, e.g. "hey jarvis")?"""
    spans = [(m.group(), m.end()) for m in _WORD.finditer(text.lower())]
    while spans and spans[0][0] in FILLERS and len(spans) > 1:
        spans.pop(0)
    if not spans:
        return WakeMatch(Verdict.PARTIAL)
    best = WakeMatch(Verdict.NO, distance=float("inf"))
    for phrase in phrases:
        found = _match_one(text, spans, _Target(phrase), max_distance)
        if found.verdict is Verdict.MATCH and (best.verdict is not Verdict.MATCH or found.distance < best.distance):
            best = WakeMatch(found.verdict, found.rest, found.distance, phrase)
        elif best.verdict is not Verdict.MATCH and found.distance < best.distance:
            best = WakeMatch(found.verdict, "", found.distance, phrase)
    return best


@dataclass(frozen=True)
class _Target:
    phrase: str

    @property
    def words(self) -> list[str]:
        return self.phrase.split()

    @property
    def phones(self) -> str:
        return "".join(phones(w) for w in self.words)

    @property
    def anchors(self) -> frozenset[int]:
        out, at = set(), 0
        for w in self.words:
            p = phones(w)
            if p and p[0] != VOWEL:
                out.add(at)
            at += len(p)
        return frozenset(out)


def _match_one(text: str, spans: list[tuple[str, int]], phrase: _Target, max_distance: float) -> WakeMatch:
    """The best prefix of ``spans`` (1 to the phrase's words + 1) for ``phrase``."""
    best = WakeMatch(Verdict.NO, distance=float("inf"))
    heard = ""
    target, anchors = phrase.phones, phrase.anchors
    for k, (word, end) in enumerate(spans[: len(phrase.words) + 1]):
        last_start = len(heard)
        heard += phones(word)
        d = distance(target, heard, anchors=anchors, free_tail=last_start + 1)
        if d <= max_distance and (best.verdict is not Verdict.MATCH or d < best.distance):
            best = WakeMatch(Verdict.MATCH, _rest(text, end), d)
        elif best.verdict is not Verdict.MATCH and d < best.distance:
            best = WakeMatch(Verdict.NO, distance=d)
        # All the words there are: a start of the phrase ("Hey") may go on in the next final.
        if (k + 1 == len(spans) and best.verdict is not Verdict.MATCH and len(heard) < len(target)
                and distance(target[: len(heard)], heard, anchors=anchors) <= max_distance):
            return WakeMatch(Verdict.PARTIAL, distance=best.distance)
    return best


def _rest(text: str, end: int) -> str:
    """``text`` after character ``end`` (of its lowercase twin), without leading punctuation."""
    rest = text[end:].lstrip(" \t\n,.;:!?-—…'\"")
    return rest[:1].upper() + rest[1:]
