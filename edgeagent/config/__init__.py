"""Configuration: frozen dataclasses, loaded from TOML, overridden by env and CLI.

Precedence, lowest first: defaults in this module, the TOML file
(:func:`edgeagent.paths.config_file`), ``EDGEAGENT__SECTION__FIELD`` environment
variables, then ``--set section.field=value`` on the command line. Every value
is checked against the field's type; an unknown key or a bad value raises
:class:`ConfigError` naming the dotted path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgeagent.config.cloud import CloudConfig, check_cloud
from edgeagent.config.control import ControlConfig, check_control
from edgeagent.config.device import GpioConfig, LoggingConfig, check_gpio, check_logging
from edgeagent.config.home_assistant import HomeAssistantConfig, check_home_assistant
from edgeagent.config.room import LiveKitConfig, check_livekit
from edgeagent.config.settings import HOT, problems, setting
from edgeagent.config.voice import (
    ActivationConfig,
    AgentConfig,
    InterruptionConfig,
    LLMConfig,
    STTConfig,
    TTSConfig,
    TurnConfig,
    VADConfig,
)
from edgeagent.config.web import WebConfig, check_web
from edgeagent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

T = TypeVar("T")


@dataclass(frozen=True)
class AudioConfig:
    """Local sound devices."""

    input_device: str | None = None
    """Microphone: exact name, part of a name, or index; None = system default."""
    output_device: str | None = None
    """Speaker: exact name, part of a name, or index; None = system default."""
    frame_ms: int = 20
    """Length of each captured frame in milliseconds."""
    output_buffer_ms: int = 60
    """Audio queued ahead of the speaker; small keeps barge-in and latency short."""
    echo_cancellation: bool = True
    """Cancel the agent's own voice from the microphone (WebRTC AEC). Off: the mic is
    ignored while the agent speaks, so there is no barge-in."""
    noise_suppression: bool = False
    """WebRTC noise suppression on the microphone (with echo cancellation on), for every stage."""
    wake_noise_suppression: bool = True
    """WebRTC noise suppression on what the wake word model hears only (the STT hears the
    audio without it): more wake-ups heard in noise and when spoken fast, without the
    suppressor's artefacts in the transcript (scripts/bench-accuracy)."""
    output_volume: float = setting(1.0, lo=0.0, hi=2.0, remote=HOT)
    """Gain (0.0-2.0) applied to what the agent plays; 1.0 leaves it as it is."""


@dataclass(frozen=True)
class ModelsConfig:
    """Where model files live."""

    dir: str | None = None
    """Models directory; None = EDGEAGENT_MODELS, the service state dir, or ~/.local/share."""


@dataclass(frozen=True)
class Config:
    """The whole configuration of one device."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    interruption: InterruptionConfig = field(default_factory=InterruptionConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    stt: STTConfig = field(default_factory=STTConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    livekit: LiveKitConfig = field(default_factory=LiveKitConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    web: WebConfig = field(default_factory=WebConfig)
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    log_level: str = "info"
    """debug, info, warning or error."""


# -- conversion -------------------------------------------------------------------


def _coerce_union(value: Any, args: tuple[Any, ...], path: str) -> Any:
    """``value`` as the first of ``args`` it converts to (None for "none", "null" or "")."""
    if value is None and type(None) in args:
        return None
    if isinstance(value, str) and value.lower() in ("none", "null", "") and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, path)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert strings from env/CLI."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = parse_list(value, path)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        items = tuple(_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
        if item_tp is str and any(not item.strip() for item in items):
            raise ConfigError(f"{path}: an item is empty in {list(items)!r}")
        return items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # device indexes may be written as numbers
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported field type {tp!r}")  # pragma: no cover


_LIST_FORMS = 'a TOML or JSON array (["a", "b"]) or items separated by commas (a, b)'


def parse_list(text: str, path: str) -> list[Any]:
    """A list written as text (env, ``--set``): a TOML or JSON array, or items separated by commas.

    ``'["a", "b"]'``, ``'a, b'`` and ``'a'`` are lists; ``''`` and ``'[]'`` are empty. Text that
    looks like an array but is not one (``'["a"'``, ``'[a]'``) or an item in quotes or brackets
    (``'"a"'``) is refused: it is never what the user meant as the item itself.
    """
    text = text.strip()
    if text.startswith("["):
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            try:
                value = json.loads(text)
            except ValueError:
                raise ConfigError(f"{path}: {text!r} is not a valid list; write {_LIST_FORMS}") from None
        if not isinstance(value, list):  # pragma: no cover - text starting with "[" is an array or nothing
            raise ConfigError(f"{path}: expected a list, got {text!r}")
        return value
    if not text:
        return []
    items = [item.strip() for item in text.split(",")]
    for item in items:
        if not item:
            raise ConfigError(f"{path}: an item is empty in {text!r}; write {_LIST_FORMS}")
        if item[0] in "\"'[]" or item[-1] in "\"'[]":
            raise ConfigError(f"{path}: item {item!r} has quotes or brackets; write {_LIST_FORMS}")
    return items


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = path or "config"
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{path}.{name}" if path else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for JSON/TOML output."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    out = conv(cfg)
    assert isinstance(out, dict)
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``dotted = "a.b"``, making the tables on the way."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"empty config key in {dotted!r}")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {part} is not a table")
        node = nxt
    node[parts[-1]] = value


def merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386) of plain dicts; returns a new dict."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Defaults ← TOML file ← ``EDGEAGENT__A__B`` env ← ``a.b=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
    for key, value in (os.environ if env is None else env).items():
        if key.startswith("EDGEAGENT__"):
            set_path(tree, ".".join(p.lower() for p in key[11:].split("__")), value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs key=value, got {item!r}")
        set_path(tree, key.strip(), value.strip())
    cfg = from_dict(Config, tree)
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: expected debug, info, warning or error, got {cfg.log_level!r}")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Every field within the limits it declares (:mod:`edgeagent.config.settings`), then the checks
    across fields that one field's limits cannot express; raises :class:`ConfigError`."""
    if not 0 <= cfg.turn.min_delay_s <= cfg.turn.max_delay_s:
        raise ConfigError("turn: expected 0 <= min_delay_s <= max_delay_s")
    if cfg.activation.mode == "wake" and not cfg.activation.wake_words:
        raise ConfigError("activation.wake_words: wake mode needs at least one wake word")
    found = problems(cfg)
    if found:
        raise ConfigError(found[0])
    problem = (check_livekit(cfg.livekit) or check_control(cfg.control) or check_gpio(cfg.gpio)
               or check_logging(cfg.logging) or check_cloud(cfg.cloud) or check_web(cfg.web)
               or check_home_assistant(cfg.home_assistant))
    if problem:
        raise ConfigError(problem)
