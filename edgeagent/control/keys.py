"""What a remote controller may change: the allow-list, the ranges, the secrets, the schema.

Every setting of :class:`edgeagent.config.Config` has a dotted path
("tts.speed"). Only the paths in :data:`SETTABLE` may be changed remotely; every
other one (sound devices, the models directory, the room URL, ``[control]``
itself) is read-only remotely. :data:`SECRETS` are settable only when
``control.allow_secrets`` is on and are never sent back.

Ranges here are the remote limits. They are at least as strict as
:func:`edgeagent.config.validate` (which checks the file too) and add bounds it
lacks, so that a remote value is always one a person could sensibly mean.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeagent import config
from edgeagent.config_doc import field_docs
from edgeagent.config_room import LISTEN_MODES
from edgeagent.config_voice import ACTIVATION_MODES, TURN_DETECTORS
from edgeagent.fallback.policy import POLICIES
from edgeagent.registry import PROVIDERS

REDACTED = "***"
"""What a set secret reads as. Sent back in a patch, it means "keep the secret as it is"."""


@dataclass(frozen=True)
class Leaf:
    """One setting: its dotted path, JSON type, default and documentation."""

    path: str
    kind: str  # "boolean", "integer", "number", "string" or "array" (of strings)
    nullable: bool
    default: Any
    doc: str


@dataclass(frozen=True)
class Rule:
    """The remote limits of one settable setting."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    min_len: int = 0  # strings, and each item of a list
    max_len: int = 4096
    max_items: int = 64
    unique: bool = False  # list items must differ


_NAME = Rule(min_len=1, max_len=256)
_PATH = Rule(min_len=1, max_len=4096)
_SECRET = Rule(min_len=1, max_len=4096)


def _providers(kind: str) -> Rule:
    return Rule(choices=tuple(sorted(PROVIDERS[kind])))


RULES: Mapping[str, Rule] = {
    "agent.name": Rule(min_len=1, max_len=64),
    "agent.instructions": Rule(max_len=8000),
    "activation.mode": Rule(choices=ACTIVATION_MODES),
    "activation.wake_words": Rule(min_len=1, max_len=256, max_items=8, unique=True),
    "activation.wake_threshold": Rule(lo=0.0, hi=1.0, lo_open=True, hi_open=True),
    "activation.listen_s": Rule(lo=0.0, hi=120.0),
    "activation.follow_up_s": Rule(lo=0.0, hi=120.0),
    "activation.stop_words": Rule(min_len=1, max_len=64, max_items=32),
    "turn.detection": Rule(choices=TURN_DETECTORS),
    "turn.min_delay_s": Rule(lo=0.0, hi=10.0),
    "turn.max_delay_s": Rule(lo=0.0, hi=30.0),
    "turn.eot_threshold": Rule(lo=0.0, hi=1.0, lo_open=True, hi_open=True),
    "turn.max_speech_s": Rule(lo=0.0, hi=300.0, lo_open=True),
    "turn.preemptive_generation": Rule(),
    "vad.provider": _providers("vad"),
    "stt.provider": _providers("stt"),
    "llm.provider": _providers("llm"),
    "llm.model": _PATH,
    "llm.temperature": Rule(lo=0.0, hi=2.0),
    "llm.max_tokens": Rule(lo=1, hi=4096),
    "tts.provider": _providers("tts"),
    "tts.model": _PATH,
    "tts.speed": Rule(lo=0.25, hi=4.0),
    "audio.output_volume": Rule(lo=0.0, hi=2.0),
    "livekit.listen": Rule(choices=LISTEN_MODES),
    "livekit.identities": Rule(min_len=1, max_len=256, max_items=64, unique=True),
    "cloud.policy": Rule(choices=POLICIES),
    "cloud.llm_first_token_s": Rule(lo=0.1, hi=60.0),
    "cloud.stt_first_result_s": Rule(lo=0.1, hi=60.0),
    "cloud.tts_first_audio_s": Rule(lo=0.1, hi=60.0),
    "cloud.local_deadline_s": Rule(lo=0.5, hi=120.0),
    "cloud.probe_interval_s": Rule(lo=0.5, hi=600.0),
    # Secrets: settable only with control.allow_secrets (see SECRETS).
    "cloud.api_key": _SECRET,
    "livekit.api_key": _SECRET,
    "livekit.api_secret": _SECRET,
    "livekit.token": _SECRET,
    "livekit.e2ee_key": _SECRET,
}

SETTABLE: frozenset[str] = frozenset(RULES)
"""The dotted paths a remote controller may change (secrets only with control.allow_secrets)."""

NEEDS_RELOAD: frozenset[str] = frozenset({
    # A model load: seconds and hundreds of MB; done at the next idle moment.
    "vad.provider", "stt.provider", "llm.provider", "tts.provider",
    "llm.model",
    "tts.model",  # the voice: a Piper voice is another ONNX model to load
    # Credentials: a new connection to the room.
    "livekit.api_key", "livekit.api_secret", "livekit.token", "livekit.e2ee_key",
})
"""Settable paths that cannot take effect at once. Every other settable path is hot: the
agent's name and instructions, speed, thresholds, volume, activation (wake words are small
models the apply hook loads at once), turn detection, LLM temperature and max_tokens, and
whom the agent listens to."""

_SECRET_SUFFIXES = ("api_key", "secret", "token")


def _leaves() -> dict[str, Leaf]:
    out: dict[str, Leaf] = {}

    def walk(cls: type, obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            tp, value = hints[f.name], getattr(obj, f.name)
            if dataclasses.is_dataclass(tp):
                walk(tp, value, f"{prefix}{f.name}.")  # type: ignore[arg-type]
                continue
            args = typing.get_args(tp)
            nullable = type(None) in args
            base = next((a for a in args if a is not type(None)), tp) if nullable else tp
            kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(base, "array")
            if kind == "array" and typing.get_origin(base) is not tuple:  # pragma: no cover - new field type
                raise TypeError(f"{prefix}{f.name}: remote config does not know the type {tp!r}")
            out[prefix + f.name] = Leaf(prefix + f.name, kind, nullable, value, docs.get(f.name, ""))

    walk(config.Config, config.Config(), "")
    return out


LEAVES: Mapping[str, Leaf] = _leaves()
"""Every setting of the config by dotted path, settable or not."""

SECTIONS: Mapping[str, type] = {
    f.name: typing.get_type_hints(config.Config)[f.name]
    for f in dataclasses.fields(config.Config)
    if dataclasses.is_dataclass(f.default_factory)
}
"""The tables of the config ("tts" → TTSConfig)."""

SECRETS: frozenset[str] = frozenset(
    p for p in LEAVES if p.rsplit(".", 1)[-1].endswith(_SECRET_SUFFIXES)
) | {"livekit.e2ee_key"}
"""Settings never sent back, and settable only with control.allow_secrets."""

HIDDEN: frozenset[str] = frozenset({"web.password", "web.turn_credential"})
"""Secrets that are not settable remotely either: never sent back."""

for _name, _extra in (("SETTABLE", SETTABLE - set(LEAVES)), ("NEEDS_RELOAD", NEEDS_RELOAD - SETTABLE),
                     ("SECRETS (each needs a rule)", SECRETS - SETTABLE)):
    if _extra:  # pragma: no cover - caught by the tests when a field is renamed
        raise RuntimeError(f"edgeagent.control.keys: {_name} names unknown settings {sorted(_extra)}")


def to_json(value: Any) -> Any:
    """A config value as JSON has it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def shown(path: str, value: Any) -> Any:
    """``value`` as it may be shown to a controller: a set secret reads as ``***``."""
    if (path in SECRETS or path in HIDDEN) and value not in (None, ""):
        return REDACTED
    return to_json(value)


def redact(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config.to_dict(cfg)`` with every set secret replaced by ``***``."""
    out: dict[str, Any] = {}
    for key, value in config_dict.items():
        if isinstance(value, Mapping):
            out[key] = {k: shown(f"{key}.{k}", v) for k, v in value.items()}
        else:
            out[key] = shown(key, value)
    return out


def _leaf_schema(leaf: Leaf, rule: Rule, allow_secrets: bool) -> dict[str, Any]:
    item_type = "array" if leaf.kind == "array" else leaf.kind
    out: dict[str, Any] = {
        "type": [item_type, "null"] if leaf.nullable else item_type,
        "default": shown(leaf.path, leaf.default),
        "description": leaf.doc,
    }
    text: dict[str, Any] = {}
    if rule.choices:
        text["enum"] = list(rule.choices)
    elif leaf.kind in ("string", "array"):
        text["minLength"], text["maxLength"] = rule.min_len, rule.max_len
    if leaf.kind == "array":
        out["items"] = {"type": "string", **text}
        out["maxItems"] = rule.max_items
        if rule.unique:
            out["uniqueItems"] = True
    else:
        out.update(text)
    if rule.lo is not None:
        out["exclusiveMinimum" if rule.lo_open else "minimum"] = rule.lo
    if rule.hi is not None:
        out["exclusiveMaximum" if rule.hi_open else "maximum"] = rule.hi
    secret = leaf.path in SECRETS
    out["secret"] = secret
    out["writable"] = allow_secrets or not secret
    out["needs_reload"] = leaf.path in NEEDS_RELOAD
    return out


def schema(*, allow_secrets: bool = False) -> dict[str, Any]:
    """A JSON-Schema-like description of the settable settings, nested as a patch is.

    Each setting has ``type``, ``default``, ``description`` (the field's doc),
    ``enum`` or ``minimum``/``maximum`` (``exclusive*`` where the bound itself is
    refused), string and list limits, and three flags: ``secret`` (never sent back),
    ``writable`` (false for a secret while control.allow_secrets is off) and
    ``needs_reload`` (takes effect at the next idle moment, not at once).
    """
    props: dict[str, Any] = {}
    for path in sorted(SETTABLE, key=list(LEAVES).index):
        leaf = LEAVES[path]
        section, _, name = path.rpartition(".")
        node = _leaf_schema(leaf, RULES[path], allow_secrets)
        if not section:  # pragma: no cover - no top-level setting is settable today
            props[name] = node
            continue
        table = props.setdefault(section, {
            "type": "object", "description": inspect.getdoc(SECTIONS[section]) or "", "properties": {},
        })
        table["properties"][name] = node
    return {"v": 1, "type": "object", "secrets_allowed": allow_secrets, "properties": props}
