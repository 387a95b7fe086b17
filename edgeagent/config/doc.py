"""Documentation of the config, read from the dataclasses themselves.

Each field's docstring (the string literal under it in :mod:`edgeagent.config`)
is its documentation; :func:`example_toml` renders a commented template from
it, so the template can never drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import json
import typing
from typing import Any

from edgeagent import config


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: docstring} for a dataclass defined with attribute docstrings."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _render(cls: type, obj: Any, prefix: str, out: list[str]) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    tables = []
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            tables.append((f.name, hints[f.name], value))
            continue
        for line in docs.get(f.name, "").splitlines():
            out.append(f"# {line}".rstrip())
        note = "  # unset" if value is None else ""
        out.append(f"# {f.name} = {_toml_value(value)}{note}")
        out.append("")
    for name, sub_cls, value in tables:
        key = f"{prefix}{name}"
        doc = inspect.getdoc(sub_cls) or ""
        out.append(f"[{key}]")
        for line in doc.splitlines():
            out.append(f"# {line}".rstrip())
        out.append("")
        _render(sub_cls, value, f"{key}.", out)


def example_toml() -> str:
    """A commented TOML file listing every field at its default."""
    out = [
        "# edgeagent configuration. Every setting is optional: the values shown are the",
        "# defaults. Uncomment a line to change it. Overrides, strongest last:",
        "#   EDGEAGENT__SECTION__FIELD=value in the environment, then",
        "#   `edgeagent run --set section.field=value`.",
        "# Generated from edgeagent/config/ by `edgeagent config example`.",
        "",
    ]
    _render(config.Config, config.Config(), "", out)
    return "\n".join(out).rstrip() + "\n"
