"""A realtime model's tool calls, run with the agent's tools and answered as ``function_call_output``.

The model asks for tools at the end of a response; :func:`answer_tool_calls` records the
request and each result in the chat history (so the pipeline after a drop knows them too),
and hands each result back to the model. A tool that is unknown, fails or takes longer than
:data:`TOOL_TIMEOUT_S` answers with an error text, as in the pipeline: the model says what
went wrong instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from edgeagent.aio import wait_for
from edgeagent.llm.chat import ChatMessage, ToolCall
from edgeagent.llm.tools import RunContext, ToolError
from edgeagent.realtime.protocol import FunctionCall, RealtimeClient, RealtimeError
from edgeagent.voice.agent import Agent

TOOL_TIMEOUT_S = 30.0


async def answer_tool_calls(agent: Agent, client: RealtimeClient, calls: list[FunctionCall], text: str,
                            add: Callable[[ChatMessage], None]) -> None:
    """Run ``calls`` (asked for after ``text``) in order; ``add`` records each message in the history."""
    tools = {t.name: t for t in agent.tools}
    add(ChatMessage("assistant", text, tool_calls=tuple(ToolCall(c.call_id, c.name, c.arguments) for c in calls)))
    for call in calls:
        tool = tools.get(call.name)
        try:
            if tool is None:
                raise ToolError(f"no tool named {call.name!r}")
            result = await wait_for(tool.call(call.arguments, RunContext(agent=agent)), TOOL_TIMEOUT_S)
        except (ToolError, asyncio.TimeoutError) as exc:
            result = f"error: {exc or 'the tool took too long'}"
        out = result if isinstance(result, str) else json.dumps(result)
        add(ChatMessage("tool", out, tool_call_id=call.call_id))
        with contextlib.suppress(RealtimeError):
            await client.function_output(call.call_id, out)
