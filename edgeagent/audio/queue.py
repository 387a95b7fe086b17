"""SampleQueue: int16 samples of one live source waiting to be read in pieces of any size.

Remote voices (a LiveKit track, a browser's mic) arrive in chunks of their own size and
pace; the inputs that mix them (:class:`~edgeagent.room.audio.RoomInput`,
:class:`~edgeagent.web.audio.WebInput`) take exact frames out. Beyond ``limit`` samples
the oldest chunks are dropped, so a reader that fell behind never lags by more.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edgeagent.audio.frame import Int16Array


class SampleQueue:
    """See the module docs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[Int16Array] = deque()
        self.size = 0

    def push(self, samples: Int16Array) -> int:
        """Queue ``samples``; returns how many old samples were dropped to stay within the limit."""
        self.chunks.append(samples)
        self.size += len(samples)
        dropped = 0
        while self.size > self.limit and len(self.chunks) > 1:
            n = len(self.chunks.popleft())
            self.size -= n
            dropped += n
        return dropped

    def take_exact(self, n: int) -> Int16Array:
        """The oldest ``n`` samples (the caller checks that ``size >= n``)."""
        out = np.empty(n, np.int16)
        filled = 0
        while filled < n:
            head = self.chunks[0]
            k = min(len(head), n - filled)
            out[filled : filled + k] = head[:k]
            if k == len(head):
                self.chunks.popleft()
            else:
                self.chunks[0] = head[k:]
            filled += k
        self.size -= n
        return out
