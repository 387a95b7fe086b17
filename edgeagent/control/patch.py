"""Remote config changes, pure: parse a request, check a JSON merge patch, apply it, say what changed.

A change is an RFC 7386 JSON merge patch against the config's dict form
(``{"tts": {"speed": 1.2}, "llm": {"model": null}}``): a value sets a setting,
``null`` resets it to its default, ``{"tts": null}`` resets a whole section.
Remote JSON is checked strictly (no "1" for 1, no true for 1, no NaN) and
against the allow-list and ranges of :mod:`edgeagent.control.keys`; then the
config's own :func:`edgeagent.config.validate` checks the settings together.
Every problem found is reported at once in a :class:`ControlError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeagent import config
from edgeagent.config.settings import list_problem, number_problem, text_problem
from edgeagent.control.errors import ControlError, Problem
from edgeagent.control.keys import (
    LEAVES,
    NEEDS_RELOAD,
    REDACTED,
    RULES,
    SECRETS,
    SECTIONS,
    SETTABLE,
    Leaf,
    Rule,
    redact,
    schema,
    shown,
)
from edgeagent.errors import ConfigError

__all__ = [
    "NEEDS_RELOAD", "PROTOCOL_VERSION", "SECRETS", "SETTABLE",
    "Change", "ControlError", "Problem",
    "apply_patch", "build", "check_patch", "compose", "diff", "parse_payload", "parse_set_request",
    "redact", "schema",
]

PROTOCOL_VERSION = 1
"""The ``"v"`` every request and reply carries."""

_JSON_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "an object", type(None): "null"}


@dataclass(frozen=True)
class Change:
    """One setting that changed. Secrets that are set read as ``***`` in ``old`` and ``new``."""

    path: str
    old: Any
    new: Any

    @property
    def needs_reload(self) -> bool:
        """True when the change takes effect at the next idle moment (a model load, a reconnect)."""
        return self.path in NEEDS_RELOAD

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "needs_reload": self.needs_reload}


# -- the request ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_payload(data: bytes | str, *, max_bytes: int = 16384) -> dict[str, Any]:
    """The JSON object of one request: at most ``max_bytes``, strict JSON, ``"v": 1``.

    Raises :class:`ControlError` (``too_large``, ``not_json``, ``bad_shape`` or
    ``unsupported_version``).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ControlError.one("", "too_large", f"the request is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ControlError.one("", "not_json", "the request is not UTF-8 text") from None
    except RecursionError:
        raise ControlError.one("", "bad_shape", "the request is nested too deeply") from None
    except _DuplicateKey as exc:
        raise ControlError.one("", "bad_shape", str(exc)) from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ControlError.one("", "not_json", f"the request is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlError.one("", "bad_shape", f"expected a JSON object, got {_json_name(obj)}")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        got = "none" if "v" not in obj else json.dumps(version)
        raise ControlError.one("v", "unsupported_version", f'expected "v": {PROTOCOL_VERSION}, got {got}')
    return obj


def parse_set_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """``(patch, base_revision)`` of a set request ``{"v": 1, "patch": {...}, "base_revision": N}``."""
    problems = [Problem(k, "unknown_key", f"unknown member {k!r} of a set request; known: v, patch, base_revision")
                for k in sorted(set(request) - {"v", "patch", "base_revision"})]
    patch = request.get("patch")
    if "patch" not in request:
        problems.append(Problem("patch", "missing", "a set request needs a patch (a JSON object)"))
    elif not isinstance(patch, dict):
        problems.append(Problem("patch", "bad_shape", f"expected a JSON object, got {_json_name(patch)}"))
    base = request.get("base_revision")
    if "base_revision" not in request:
        problems.append(Problem("base_revision", "missing", "a set request needs the revision it was based on"))
    elif type(base) is not int:
        problems.append(Problem("base_revision", "wrong_type", f"expected an integer, got {_json_name(base)}"))
    elif base < 0:
        problems.append(Problem("base_revision", "out_of_range", f"expected 0 or more, got {base}"))
    if problems:
        raise ControlError(problems)
    assert isinstance(patch, dict) and isinstance(base, int)
    return patch, base


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


# -- checking one value -----------------------------------------------------------------------


def _check_text(path: str, text: str, rule: Rule) -> Problem | None:
    found = text_problem(text, rule)
    return Problem(path, *found) if found else None


def _check_number(path: str, value: float, rule: Rule) -> Problem | None:
    found = number_problem(value, rule)
    return Problem(path, *found) if found else None


def check_value(leaf: Leaf, value: Any, rule: Rule) -> tuple[Any, Problem | None]:
    """``(value as the config holds it, problem)`` for a non-null JSON ``value`` of ``leaf``."""
    path, kind = leaf.path, leaf.kind
    wrong = Problem(path, "wrong_type", f"expected {kind_name(leaf)}, got {_json_name(value)} {_short(value)}")
    if kind == "boolean":
        return value, None if isinstance(value, bool) else wrong
    if kind == "integer":
        if type(value) is not int:
            return value, wrong
        return value, _check_number(path, value, rule)
    if kind == "number":
        if type(value) not in (int, float):
            return value, wrong
        try:
            number = float(value)
        except OverflowError:
            return value, Problem(path, "out_of_range", f"{_short(value)} is too large")
        return number, _check_number(path, number, rule)
    if kind == "string":
        return value, _check_text(path, value, rule) if isinstance(value, str) else wrong
    if not isinstance(value, list):  # array of strings
        return value, wrong
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return value, Problem(f"{path}[{i}]", "wrong_type", f"expected a string, got {_json_name(item)}")
        problem = _check_text(f"{path}[{i}]", item, rule)
        if problem:
            return value, problem
    if found := list_problem(value, rule):
        return value, Problem(path, *found)
    return tuple(value), None


def kind_name(leaf: Leaf) -> str:
    name = {"boolean": "true or false", "integer": "an integer", "number": "a number",
            "string": "a string", "array": "a list of strings"}[leaf.kind]
    return f"{name} or null" if leaf.nullable else name


def _short(value: Any) -> str:
    text = json.dumps(value)
    return f"({text})" if len(text) <= 40 else f"({text[:37]}...)"


# -- applying a patch -------------------------------------------------------------------------


def _leaf_patch(current: config.Config, path: str, value: Any, allow_secrets: bool,
                problems: list[Problem]) -> tuple[bool, Any]:
    """``(keep, value)``: whether ``path: value`` goes into the checked patch."""
    leaf = LEAVES[path]
    if path in SECRETS and value == REDACTED:
        return False, None  # the redacted secret sent back: keep it as it is
    now = _get(current, path)
    target, problem = (leaf.default, None) if value is None else check_value(leaf, value, RULES.get(path, Rule()))
    changes = problem is not None or target != now
    if path not in SETTABLE:
        if changes:
            problems.append(Problem(path, "read_only", "read-only remotely: change it in the config file"))
        return False, None
    if path in SECRETS and not allow_secrets:
        if changes:
            problems.append(Problem(path, "secret_not_allowed",
                                    "secrets can be set remotely only with control.allow_secrets = true"))
        return False, None
    if problem:
        problems.append(problem)
        return False, None
    return True, value


def check_patch(current: config.Config, patch: Any, *, allow_secrets: bool) -> dict[str, Any]:
    """The patch with section nulls spelled out per setting, ready for :func:`build` and :func:`compose`.

    Entries that change nothing are dropped where they name a read-only setting or a
    secret (a section reset that leaves them as they are, a redacted secret sent back).

    Raises :class:`ControlError` listing every problem.
    """
    if not isinstance(patch, dict):
        raise ControlError.one("", "bad_shape", f"a patch is a JSON object, got {_json_name(patch)}")
    problems: list[Problem] = []
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key in SECTIONS:
            fields = [p.split(".", 1)[1] for p in LEAVES if p.startswith(key + ".")]
            if value is None:
                value = dict.fromkeys(fields)
            elif not isinstance(value, dict):
                problems.append(Problem(key, "wrong_type", f"expected an object (the section) or null, "
                                                           f"got {_json_name(value)}"))
                continue
            for name, sub in value.items():
                if name not in fields:
                    problems.append(Problem(f"{key}.{name}", "unknown_key",
                                            f"{key} has no setting {name!r}; known: {', '.join(fields)}"))
                    continue
                keep, v = _leaf_patch(current, f"{key}.{name}", sub, allow_secrets, problems)
                if keep:
                    out.setdefault(key, {})[name] = v
        elif key in LEAVES:
            keep, v = _leaf_patch(current, key, value, allow_secrets, problems)
            if keep:
                out[key] = v
        else:
            known = ", ".join([*SECTIONS, *(p for p in LEAVES if "." not in p)])
            problems.append(Problem(key, "unknown_key", f"no section or setting {key!r}; known: {known}"))
    if problems:
        raise ControlError(problems)
    return out


_PATH_IN_MESSAGE = re.compile(r"^([a-z_]+(?:\.[a-z_0-9]+)?)[:\s]")


def build(base: config.Config, patch: Mapping[str, Any]) -> config.Config:
    """``base`` with a checked ``patch`` merged in, through the config's own checks."""
    try:
        cfg = config.from_dict(config.Config, config.merge(config.to_dict(base), patch))
        config.validate(cfg)
    except ConfigError as exc:
        match = _PATH_IN_MESSAGE.match(str(exc))
        path = match.group(1) if match and (match.group(1) in LEAVES or match.group(1) in SECTIONS) else ""
        raise ControlError.one(path, "invalid", str(exc)) from None
    return cfg


def diff(old: config.Config, new: config.Config) -> list[Change]:
    """The settings that differ, in config order (secrets shown as ``***``)."""
    out = []
    for path in LEAVES:
        a, b = _get(old, path), _get(new, path)
        if a != b:
            out.append(Change(path, shown(path, a), shown(path, b)))
    return out


def apply_patch(current: config.Config, patch: Any, *, allow_secrets: bool) -> tuple[config.Config, list[Change]]:
    """``(new config, changes)`` for a JSON merge patch sent by a remote controller.

    Raises :class:`ControlError` listing every problem (unknown keys, wrong types,
    out-of-range values, read-only settings, secrets while they are not allowed,
    settings that do not fit together); ``current`` is never changed.
    """
    checked = check_patch(current, patch, allow_secrets=allow_secrets)
    new = build(current, checked)
    return new, diff(current, new)


def compose(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """One merge patch with the effect of ``first`` then ``second`` (both checked: no section nulls)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in first.items()}
    for key, value in second.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def _get(cfg: config.Config, path: str) -> Any:
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj

