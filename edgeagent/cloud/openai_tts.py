"""Cloud TTS over the OpenAI-compatible speech API (``POST {base_url}/audio/speech``).

Clause by clause like the local voices (:class:`~edgeagent.tts.streaming.ClauseTTS`):
each clause is one request with ``response_format: "pcm"`` (raw 16-bit mono,
24 kHz in OpenAI's API), and its audio is handed on as the body streams in.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeagent.audio.frame import Int16Array
from edgeagent.cloud.http import CloudHTTP
from edgeagent.cloud.provider import CloudProvider, connection_options
from edgeagent.tts.clauses import FIRST_CLAUSE_WORDS
from edgeagent.tts.streaming import CHUNK_MS, ClauseTTS

if TYPE_CHECKING:
    from edgeagent.config import Config

PCM_RATE = 24_000
"""The rate of OpenAI's ``pcm`` format."""


class OpenAITTS(CloudProvider, ClauseTTS):
    """Registry name ``openai``: ``base_url``, ``model`` (e.g. tts-1), ``voice``, ``api_key``, timeouts."""

    provider = "openai"

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[cloud]``: ``tts_model`` at ``tts_base_url`` (else ``base_url``), ``tts_voice``, its key
        and limits; ``[tts]``: ``speed``."""
        c = cfg.cloud
        model = {"model": c.tts_model} if c.tts_model else {}
        return {**model, "voice": c.tts_voice, "speed": cfg.tts.speed,
                **connection_options(c, c.tts_base_url, c.tts_first_audio_s)}

    def __init__(self, *, base_url: str, model: str = "tts-1", voice: str = "alloy", api_key: str | None = None,
                 speed: float = 1.0, sample_rate: int = PCM_RATE, first_byte_s: float = 5.0,
                 total_s: float = 30.0, connect_s: float = 3.0, first_clause_words: int = FIRST_CLAUSE_WORDS,
                 chunk_ms: float = CHUNK_MS) -> None:
        super().__init__(first_clause_words=first_clause_words, chunk_ms=chunk_ms)
        self.model = model
        self.voice = voice
        self.speed = speed
        self._rate = sample_rate
        self.first_byte_s = first_byte_s
        self.http = CloudHTTP(base_url, api_key=api_key, connect_s=connect_s, total_s=total_s)

    @property
    def sample_rate(self) -> int:
        return self._rate

    def speed_change(self, speed: float) -> Callable[[], None]:
        return lambda: setattr(self, "speed", speed)

    async def _clause_audio(self, text: str) -> AsyncGenerator[Int16Array, None]:
        body = {"model": self.model, "input": text, "voice": self.voice, "response_format": "pcm",
                "speed": self.speed}
        carry = b""
        async with self.http.post("audio/speech", json=body, first_byte_s=self.first_byte_s) as resp:
            async for chunk in resp.chunks():
                data = carry + chunk
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if usable:
                    yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

