"""Incremental text splitter: streamed LLM text in, speakable clauses out.

:class:`ClauseSplitter` is pure and synchronous, so it is tested without audio.
Text arrives token by token; a clause comes out as soon as its end is certain:

- a sentence end (``. ! ? …``, possibly followed by closing quotes or
  brackets) once whitespace follows it, so ``3.14`` and ``e.g.`` are never cut;
- a comma, semicolon, colon or dash followed by whitespace, once the clause has
  a few words (any word count for the first clause of a segment: "Sure," is
  the fastest first audio there is);
- a newline (list items, paragraphs);
- a word limit, for long clauses without punctuation. The limit is small for
  the first clause (:data:`FIRST_CLAUSE_WORDS`: first audio comes fast), then
  ``second_words`` and doubling for each later clause up to ``max_words``, so
  synthesis keeps ahead of playback with ever larger, better-sounding units. The
  cut prefers to fall before a conjunction or preposition ("…is sunny | with a
  light breeze");
- time, for the first clause only (:meth:`ClauseSplitter.cut`, called by the
  stream after :data:`FIRST_CUT_S` of LLM text): on a loaded board even a few
  words can take a second to come, and the first audio must not wait for them.

:meth:`ClauseSplitter.flush` ends a segment and returns the rest.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

# Sentence ends: a run of terminal marks plus closing quotes/brackets, then whitespace.
_SENTENCE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
# Soft breaks: ,;: then whitespace; an em/en dash; a spaced hyphen.
_SOFT = re.compile(r"[,;:][\"'”’)\]]*(?=\s)|[—–]|(?<=\s)--?(?=\s)")
_NEWLINE = re.compile(r"\n")
# A complete word: a run of non-space characters that whitespace follows.
_WORD = re.compile(r"\S+(?=\s)")
_WORDISH = re.compile(r"\w")

#: Words before which a word-limit cut sounds natural.
BREAK_BEFORE = frozenset(
    (
        "and", "but", "or", "so", "because", "which", "who", "whom", "whose", "that", "when",
        "while", "if", "unless", "although", "though", "with", "without", "to", "for", "from",
        "in", "on", "at", "of", "about", "than", "then", "as", "after", "before", "until", "where",
        "since", "into", "onto", "over", "under", "through", "during",
    )
)

#: Lower-case words (without the final period) that a period does not end.
ABBREVIATIONS = frozenset(
    (
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
        "approx", "dept", "fig", "inc", "ltd", "corp", "mt", "jan", "feb", "apr", "jun", "jul",
        "aug", "sep", "sept", "oct", "nov", "dec",
    )
)

# Markdown an LLM likes to emit and a voice should not read out.
_MARKDOWN = str.maketrans("", "", "*#`_~")
_SPACES = re.compile(r"\s+")


def speakable(text: str) -> str:
    """``text`` cleaned for a voice: markdown marks dropped, whitespace collapsed.

    Empty when nothing is left to say (only spaces or punctuation).
    """
    cleaned = _SPACES.sub(" ", text.translate(_MARKDOWN)).strip()
    return cleaned if _WORDISH.search(cleaned) else ""


def _count_words(text: str) -> int:
    return sum(1 for w in text.split() if _WORDISH.search(w))


def _is_abbreviation(before: str) -> bool:
    """Whether the period after ``before`` (the text up to it) belongs to a word."""
    m = re.search(r"(\S+)$", before)
    if not m:
        return False
    word = m.group(1).lstrip("\"'“‘([")
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word):
        return True  # "U.S", "e.g", "a.m"
    return word.lower() in ABBREVIATIONS


FIRST_CLAUSE_WORDS = 2
"""The first clause of a reply ends after this many words at most (its first audio comes while
the LLM writes the rest; later clauses double, see :class:`ClauseSplitter`). Two, not three:
the third word costs a token or two of LLM time and ~15 ms of Piper, and in scripts/bench the
median time from the first LLM text to the first audio went from 123 and 116 ms (3 words) to 91
and 81 ms (2 words), two runs each, alternated (12 questions each, nothing else running)."""
FIRST_CUT_S = 0.3
"""A reply's first clause is cut after this much LLM time at most (:meth:`ClauseSplitter.cut`),
whatever its punctuation: on a loaded board 5 words can take a second to come."""
MIN_CUT_WEIGHT = 12
"""Text without a space is cut by time only once it is this heavy (a number, not a word)."""
DIGIT_WEIGHT = 6
"""A digit is spoken as several letters' worth ("987" is "nine hundred eighty-seven")."""


def _weight(text: str) -> int:
    return len(text) + (DIGIT_WEIGHT - 1) * sum(ch.isdigit() for ch in text)


@dataclass
class ClauseSplitter:
    """Splits streamed text into clauses to speak; one instance per stream.

    ``first_words`` is the word limit of a segment's first clause (later
    clauses double it, up to ``max_words``); ``min_words`` is how many words a
    later clause needs before a comma may end it (``first_min_words`` for the
    first clause).
    """

    first_words: int = FIRST_CLAUSE_WORDS
    second_words: int = 10
    """The word limit of the second clause (then it doubles, up to ``max_words``)."""
    max_words: int = 30
    min_words: int = 4
    first_min_words: int = 1
    max_chars: int = 200
    """A clause never sounds longer than this many characters of text, a digit counting as
    :data:`DIGIT_WEIGHT` (a model rambling "7,987,987,..." has no spaces to cut at, and one
    huge clause cost the voice 10 s and 900 MB)."""
    _buf: str = field(default="", init=False, repr=False)
    _index: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.first_words <= self.max_words or min(self.min_words, self.first_min_words) < 1:
            raise ValueError("need 1 <= first_words <= max_words, and min_words, first_min_words >= 1")
        self.second_words = max(self.first_words, min(self.second_words, self.max_words))
        if self.max_chars < 20:
            raise ValueError("max_chars must be at least 20")

    @classmethod
    def sentences(cls) -> ClauseSplitter:
        """A splitter for text that is already complete: long units, better prosody."""
        return cls(first_words=40, max_words=40, min_words=40, first_min_words=40)

    @property
    def pending(self) -> str:
        """Text pushed but not yet handed out."""
        return self._buf

    def push(self, text: str) -> list[str]:
        """Add streamed text; returns the clauses it completed (maybe none)."""
        self._buf += text
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            if cut == 0 and not self._buf[:1].isspace():
                break  # cannot happen by construction; never loop forever
            self._take(cut, out)
        return out

    def cut(self) -> list[str]:
        """Hand out the pending text now, up to its last complete word: the first audio of a
        reply must not wait for punctuation when the LLM is slow (see :data:`FIRST_CUT_S`).
        Text without a space (a long number) goes out whole once it is
        :data:`MIN_CUT_WEIGHT` long; a lone unfinished word waits."""
        buf = self._buf.rstrip()
        space = max(buf.rfind(" "), buf.rfind("\n"))
        if space > 0 and self._buf[len(buf):]:  # the last word is complete too
            space = len(buf)
        if space <= 0:
            if _weight(buf) < MIN_CUT_WEIGHT:
                return []
            space = len(self._buf)
        out: list[str] = []
        self._take(space, out)
        return out

    def flush(self) -> list[str]:
        """End the segment: the rest of the text (if speakable), and reset."""
        out: list[str] = []
        while _weight(self._buf) > self.max_chars:
            self._take(self._char_cut(self._buf), out)
        self._take(len(self._buf), out)
        self._buf = ""
        self._index = 0
        return out

    # -- internals -----------------------------------------------------------

    def _take(self, cut: int, out: list[str]) -> None:
        clause = speakable(self._buf[:cut])
        self._buf = self._buf[cut:].lstrip()
        if clause:
            out.append(clause)
            self._index += 1

    def _limit(self) -> int:
        if self._index == 0:
            return self.first_words
        return min(self.second_words << min(self._index - 1, 16), self.max_words)

    def _next_cut(self) -> int | None:
        """Where the first complete clause of the buffer ends, if it has one."""
        buf = self._buf
        candidates: list[int] = []
        if m := _NEWLINE.search(buf):
            candidates.append(m.start())
        for m in _SENTENCE.finditer(buf):
            if m.group().startswith(".") and len(m.group().rstrip("\"'”’)]")) == 1 and _is_abbreviation(
                buf[: m.start()]
            ):
                continue
            candidates.append(m.end())
            break
        need = self.first_min_words if self._index == 0 else self.min_words
        for m in _SOFT.finditer(buf):
            if _count_words(buf[: m.start()]) >= need:
                candidates.append(m.end())
                break
        cut = min(candidates) if candidates else None
        limit_cut = self._word_limit_cut(buf if cut is None else buf[:cut])
        cut = limit_cut if limit_cut is not None else cut
        if _weight(buf if cut is None else buf[:cut]) > self.max_chars:
            cut = self._char_cut(buf)
        return cut

    def _char_cut(self, buf: str) -> int:
        """A cut within max_chars of weight: at the last space in its second half, else hard."""
        total, end = 0, len(buf)
        for i, ch in enumerate(buf):
            total += DIGIT_WEIGHT if ch.isdigit() else 1
            if total > self.max_chars:
                end = max(1, i)
                break
        space = buf.rfind(" ", end // 2, end)
        return space if space > 0 else end

    def _word_limit_cut(self, text: str) -> int | None:
        """A cut for a clause over the word limit, preferring a natural break. The first
        clause is cut as soon as its last word is complete; a later one waits for the word
        after the limit too, to see whether a break falls before it."""
        limit = self._limit()
        look = 0 if self._index == 0 else 1
        found = (m for m in _WORD.finditer(text) if _WORDISH.search(m.group()))
        words = list(itertools.islice(found, limit + look))
        if len(words) < limit + look:
            return None
        for j in range(limit - 1 + look, 1, -1):  # cut before words[j], keeping >= 2 words
            if words[j].group().lower().strip("\"'“‘(") in BREAK_BEFORE:
                return words[j].start()
        return words[limit - 1].end()
