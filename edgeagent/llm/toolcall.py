"""Tool calls in plain text, for models without a native tool API.

The convention is the Hermes/Qwen one, in the list form SmolLM2 was trained on
(Synth-APIGen): the tools are listed as JSON schemas inside ``<tools>...</tools>``
in the system prompt, and the model answers a call with

    <tool_call>[{"name": "set_light", "arguments": {"on": true}}]</tool_call>

(a single object instead of the list is accepted too: Qwen2.5 writes that).
Once the model has opened ``<tool_call>``, the rest is sampled under a GBNF
grammar built from the tools' JSON schemas, so the name is always one of the
tools and the arguments always fit its schema, even for a 135M model.
Tool results go back in a user turn as ``<tool_response>...</tool_response>``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from edgeagent.llm.chat import ChatMessage, ToolCall
from edgeagent.llm.tools import FunctionTool, ToolError

log = logging.getLogger(__name__)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

_INSTRUCTIONS = """You have access to the following tools:
<tools>{tools}</tools>

To use tools, reply with only the calls, in this format:
<tool_call>[{{"name": "tool_name", "arguments": {{"argument": "value"}}}}]</tool_call>
Otherwise reply in plain text."""


def tools_prompt(tools: Sequence[FunctionTool]) -> str:
    """The block appended to the system prompt that lists the tools and the call format."""
    return _INSTRUCTIONS.format(tools=json.dumps([t.schema() for t in tools]))


def call_text(calls: Sequence[ToolCall]) -> str:
    """An assistant's tool calls written the way the model is asked to write them."""
    items = []
    for c in calls:
        try:
            args: Any = json.loads(c.arguments or "{}")
        except json.JSONDecodeError:
            args = c.arguments
        items.append({"name": c.name, "arguments": args})
    return f"{OPEN}{json.dumps(items)}{CLOSE}"


def response_text(msg: ChatMessage) -> str:
    """A tool result, for the user turn that carries it back to the model (Qwen2.5's form).

    The bare content reads best: with the name and JSON around it SmolLM2-135M
    answers with Python code instead of a sentence.
    """
    return f"<tool_response>\n{msg.content.strip()}\n</tool_response>"


MAX_CALLS = 3
"""Most tool calls in one model turn."""


def grammar(tools: Sequence[FunctionTool]) -> str:
    """GBNF for what follows ``<tool_call>``: one call or a list of up to MAX_CALLS calls, then the close tag.

    Each call is ``{"name": <one of the tools>, "arguments": <that tool's schema>}``;
    the empty list is allowed and means "no call after all".
    """
    from llama_cpp import llama_grammar

    converter: Any = llama_grammar.SchemaConverter  # untyped upstream
    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    conv = converter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False)
    call = conv.visit({"anyOf": alternatives} if len(alternatives) > 1 else alternatives[0], "call")
    # At most MAX_CALLS: a small model otherwise repeats one call until max_tokens cuts the JSON.
    more = " ".join(f'( tc-ws "," tc-ws {call}' for _ in range(MAX_CALLS - 1)) + " )?" * (MAX_CALLS - 1)
    rules = [
        f'root ::= tc-ws ( "[" tc-ws ( {call} {more} )? tc-ws "]" | {call} ) tc-ws "{CLOSE}"',
        'tc-ws ::= ( " " | "\\n" )?',
        conv.format_grammar(),
    ]
    return "\n".join(rules)


def parse_calls(text: str, tools: Sequence[FunctionTool]) -> list[ToolCall]:
    """The calls in ``text`` (what followed ``<tool_call>``), checked against the tools.

    Calls to unknown tools or with arguments that do not fit are dropped with a
    warning (the grammar makes them impossible; this guards unconstrained text).
    """
    body = text.split(CLOSE, 1)[0].strip()
    try:
        data = json.loads(body or "[]")
    except json.JSONDecodeError as exc:
        log.warning("tool call is not valid JSON (%s): %r", exc, body[:200])
        return []
    items = data if isinstance(data, list) else [data]
    by_name = {t.name: t for t in tools}
    calls: list[ToolCall] = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in by_name:
            log.warning("dropping tool call to an unknown tool: %r", item)
            continue
        tool = by_name[item["name"]]
        try:
            tool.parse_arguments(item.get("arguments") or {})
        except ToolError as exc:
            log.warning("dropping tool call with bad arguments: %s", exc)
            continue
        args = json.dumps(item.get("arguments") or {})
        if any(c.name == tool.name and c.arguments == args for c in calls):
            continue  # the same call twice in one turn: once is enough
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=tool.name, arguments=args))
    return calls
