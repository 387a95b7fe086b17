"""Explicit provider registry: (kind, name) → "module:Class", imported only when used.

A board without, say, vosk installed still runs: the import happens only when
that provider is chosen, and a missing package names the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeagent.errors import ConfigError

PROVIDERS: dict[str, dict[str, tuple[str, str]]] = {
    # kind: {name: ("module:Class", "extra that installs its dependencies")}
    "vad": {"silero": ("edgeagent.vad.silero:SileroVAD", "onnx")},
    "wake": {
        "openwakeword": ("edgeagent.wake.oww:OpenWakeWord", "onnx"),
        "porcupine": ("edgeagent.wake.porcupine:PorcupineWakeWord", "porcupine"),
    },
    "stt": {
        "whisper": ("edgeagent.stt.whisper:WhisperSTT", "whisper"),
        "vosk": ("edgeagent.stt.vosk:VoskSTT", "vosk"),
        "openai": ("edgeagent.cloud.openai_stt:OpenAISTT", "cloud"),
    },
    "llm": {
        "llama": ("edgeagent.llm.llama:LlamaLLM", "llama"),
        "openai": ("edgeagent.cloud.openai_llm:OpenAILLM", "cloud"),
    },
    "tts": {
        "piper": ("edgeagent.tts.piper:PiperTTS", "piper"),
        "espeak": ("edgeagent.tts.espeak:EspeakTTS", ""),
        "openai": ("edgeagent.cloud.openai_tts:OpenAITTS", "cloud"),
    },
}


def provider_class(kind: str, name: str) -> type[Any]:
    """The class registered for ``kind``/``name``; a clear error when absent or not installed."""
    try:
        target, extra = PROVIDERS[kind][name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS.get(kind, {}))) or "none"
        raise ConfigError(f"unknown {kind} provider {name!r}; known: {known}") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: .venv/bin/pip install -e '.[{extra}]'" if extra else ""
        raise ConfigError(f"{kind} provider {name!r} cannot load ({exc}){hint}") from exc
    cls: type[Any] = getattr(module, cls_name)
    return cls


def create(kind: str, name: str, **options: Any) -> Any:
    """Instantiate a provider; options go to its constructor."""
    return provider_class(kind, name)(**options)
