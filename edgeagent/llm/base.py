"""LLM contract: a chat context (and tools) in, a stream of text deltas and tool calls out."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from edgeagent.llm.chat import ChatChunk, ChatContext
from edgeagent.llm.tools import FunctionTool
from edgeagent.stage import Stage, StageStream


@dataclass(frozen=True)
class LLMOptions:
    temperature: float = 0.2
    max_tokens: int = 256
    """Upper bound on the reply length in tokens."""


class LLM(Stage):
    kind = "llm"
    options: LLMOptions

    @abc.abstractmethod
    def chat(
        self,
        ctx: ChatContext,
        tools: Sequence[FunctionTool] = (),
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> StageStream[None, ChatChunk]:
        """Start a reply; iterate it for chunks; aclose() stops generation at once.

        The returned stream takes no input (it is started by this call).
        """
