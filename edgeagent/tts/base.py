"""TTS contract: text in (streamed, clause by clause), audio out at the voice's rate."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent.audio.frame import AudioFrame
from edgeagent.errors import ConfigError
from edgeagent.stage import Stage, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config


@dataclass(frozen=True)
class SynthesizedAudio:
    frame: AudioFrame
    """Mono int16 at the voice's native rate (resampled only at the output edge)."""
    segment_id: str
    """One id per flushed segment (a reply)."""
    text: str
    """The clause this audio speaks."""
    is_final: bool = False
    """The last chunk of the segment."""


class TTS(Stage):
    """A voice. Every provider takes ``speed`` (1.0: the voice's own rate) and ``model`` (its
    voice, None: the default) as constructor options, as ``[tts]`` names them."""

    kind = "tts"
    hot_options = ("tts.speed",)

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[tts]``: ``speed`` (when not 1.0) and ``model`` (when set); each voice decides what
        they mean for it."""
        opts: dict[str, Any] = {} if cfg.tts.speed == 1.0 else {"speed": cfg.tts.speed}
        if cfg.tts.model:
            opts["model"] = cfg.tts.model
        return opts

    def update_options(self, cfg: Config) -> Callable[[], None]:
        """``tts.speed``: :meth:`speed_change`."""
        return self.speed_change(cfg.tts.speed)

    def speed_change(self, speed: float) -> Callable[[], None]:
        """The step that makes this voice speak at ``speed`` from its next clause on, for a
        change while it runs; raises ConfigError first when the voice cannot do that."""
        raise ConfigError(f"tts.speed: the {type(self).__name__} voice cannot change its speed while it runs")

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @abc.abstractmethod
    def stream(self) -> StageStream[str, SynthesizedAudio]:
        """Push text as it arrives (LLM tokens); audio comes out clause by clause.

        flush() ends a segment: the rest of its text is spoken and the last
        chunk has ``is_final``. aclose() stops synthesis at once.
        """

    @abc.abstractmethod
    async def synthesize(self, text: str) -> AudioFrame:
        """All the audio for ``text`` at once."""
