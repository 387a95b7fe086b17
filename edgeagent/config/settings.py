"""One settings table: each config field declares, once, its limits and how it may change.

A field of the config dataclasses is written ``name: T = setting(default, ...)`` (instead of
``= default``) when it has limits or may be changed by a remote controller::

    speed: float = setting(1.0, lo=0.25, hi=4.0, remote=HOT)

Everything else derives from that declaration:

- :func:`edgeagent.config.validate` checks every field against its :class:`Rule` (for the file,
  the environment and ``--set`` alike); checks *across* fields stay in ``validate``;
- :mod:`edgeagent.control.keys` builds the remote allow-list, the ranges, the secrets and the
  schema from it, and :mod:`edgeagent.control.live` the set of hot and reload paths;
- ``remote``: :data:`HOT` (put into effect at once by :class:`~edgeagent.control.live.LiveApplier`),
  :data:`RELOAD` (a stage is reloaded at the next quiet moment), :data:`JOIN` (room credentials:
  used at the next (re)join), or None: read-only remotely;
- ``secret``: never sent back to a controller, settable remotely only with
  ``control.allow_secrets`` (and never when it is not ``remote``).

Limits check the value a field holds (after the type conversion of :mod:`edgeagent.config`):
numbers against ``lo``/``hi`` (``*_open``: the bound itself is refused), strings against
``choices`` or their length, lists of strings item by item, their length and ``unique``.
``providers``: the choices are the provider names :mod:`edgeagent.registry` knows for that
kind (looked up when checked, so a provider registered later is a valid choice).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

HOT = "hot"
RELOAD = "reload"
JOIN = "join"
REMOTE_KINDS = (HOT, RELOAD, JOIN)


@dataclass(frozen=True)
class Rule:
    """The limits of one setting."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    providers: str | None = None  # choices: the registry's providers of this kind
    min_len: int = 0  # strings, and each item of a list
    max_len: int = 4096
    max_items: int = 64
    unique: bool = False  # list items must differ

    def allowed(self) -> tuple[str, ...]:
        """The choices a string must be one of (empty: any string within the lengths)."""
        if self.providers is not None:
            from edgeagent.registry import PROVIDERS

            return tuple(sorted(PROVIDERS[self.providers]))
        return self.choices


@dataclass(frozen=True)
class Setting:
    """How one config field may be set: its :class:`Rule`, remote kind and secrecy."""

    rule: Rule = Rule()
    remote: str | None = None
    secret: bool = False


PLAIN = Setting()
"""A field declared without :func:`setting`: any value of its type, read-only remotely."""

_KEY = "edgeagent.setting"


def setting(default: Any, *, remote: str | None = None, secret: bool = False, **limits: Any) -> Any:
    """A dataclass field with ``default`` that declares its limits (:class:`Rule` keywords),
    its remote kind (:data:`HOT`, :data:`RELOAD`, :data:`JOIN` or None) and secrecy."""
    if remote is not None and remote not in REMOTE_KINDS:
        raise ValueError(f"remote must be one of {REMOTE_KINDS} or None, got {remote!r}")
    return dataclasses.field(default=default, metadata={_KEY: Setting(Rule(**limits), remote, secret)})


def setting_of(f: dataclasses.Field[Any]) -> Setting:
    """The :class:`Setting` a dataclass field declares (:data:`PLAIN` when none)."""
    found = f.metadata.get(_KEY, PLAIN)
    assert isinstance(found, Setting)
    return found


# -- checking a value ----------------------------------------------------------------------------
# Each check returns None, or (code, message): the codes are those of the remote protocol
# ("out_of_range", "bad_value"); the message names no path (the caller adds it).


def text_problem(text: str, rule: Rule) -> tuple[str, str] | None:
    choices = rule.allowed()
    if choices:
        if text not in choices:
            return "out_of_range", f"expected one of {', '.join(choices)}, got {text!r}"
        return None
    if "\x00" in text:
        return "bad_value", "a NUL character is not allowed"
    if len(text) < rule.min_len:
        return "bad_value", "must not be empty" if rule.min_len == 1 else f"at least {rule.min_len} characters"
    if len(text) > rule.max_len:
        return "bad_value", f"at most {rule.max_len} characters, got {len(text)}"
    return None


def number_problem(value: float, rule: Rule) -> tuple[str, str] | None:
    lo_ok = rule.lo is None or (value > rule.lo if rule.lo_open else value >= rule.lo)
    hi_ok = rule.hi is None or (value < rule.hi if rule.hi_open else value <= rule.hi)
    if math.isfinite(value) and lo_ok and hi_ok:
        return None
    lo = "" if rule.lo is None else f"{'>' if rule.lo_open else '>='} {rule.lo:g}"
    hi = "" if rule.hi is None else f"{'<' if rule.hi_open else '<='} {rule.hi:g}"
    expected = " and ".join(s for s in (lo, hi) if s) or "a finite number"
    return "out_of_range", f"expected {expected}, got {value!r}"


def list_problem(items: tuple[Any, ...] | list[Any], rule: Rule) -> tuple[str, str] | None:
    """Length and uniqueness of a list (its items are checked one by one by the caller)."""
    if len(items) > rule.max_items:
        return "bad_value", f"at most {rule.max_items} items, got {len(items)}"
    if rule.unique and len(set(items)) != len(items):
        return "bad_value", "an item is listed twice"
    return None


def value_problem(path: str, value: Any, rule: Rule) -> str | None:
    """``path: problem`` for a typed config value that breaks ``rule``, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        found = number_problem(float(value), rule)
        return f"{path}: {found[1]}" if found else None
    if isinstance(value, str):
        found = text_problem(value, rule)
        return f"{path}: {found[1]}" if found else None
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            if isinstance(item, str) and (found := text_problem(item, rule)):
                return f"{path}[{i}]: {found[1]}"
        found = list_problem(value, rule)
        return f"{path}: {found[1]}" if found else None
    return None


def problems(obj: Any, prefix: str = "") -> list[str]:
    """Every field of the config dataclass ``obj`` (and its tables) that breaks its rule."""
    out: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += problems(value, f"{prefix}{f.name}.")
        elif problem := value_problem(prefix + f.name, value, setting_of(f).rule):
            out.append(problem)
    return out
