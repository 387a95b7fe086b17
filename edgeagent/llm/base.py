"""LLM contract: a chat context (and tools) in, a stream of text deltas and tool calls out."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent.llm.chat import ChatChunk, ChatContext
from edgeagent.llm.tools import FunctionTool
from edgeagent.stage import Stage, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config


@dataclass(frozen=True)
class LLMOptions:
    temperature: float = 0.2
    max_tokens: int = 256
    """Upper bound on the reply length in tokens."""


class LLM(Stage):
    kind = "llm"
    hot_options = ("llm.temperature", "llm.max_tokens")
    options: LLMOptions

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[llm]``: ``temperature``, ``max_tokens``, and ``model`` (as ``model_path``) when set."""
        opts: dict[str, Any] = {"temperature": cfg.llm.temperature, "max_tokens": cfg.llm.max_tokens}
        if cfg.llm.model:
            opts["model_path"] = cfg.llm.model
        return opts

    def update_options(self, cfg: Config) -> Callable[[], None]:
        """``llm.temperature`` and ``llm.max_tokens`` (:attr:`options`), from the next reply on."""
        options = dataclasses.replace(self.options, temperature=cfg.llm.temperature, max_tokens=cfg.llm.max_tokens)
        return lambda: setattr(self, "options", options)

    async def prefill(self, ctx: ChatContext, tools: Sequence[FunctionTool] = ()) -> int:
        """Evaluate ``ctx`` (and the tools' schemas) into the model's cache while it is idle, so
        that a reply to it starts at once; the number of tokens evaluated. Default: a model
        with no cache of its own (a server) does nothing, 0."""
        return 0

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
