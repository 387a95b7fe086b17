"""The stages a voice loop runs, loaded once: the default local providers, by registry name."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from edgeagent import registry
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS
from edgeagent.vad.base import VAD
from edgeagent.wake.base import WakeWord

log = logging.getLogger(__name__)

# Providers by registry name. Their config sections (and options) belong to issue 4.
VAD_PROVIDER = "silero"
WAKE_PROVIDER = "openwakeword"
STT_PROVIDER = "whisper"
LLM_PROVIDER = "llama"
TTS_PROVIDER = "piper"
WAKE_WORD = "hey_jarvis"
INSTRUCTIONS = "You are a helpful voice assistant on a small device. Answer in one or two short sentences."


@dataclass
class Models:
    """The loaded stages, shared by every loop (and every test of a module)."""

    vad: VAD
    wake: WakeWord
    stt: STT
    llm: LLM
    tts: TTS

    @classmethod
    async def load(cls, instructions: str = INSTRUCTIONS) -> Models:
        """Load every default provider (in worker threads, at once) and warm it up."""
        specs: list[tuple[str, str, dict[str, Any]]] = [
            ("vad", VAD_PROVIDER, {}), ("wake", WAKE_PROVIDER, {"words": (WAKE_WORD,)}),
            # No partials: this loop reads only the FINAL, and a partial decode still running
            # at the flush delays it (measured: 910 ms instead of one decode, ~450 ms here).
            ("stt", STT_PROVIDER, {"partials": False}), ("llm", LLM_PROVIDER, {}), ("tts", TTS_PROVIDER, {}),
        ]
        t0 = time.monotonic()
        loaded = await asyncio.gather(
            *(asyncio.to_thread(registry.create, kind, name, **opts) for kind, name, opts in specs),
            return_exceptions=True,
        )
        stages = [r for r in loaded if not isinstance(r, BaseException)]
        if len(stages) < len(specs):
            for stage in stages:
                await stage.aclose()
            raise next(r for r in loaded if isinstance(r, BaseException))
        models = cls(*stages)
        await models._warm(instructions)
        log.info("models loaded in %.1f s", time.monotonic() - t0)
        return models

    async def _warm(self, instructions: str) -> None:
        """Whisper's first decode and the system prompt's evaluation are slow: do them now."""
        warmup = getattr(self.stt, "warmup", None)
        if warmup is not None:
            await warmup()
        prefill = getattr(self.llm, "prefill", None)
        if prefill is not None:
            await prefill(new_context(instructions))

    async def aclose(self) -> None:
        for stage in (self.vad, self.wake, self.stt, self.llm, self.tts):
            await stage.aclose()


def new_context(instructions: str) -> ChatContext:
    """A conversation that holds only the system prompt."""
    ctx = ChatContext()
    ctx.add("system", instructions)
    return ctx
