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
from edgeagent.errors import ModelError
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

#: espeak-ng's words per minute at ``tts.speed = 1.0``, and the range it accepts.

#: (kind, provider) → (the option that names the model, the manifest name of its default).
#: Used only when ``models.dir`` is set, so that the stages load from where preflight looked.
_DEFAULT_MODELS: dict[tuple[str, str], tuple[str, str]] = {
    ("vad", "silero"): ("model_path", "silero-vad"),
    ("wake", "openwakeword"): ("model_dir", "openwakeword"),
    ("stt", "whisper"): ("model", "whisper-tiny-en"),
    ("stt", "vosk"): ("model", "vosk-en-small"),
    ("llm", "llama"): ("model_path", "smollm2-135m"),
    ("tts", "piper"): ("model", "piper-en-us-joe"),
}

Spec = tuple[str, str, dict[str, Any]]


def stage_specs(cfg: Config) -> list[Spec]:
    """(kind, provider, constructor options) of every stage, in :class:`Models` field order."""
    wake_words = cfg.activation.wake_words or ActivationConfig().wake_words
    llm_opts: dict[str, Any] = {"temperature": cfg.llm.temperature, "max_tokens": cfg.llm.max_tokens}
    if cfg.llm.model:
        llm_opts["model_path"] = cfg.llm.model
    if cfg.llm.gpu_layers:  # llama's alone (a cloud LLM has no layers here)
        llm_opts["n_gpu_layers"] = cfg.llm.gpu_layers
    stt_opts: dict[str, Any] = {"model": cfg.stt.model} if cfg.stt.model else {}
    if cfg.stt.provider == "whisper":
        stt_opts["partials"] = cfg.stt.partials  # vosk always reports partials, it costs nothing
    specs: list[Spec] = [
        ("vad", cfg.vad.provider, {"activation_threshold": cfg.vad.activation_threshold}),
        ("wake", WAKE_PROVIDER, {"words": tuple(wake_words), "threshold": cfg.activation.wake_threshold}),
        ("stt", cfg.stt.provider, stt_opts),
        ("llm", cfg.llm.provider, llm_opts),
        ("tts", cfg.tts.provider, tts_options(cfg)),
    ]
    if cfg.models.dir:
        root = Path(cfg.models.dir).expanduser()
        for kind, provider, opts in specs:
            default = _DEFAULT_MODELS.get((kind, provider))
            if default is not None and default[0] not in opts:
                opts[default[0]] = _LazyModel(default[1], root)
    return specs


def tts_options(cfg: Config) -> dict[str, Any]:
    """``[tts]`` as the provider's options: every voice takes ``speed`` and ``model`` and
    decides what they mean for it (:class:`~edgeagent.tts.base.TTS`)."""
    opts: dict[str, Any] = {} if cfg.tts.speed == 1.0 else {"speed": cfg.tts.speed}
    if cfg.tts.model:
        opts["model"] = cfg.tts.model
    return opts


def check_loadable(cfg: Config, kind: str) -> None:
    """Raise unless a ``kind`` stage can be loaded from ``cfg``: the provider is installed and
    its model file is there. (The load itself may still fail on a broken file.)"""
    section = getattr(cfg, kind)
    registry.provider_class(kind, section.provider)  # unknown or not installed: ConfigError
    model = getattr(section, "model", None)
    if kind == "llm" and model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelError(f"llm.model: {path} does not exist")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"llm.model: {path} is not a GGUF model file")
        return
    if kind == "tts" and section.provider == "piper" and model:
        from edgeagent.tts.piper import resolve_model

        resolve_model(model)  # not a voice file (or a directory holding one): ModelError
        return
    default = _DEFAULT_MODELS.get((kind, section.provider))
    if default is not None and not model:
        from edgeagent.models import model_path

        model_path(default[1], root=Path(cfg.models.dir).expanduser() if cfg.models.dir else None)


@dataclass(frozen=True)
class _LazyModel:
    """A manifest model under ``root``, resolved in the worker thread that creates the stage
    (so a missing one fails like the stage's own default would, with the fix)."""

    name: str
    root: Path

    def resolve(self) -> Path:
        from edgeagent.models import model_path

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
        warmup = getattr(self.stt, "warmup", None)
        if warmup is not None:
            await warmup()
        prefill = getattr(self.llm, "prefill", None)
        if prefill is not None:
            await prefill(new_context(instructions))

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
