"""Typed per-stage metrics records; stages hand them to ``Stage.on_metrics`` listeners."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VADMetrics:
    provider: str
    frames: int
    """Inference windows processed since the last report."""
    inference_ms_avg: float
    """Mean inference time per window."""
    window_ms: float
    """Audio length of one window (32 ms for Silero at 16 kHz)."""


@dataclass(frozen=True)
class WakeMetrics:
    provider: str
    frames: int
    inference_ms_avg: float
    window_ms: float
    words: int


@dataclass(frozen=True)
class STTMetrics:
    provider: str
    audio_s: float
    """Length of the utterance decoded."""
    processing_s: float
    """Time spent decoding this utterance (all passes)."""
    final_delay_s: float
    """From end of input (flush) to the final transcript."""
    partials: int

    @property
    def rtf(self) -> float:
        return self.processing_s / self.audio_s if self.audio_s > 0 else 0.0


@dataclass(frozen=True)
class LLMMetrics:
    provider: str
    ttft_s: float
    """Time to first token (text or tool call)."""
    duration_s: float
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens reused from the KV cache."""
    completion_tokens: int
    cancelled: bool = False

    @property
    def tokens_per_s(self) -> float:
        gen = self.duration_s - self.ttft_s
        return self.completion_tokens / gen if gen > 0 else 0.0


@dataclass(frozen=True)
class TTSMetrics:
    provider: str
    characters: int
    ttfa_s: float
    """Time from the text being available to the first audio."""
    audio_s: float
    processing_s: float
    cancelled: bool = False

    @property
    def rtf(self) -> float:
        return self.processing_s / self.audio_s if self.audio_s > 0 else 0.0
