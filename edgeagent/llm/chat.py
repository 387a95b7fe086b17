"""Chat context: the conversation the LLM sees, in OpenAI-style messages."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON object text, as the model produced it."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    """For role "tool": the call this message answers."""
    interrupted: bool = False
    """An assistant reply cut off by the user; content is what was actually spoken."""

    def to_openai(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            msg["tool_call_id"] = self.tool_call_id
        return msg


@dataclass
class ChatContext:
    messages: list[ChatMessage] = field(default_factory=list)

    def add(self, role: Role, content: str = "", **kw: Any) -> ChatMessage:
        msg = ChatMessage(role, content, **kw)
        self.messages.append(msg)
        return msg

    def copy(self) -> ChatContext:
        return ChatContext(copy.copy(self.messages))

    def to_openai(self) -> list[dict[str, Any]]:
        return [m.to_openai() for m in self.messages]


@dataclass(frozen=True)
class ChatChunk:
    """One piece of a streamed reply: a text delta and/or complete tool calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
