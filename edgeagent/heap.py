"""Heap memory that was freed goes back to the system when the device is idle.

glibc's malloc keeps what the process frees in its arenas, to hand it out again; freed
memory between blocks still in use stays resident. A voice loop frees and allocates in
many sizes (audio buffers, token arrays, transcripts, room messages), so the kept memory
grows with the arenas' fragmentation although the bytes in use do not: RSS creeps for
hours. :func:`release` asks glibc (``malloc_trim(0)``) to return the free pages of every
arena; it runs after each reply, once the history is in the LLM's cache, off the event
loop. Where the C library has no ``malloc_trim`` (musl), it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is None:
        log.debug("no malloc_trim in the C library: freed heap memory stays with the process")
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


released = 0
"""How many times :func:`release` gave the heap's free pages back, in this process."""


def release() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    global released
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    released += 1
    return True
