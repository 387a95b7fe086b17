"""Tools the LLM can call, declared from type-hinted Python functions.

    @function_tool
    async def set_light(ctx: RunContext, on: bool) -> str:
        \"\"\"Turn the room light on or off.

        Args:
            on: true to switch the light on.
        \"\"\"

The JSON schema comes from the signature; the description from the docstring.
A parameter annotated :class:`RunContext` is injected, not shown to the model.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeagent.errors import EdgeAgentError


class ToolError(EdgeAgentError):
    """A tool call had bad arguments or the tool failed; the message goes back to the model."""


@dataclass
class RunContext:
    """Handed to tools that ask for it: the session, the agent that called, shared user data."""

    session: Any = None
    agent: Any = None
    userdata: Any = field(default_factory=dict)
    """The session's ``userdata`` (whatever the application passed in)."""
    speech: Any = None
    """The :class:`~edgeagent.voice.speech.SpeechHandle` of the reply that made the call."""


def _json_type(tp: Any, where: str) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _json_type(args[0], where)
        return {"anyOf": [_json_type(a, where) for a in args]}
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"type": _json_type(type(values[0]), where)["type"], "enum": values}
    if origin in (list, tuple) or tp in (list, tuple):
        item_types = typing.get_args(tp)
        return {"type": "array", "items": _json_type(item_types[0], where) if item_types else {}}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"{where}: type {tp!r} cannot be described to the model")


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Description (text before 'Args:') and per-argument descriptions."""
    doc = inspect.cleandoc(doc or "")
    head, _, args = doc.partition("Args:")
    params: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        m = re.match(r"\s*(\w+)\s*(?:\([^)]*\))?:\s*(.*)", line)
        if m and (not line.startswith("        ") or current is None):
            current = m.group(1)
            params[current] = m.group(2).strip()
        elif current and line.strip():
            params[current] += " " + line.strip()
    return " ".join(head.split()), params


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    fn: Callable[..., Any] = field(repr=False)
    context_param: str | None = None
    """Name of the parameter that receives the RunContext."""
    hints: dict[str, Any] = field(default_factory=dict, repr=False)

    def bind(self, owner: object) -> FunctionTool:
        """This tool with ``owner`` as ``self`` (for tools declared as methods)."""
        return dataclasses.replace(self, fn=types.MethodType(self.fn, owner))

    def schema(self) -> dict[str, Any]:
        """OpenAI "tools" entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def parse_arguments(self, arguments: str | dict[str, Any]) -> dict[str, Any]:
        """Parse and check the model's arguments against the signature."""
        if isinstance(arguments, str):
            try:
                args = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise ToolError(f"{self.name}: arguments are not valid JSON: {exc}") from exc
        else:
            args = dict(arguments)
        if not isinstance(args, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object")
        props = self.parameters.get("properties", {})
        unknown = sorted(set(args) - set(props))
        if unknown:
            raise ToolError(f"{self.name}: unknown argument(s) {unknown}")
        missing = [p for p in self.parameters.get("required", []) if p not in args]
        if missing:
            raise ToolError(f"{self.name}: missing argument(s) {missing}")
        for key, value in args.items():
            args[key] = _check(value, self.hints[key], f"{self.name}.{key}")
        return args

    async def call(self, arguments: str | dict[str, Any], context: RunContext | None = None) -> Any:
        kwargs = self.parse_arguments(arguments)
        if self.context_param:
            kwargs[self.context_param] = context if context is not None else RunContext()
        result = self.fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ToolError:
                continue
        raise ToolError(f"{where}: {value!r} does not fit {tp}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ToolError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ToolError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ToolError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ToolError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ToolError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ToolError(f"{where}: expected a string, got {value!r}")
    return value


def function_tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Decorator: turn a type-hinted function into a :class:`FunctionTool`."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        hints = typing.get_type_hints(f)
        doc_desc, doc_params = _doc_parts(f.__doc__ or "")
        props: dict[str, Any] = {}
        required: list[str] = []
        ctx_param = None
        arg_hints: dict[str, Any] = {}
        for i, (pname, param) in enumerate(inspect.signature(f).parameters.items()):
            if i == 0 and pname == "self":
                continue  # a method of an Agent: bound when the agent is made
            tp = hints.get(pname)
            if tp is None:
                raise TypeError(f"tool {f.__name__}: parameter {pname!r} needs a type hint")
            if tp is RunContext or typing.get_origin(tp) is RunContext:
                ctx_param = pname
                continue
            schema = _json_type(tp, f"{f.__name__}.{pname}")
            if pname in doc_params:
                schema["description"] = doc_params[pname]
            props[pname] = schema
            arg_hints[pname] = tp
            if param.default is inspect.Parameter.empty:
                required.append(pname)
        params = {"type": "object", "properties": props, "required": required}
        return FunctionTool(
            name=name or f.__name__,
            description=description or doc_desc or f.__name__.replace("_", " "),
            parameters=params,
            fn=f,
            context_param=ctx_param,
            hints=arg_hints,
        )

    return wrap(fn) if fn is not None else wrap


ToolFn = Callable[..., Awaitable[Any] | Any]
