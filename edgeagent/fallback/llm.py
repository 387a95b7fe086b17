"""An LLM made of several: try each in the chain's order until one answers in time.

Each member must produce its first chunk (text or tool call) within its own
deadline, counted from the request: a provider that accepts the connection and
then says nothing is left at the deadline, not at some read timeout that never
fires. Once a chunk has gone out the reply is never restarted (the user would
hear it twice). If the serving provider dies mid-reply, the next one is asked
to finish it: it sees the conversation, the part already said as the
assistant's words, and a note to carry on without repeating them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from edgeagent.aio import wait_for
from edgeagent.fallback.chain import Chain, Chained, Member
from edgeagent.llm.base import LLM, LLMOptions
from edgeagent.llm.chat import ChatChunk, ChatContext
from edgeagent.llm.llama_gen import LLMError
from edgeagent.llm.tools import FunctionTool
from edgeagent.stage import StageStream

log = logging.getLogger(__name__)

CONTINUE_NOTE = ("Your reply above was cut off. Continue it from exactly where it stopped, "
                 "without repeating anything already said.")


class FallbackLLM(Chained, LLM):
    """The chain's members as one LLM (registry-free: built by :mod:`edgeagent.fallback.build`)."""

    provider = "fallback"

    def __init__(self, chain: Chain) -> None:
        super().__init__()
        self.chain = chain
        first = chain.members[0].stage
        self._options: LLMOptions = first.options
        for m in chain.members:
            m.stage.on_metrics(self._report)  # members' records (with their provider) pass through

    @property
    def options(self) -> LLMOptions:
        return self._options

    @options.setter
    def options(self, value: LLMOptions) -> None:
        """A change (e.g. a remote ``llm.temperature``) reaches every member."""
        self._options = value
        for m in self.chain.members:
            m.stage.options = value

    @property
    def local(self) -> LLM | None:
        """The first local member (the session's turn detector and prefill use it)."""
        return next((m.stage for m in self.chain.members if not m.cloud), None)

    def chat(self, ctx: ChatContext, tools: Sequence[FunctionTool] = (), *, temperature: float | None = None,
             max_tokens: int | None = None) -> FallbackChatStream:
        return FallbackChatStream(self.chain, ctx, tuple(tools), temperature, max_tokens)

    async def prefill(self, ctx: ChatContext, tools: Sequence[FunctionTool] = ()) -> int:
        """The local model's (the one whose cache a reply may need at once)."""
        local = self.local
        return 0 if local is None else await local.prefill(ctx, tools)

    def __getattr__(self, name: str) -> object:
        # end_of_turn_logprob, prepare_turn (the turn detector's EndOfTurnModel): the local model's
        chain = self.__dict__.get("chain")
        if chain is not None and name in ("end_of_turn_logprob", "prepare_turn"):
            for m in chain.members:
                if not m.cloud and hasattr(m.stage, name):
                    return getattr(m.stage, name)
        raise AttributeError(name)

    async def aclose(self) -> None:
        await self.chain.aclose()


class FallbackChatStream(StageStream[None, ChatChunk]):
    """One reply; :attr:`served_by` names the member whose chunks went out (the last one)."""

    def __init__(self, chain: Chain, ctx: ChatContext, tools: tuple[FunctionTool, ...],
                 temperature: float | None, max_tokens: int | None) -> None:
        self._chain = chain
        self._ctx = ctx
        self._tools = tools
        self._temperature = temperature
        self._max_tokens = max_tokens
        self.served_by: str | None = None
        super().__init__()

    async def _run(self) -> None:
        said: list[str] = []
        errors: list[str] = []
        order = self._chain.candidates()
        warm = self._warm_next(order)
        try:
            await self._try(order, said, errors)
        finally:
            if warm is not None:
                warm.cancel()

    def _warm_next(self, order: list[Member]) -> asyncio.Future[object] | None:
        """While a cloud member is asked, evaluate the prompt into the next local model's KV cache,
        so that a fallback at the deadline starts generating at once (its thread is idle anyway)."""
        if len(order) < 2 or not order[0].cloud:
            return None
        local: LLM | None = next((m.stage for m in order[1:] if not m.cloud), None)
        if local is None:
            return None
        fut: asyncio.Future[object] = asyncio.ensure_future(local.prefill(self._ctx, self._tools))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failed warm-up is harmless
        return fut

    async def _try(self, order: list[Member], said: list[str], errors: list[str]) -> None:
        for i, member in enumerate(order):
            ctx = self._ctx if not said else _continuation(self._ctx, "".join(said))
            stream = member.stage.chat(ctx, self._tools, temperature=self._temperature, max_tokens=self._max_tokens)
            try:
                try:
                    first: ChatChunk | None = await wait_for(anext(stream), member.deadline_s)
                except StopAsyncIteration:
                    first = None
                self._chain.served(member)
                self.served_by = member.label
                if first is None:
                    return
                self._out_chunk(first, said)
                async for chunk in stream:
                    self._out_chunk(chunk, said)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                nxt = order[i + 1] if i + 1 < len(order) else None
                self._chain.failed(member, exc, nxt)
                errors.append(f"{member.label}: {exc or type(exc).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        raise LLMError("every LLM provider failed: " + "; ".join(errors), retryable=True)

    def _out_chunk(self, chunk: ChatChunk, said: list[str]) -> None:
        if chunk.text:
            said.append(chunk.text)
        self._emit(chunk)


def _continuation(ctx: ChatContext, said: str) -> ChatContext:
    out = ctx.copy()
    out.add("assistant", said)
    out.add("system", CONTINUE_NOTE)
    return out
