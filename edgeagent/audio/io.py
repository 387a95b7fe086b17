"""The AudioInput / AudioOutput contract every source and sink implements.

The session never knows whether it talks to a sound card, a LiveKit room, a
WAV file or a browser: it iterates an :class:`AudioInput` and writes to an
:class:`AudioOutput`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass

from edgeagent.audio.frame import AudioFrame


@dataclass
class IOCounters:
    """Health counters an input or output keeps; read them, don't reset them."""

    frames: int = 0
    overruns: int = 0
    underruns: int = 0
    dropped_frames: int = 0


class AudioInput(abc.ABC):
    """A source of mono frames at :attr:`sample_rate`, iterated with ``async for``.

    Iteration ends when the source ends (end of file, input closed).
    """

    sample_rate: int
    counters: IOCounters
    realtime: bool = True
    """Frames come at the pace of real time (a sound card, a paced file); False: as fast as they
    are read (``run --input --fast``), and the reader waits for the stages to keep up."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[AudioFrame]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop capturing and release the device or file; safe to call twice."""


class AudioOutput(abc.ABC):
    """A sink for mono frames. Frames of another rate are resampled by the sink."""

    sample_rate: int
    counters: IOCounters

    @abc.abstractmethod
    async def write(self, frame: AudioFrame) -> None:
        """Queue a frame for playback; waits while the queue is full."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Drop everything queued and not yet played (barge-in)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until everything queued has been played."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop playback and release the device or file; safe to call twice."""
