"""Words that are not a question: fillers said over a reply, and the stop words.

Both decide on the transcript alone, lower case, punctuation ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

FILLERS = frozenset(("uh", "um", "umm", "ah", "aah", "oh", "eh", "er", "erm", "huh", "hm", "hmm", "hmmm", "mm",
                     "mmm", "mhm", "mhmm"))
"""Sounds that are not words: said over the agent's reply, they do not interrupt it."""


def only_fillers(text: str) -> bool:
    said = re.findall(r"[a-z']+", text.lower())  # "mm-hmm", "uh-uh": each part a filler
    return all(w in FILLERS for w in said)


def is_stop(text: str, stop_words: Sequence[str]) -> bool:
    said = " ".join(re.findall(r"[a-z']+", text.lower()))
    return bool(said) and said in {" ".join(re.findall(r"[a-z']+", w.lower())) for w in stop_words}
