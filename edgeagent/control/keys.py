"""What a remote controller may change: the allow-list, the ranges, the secrets, the schema.

Every setting of :class:`edgeagent.config.Config` has a dotted path ("tts.speed"). All of
this module's tables derive from what each config field declares once
(:func:`edgeagent.config.settings.setting`): its limits (:data:`RULES`, the same
:func:`edgeagent.config.validate` checks the file with), whether it is settable remotely
(:data:`SETTABLE`) and how (:data:`HOT`, :data:`NEEDS_RELOAD`, :data:`CREDENTIALS`), and
whether it is secret (:data:`SECRETS`: settable only when ``control.allow_secrets`` is on,
never sent back; :data:`HIDDEN`: secrets that are not settable remotely either). Every other
setting (sound devices, the models directory, the room URL, ``[control]`` itself) is
read-only remotely.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeagent import config
from edgeagent.config.doc import field_docs
from edgeagent.config.settings import HOT as _HOT
from edgeagent.config.settings import JOIN, RELOAD, Rule, Setting, setting_of

__all__ = [
    "CREDENTIALS", "HIDDEN", "HOT", "LEAVES", "NEEDS_RELOAD", "REDACTED", "RULES", "SECRETS", "SECTIONS",
    "SETTABLE", "Leaf", "Rule", "redact", "schema", "shown", "to_json",
]

REDACTED = "***"
"""What a set secret reads as. Sent back in a patch, it means "keep the secret as it is"."""


@dataclass(frozen=True)
class Leaf:
    """One setting: its dotted path, JSON type, default, documentation and declaration."""

    path: str
    kind: str  # "boolean", "integer", "number", "string" or "array" (of strings)
    nullable: bool
    default: Any
    doc: str
    setting: Setting


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
            path = prefix + f.name
            out[path] = Leaf(path, kind, nullable, value, docs.get(f.name, ""), setting_of(f))

    walk(config.Config, config.Config(), "")
    return out


LEAVES: Mapping[str, Leaf] = _leaves()
"""Every setting of the config by dotted path, settable or not."""


def _where(remote: str | None = None, *, settable: bool = True, secret: bool | None = None) -> frozenset[str]:
    return frozenset(
        p for p, leaf in LEAVES.items()
        if (leaf.setting.remote is not None) == settable
        and (remote is None or leaf.setting.remote == remote)
        and (secret is None or leaf.setting.secret == secret)
    )


SETTABLE: frozenset[str] = _where()
"""The dotted paths a remote controller may change (secrets only with control.allow_secrets)."""
RULES: Mapping[str, Rule] = {p: LEAVES[p].setting.rule for p in LEAVES if p in SETTABLE}
"""The limits of each settable path (as declared on its field)."""
HOT: frozenset[str] = _where(_HOT)
"""Settable paths put into effect at once (:class:`edgeagent.control.live.LiveApplier`)."""
CREDENTIALS: frozenset[str] = _where(JOIN)
"""Room credentials: handed to the room link at once, used at its next (re)join."""
NEEDS_RELOAD: frozenset[str] = _where(RELOAD) | CREDENTIALS
"""Settable paths that cannot take effect at once: a stage to load (seconds and hundreds of MB;
done at the next idle moment) or a new connection to the room."""
SECRETS: frozenset[str] = _where(secret=True)
"""Settings never sent back, and settable only with control.allow_secrets."""
HIDDEN: frozenset[str] = _where(settable=False, secret=True)
"""Secrets that are not settable remotely either: never sent back."""

SECTIONS: Mapping[str, type] = {
    f.name: typing.get_type_hints(config.Config)[f.name]
    for f in dataclasses.fields(config.Config)
    if dataclasses.is_dataclass(f.default_factory)
}
"""The tables of the config ("tts" → TTSConfig)."""


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
    if rule.allowed():
        text["enum"] = list(rule.allowed())
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
