"""Explicit provider registry: (kind, name) → "module:Class", imported only when used.

A board without, say, vosk installed still runs: the import happens only when
that provider is chosen, and a missing package names the extra to install.

A provider is one class of its kind's contract (:class:`edgeagent.stage.Stage`: its options
from the config, its live changes, its optional abilities), one line in :data:`PROVIDERS`
(or a :func:`register` call, for a provider that lives outside the package) and its extra in
``pyproject.toml``; every place that chooses a provider (``[stt]``/``[llm]``/``[tts]``
``provider``, the cloud members of a fallback chain) goes through here.
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


def register(kind: str, name: str, target: str, extra: str = "") -> None:
    """Make ``target`` ("module:Class") the ``kind`` provider ``name`` (replacing one of that name);
    ``extra``: the pip extra that installs its dependencies. The name is then a valid
    ``[kind].provider`` everywhere (the file, ``--set``, a remote change)."""
    if kind not in PROVIDERS:
        raise ConfigError(f"unknown stage kind {kind!r}; known: {', '.join(PROVIDERS)}")
    module, _, cls = target.partition(":")
    if not module or not cls:
        raise ConfigError(f"a provider is registered as 'module:Class', got {target!r}")
    PROVIDERS[kind][name] = (target, extra)


def unregister(kind: str, name: str) -> None:
    """Forget the ``kind`` provider ``name`` (nothing when there is none)."""
    PROVIDERS.get(kind, {}).pop(name, None)


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
