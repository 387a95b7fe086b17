"""The stages a voice agent runs, built from the config and loaded once.

:meth:`Models.load` reads ``[vad]``, ``[activation]``, ``[stt]``, ``[llm]``, ``[tts]``
and ``[models]`` and creates each provider through :func:`edgeagent.registry.create`
(all at once, in worker threads), then warms them up: one Whisper decode and the
LLM prefill of ``[agent].instructions``, so the first turn is not the slow one.
The audio end-of-turn model (Smart Turn) is loaded too when ``turn.detection``
hears the voice (``audio``, ``combined``).

The wake word stage is always loaded, whatever ``activation.mode`` says: it costs a
few MB and ~2 ms per 80 ms of audio, the session listens for it in wake mode, and in
every mode the wake word said over a reply stops that reply. When no wake words are
configured (allowed outside wake mode) it loads the default word list; callers that
mean "no wake word" check ``cfg.activation.wake_words`` (see :func:`wake_for`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import registry
from edgeagent.config.voice import ActivationConfig, AgentConfig
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS
from edgeagent.vad.base import VAD
from edgeagent.wake.base import WakeWord

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.voice.audio_turn import SmartTurn

log = logging.getLogger(__name__)

WAKE_PROVIDER = "openwakeword"
INSTRUCTIONS = AgentConfig().instructions
"""The default system prompt (``[agent].instructions``)."""

Spec = tuple[str, str, dict[str, Any]]


def stage_specs(cfg: Config) -> list[Spec]:
    """(kind, provider, constructor options) of every stage, in :class:`Models` field order.

    Each provider says which options it takes from the config (``config_options``, see
    :class:`~edgeagent.stage.Stage`); with ``models.dir`` set, a provider's default model is
    the manifest model under it (so that the stages load from where preflight looked)."""
    chosen = [("vad", cfg.vad.provider), ("wake", WAKE_PROVIDER), ("stt", cfg.stt.provider),
              ("llm", cfg.llm.provider), ("tts", cfg.tts.provider)]
    specs: list[Spec] = []
    for kind, provider in chosen:
        cls = registry.provider_class(kind, provider)  # unknown or not installed: ConfigError
        opts = cls.config_options(cfg)
        default = cls.default_model
        if cfg.models.dir and default is not None and default[0] not in opts:
            opts[default[0]] = _LazyModel(default[1], Path(cfg.models.dir).expanduser())
        specs.append((kind, provider, opts))
    return specs


def tts_options(cfg: Config) -> dict[str, Any]:
    """``[tts]`` as the configured voice's options (:meth:`edgeagent.tts.base.TTS.config_options`)."""
    options: dict[str, Any] = registry.provider_class("tts", cfg.tts.provider).config_options(cfg)
    return options


def check_loadable(cfg: Config, kind: str) -> None:
    """Raise unless a ``kind`` stage can be loaded from ``cfg``: the provider is installed and
    its model file is there (the provider's ``check_loadable``). The load itself may still fail
    on a broken file."""
    provider = {"vad": cfg.vad.provider, "stt": cfg.stt.provider, "llm": cfg.llm.provider,
                "tts": cfg.tts.provider}.get(kind, WAKE_PROVIDER)
    registry.provider_class(kind, provider).check_loadable(cfg)  # unknown or not installed: ConfigError


@dataclass(frozen=True)
class _LazyModel:
    """A manifest model under ``root``, resolved in the worker thread that creates the stage
    (so a missing one fails like the stage's own default would, with the fix)."""

    name: str
    root: Path

    def resolve(self) -> Path:
        from edgeagent.model_files.manifest import model_path

        return model_path(self.name, root=self.root)


def create_stage(kind: str, provider: str, options: dict[str, Any]) -> Any:
    """A ``kind`` stage of ``provider`` from one of :func:`stage_specs`' options (its manifest
    model resolved now): what :meth:`Models.load` and a live stage reload both create."""
    opts = {k: v.resolve() if isinstance(v, _LazyModel) else v for k, v in options.items()}
    return registry.create(kind, provider, **opts)


@dataclass
class Models:
    """The loaded stages, shared by every session (and every test of a module)."""

    vad: VAD
    wake: WakeWord
    stt: STT
    llm: LLM
    tts: TTS
    audio_turn: SmartTurn | None = None
    """The audio end-of-turn model, when ``turn.detection`` uses it."""

    @classmethod
    async def load(cls, cfg: Config | None = None) -> Models:
        """Create every configured provider (in worker threads, at once) and warm it up.

        ``cfg`` defaults to the built-in defaults (not the config file). If one stage
        fails, the others are closed and its error is raised.
        """
        from edgeagent.config import Config

        cfg = cfg or Config()
        specs = stage_specs(cfg)
        t0 = time.monotonic()
        loaded = await asyncio.gather(
            *(asyncio.to_thread(create_stage, kind, name, opts) for kind, name, opts in specs),
            asyncio.to_thread(_audio_turn, cfg),
            return_exceptions=True,
        )
        stages = [r for r in loaded if r is not None and not isinstance(r, BaseException)]
        if any(isinstance(r, BaseException) for r in loaded):
            for stage in stages:
                await stage.aclose()
            raise next(r for r in loaded if isinstance(r, BaseException))
        models = cls(*loaded)  # type: ignore[arg-type]
        try:
            from edgeagent.fallback.build import with_cloud  # [cloud]: chains of local + cloud providers

            models = await with_cloud(models, cfg)
            await models._warm(cfg.agent.instructions)
        except BaseException:
            await models.aclose()
            raise
        log.info("models loaded in %.1f s: %s", time.monotonic() - t0,
                 ", ".join(f"{kind}={name}" for kind, name, _ in specs))
        return models

    async def _warm(self, instructions: str) -> None:
        """Whisper's first decode and the system prompt's evaluation are slow: do them now."""
        await self.stt.warmup()
        await self.llm.prefill(new_context(instructions))

    async def aclose(self) -> None:
        for stage in (self.vad, self.wake, self.stt, self.llm, self.tts, self.audio_turn):
            if stage is not None:
                await stage.aclose()


def _audio_turn(cfg: Config) -> SmartTurn | None:
    """Smart Turn, when ``turn.detection`` hears the voice (from ``models.dir`` when set)."""
    if cfg.turn.detection not in ("audio", "combined"):
        return None
    from edgeagent.voice.audio_turn import MODEL_NAME, SmartTurn

    root = Path(cfg.models.dir).expanduser() if cfg.models.dir else None
    return SmartTurn(_LazyModel(MODEL_NAME, root).resolve() if root else None)


def wake_for(models: Models, activation: ActivationConfig) -> WakeWord | None:
    """The wake stage to hand a session: None when no wake word is configured."""
    return models.wake if activation.wake_words else None


def new_context(instructions: str) -> ChatContext:
    """A conversation that holds only the system prompt."""
    ctx = ChatContext()
    ctx.add("system", instructions)
    return ctx
