"""Local LLM on llama.cpp (llama-cpp-python): streamed replies, tools, end-of-turn probe.

    llm = LlamaLLM()                       # the packaged SmolLM2-135M-Instruct
    stream = llm.chat(ctx, tools=[set_light])
    async for chunk in stream:             # ChatChunk(text=...) or ChatChunk(tool_calls=...)
        ...
    await stream.aclose()                  # stops generation within one token

The prompt is written from the ChatContext in the model's chat format (ChatML
for SmolLM2; see :mod:`edgeagent.llm.prompt`) and evaluated with the low-level
API, so the KV cache of the unchanged prefix (system prompt, earlier turns) is
reused from one call to the next. Tools: :mod:`edgeagent.llm.llama_gen` and
:mod:`edgeagent.llm.toolcall`. All model work runs on one inference thread, so
generation and :meth:`LlamaLLM.end_of_turn_logprob` never overlap.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeagent.errors import ModelError
from edgeagent.llm.base import LLM, LLMOptions
from edgeagent.llm.chat import ChatChunk, ChatContext, ChatMessage
from edgeagent.llm.llama_engine import LlamaEngine, default_model_path, default_threads
from edgeagent.llm.llama_gen import Generator, LLMError, Request, Settings, Stats
from edgeagent.llm.prompt import template_for
from edgeagent.llm.tools import FunctionTool
from edgeagent.metrics import LLMMetrics
from edgeagent.stage import InferenceThread, StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config

__all__ = ["LLMError", "LlamaChatStream", "LlamaLLM"]

_TERMINAL = (".", "?", "!")

NEXT_TURN_TOKENS = 64
"""Room :meth:`LlamaLLM.prefill` leaves for the next user turn (a spoken question is 10-30
tokens, its chat markup a few more): a longer turn still fits, by a cut at that turn."""


class LlamaLLM(LLM):
    """llama.cpp provider (registry name ``llama``).

    Args:
        model_path: a .gguf file; default the manifest model ``smollm2-135m``.
        n_ctx: context window in tokens; the oldest turns are dropped when it fills.
        n_threads: CPU threads for llama.cpp; default min(4, cores).
        n_batch: prompt tokens evaluated per decode call.
        n_gpu_layers: layers offloaded to the GPU (-1 = all); needs a llama-cpp-python built with
            CUDA (scripts/setup does where nvcc is); 0 = CPU only.
        temperature: 0 is greedy (deterministic).
        max_tokens: upper bound on one reply.
        chat_format: "chatml" or "jinja" (the GGUF's own template); default from the GGUF.
        tool_margin: the tool gate width in nats (see :mod:`edgeagent.llm.llama_gen`);
            None lets a model with native tool calling decide alone.
        max_tool_steps: tool-call rounds allowed per user turn; then the reply must be text.
        repeat_penalty: llama.cpp repetition penalty over the last 64 tokens (1.0 = off).
        seed: sampling seed when temperature > 0.
    """

    provider = "llama"
    default_model = ("model_path", "smollm2-135m")

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[llm]`` (:meth:`LLM.config_options`) and ``gpu_layers`` (as ``n_gpu_layers``) when set."""
        opts = super().config_options(cfg)
        if cfg.llm.gpu_layers:
            opts["n_gpu_layers"] = cfg.llm.gpu_layers
        return opts

    @classmethod
    def check_loadable(cls, cfg: Config) -> None:
        """``llm.model``, when set, is a GGUF file (else the manifest's default is there)."""
        if not cfg.llm.model:
            super().check_loadable(cfg)
            return
        path = Path(cfg.llm.model).expanduser()
        if not path.is_file():
            raise ModelError(f"llm.model: {path} does not exist")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"llm.model: {path} is not a GGUF model file")

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        temperature: float = 0.2,
        max_tokens: int = 256,
        chat_format: str | None = None,
        tool_margin: float | None = 3.0,
        max_tool_steps: int = 3,
        repeat_penalty: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.options = LLMOptions(temperature=temperature, max_tokens=max_tokens)
        self.max_tool_steps = max_tool_steps
        path = Path(model_path) if model_path is not None else default_model_path()
        self._engine = LlamaEngine(path, n_ctx=n_ctx, n_threads=n_threads or default_threads(),
                                   n_batch=n_batch, seed=seed, n_gpu_layers=n_gpu_layers)
        self.template = template_for(self._engine.metadata, chat_format, self._engine.bos_text,
                                     self._engine.eos_text)
        self._gen = Generator(self._engine, self.template,
                              Settings(repeat_penalty=repeat_penalty, tool_margin=tool_margin))
        self._thread = InferenceThread("llm-llama")
        self._last_tools: tuple[FunctionTool, ...] = ()
        self._closed = False

    @property
    def model_path(self) -> Path:
        return self._engine.path

    def chat(
        self,
        ctx: ChatContext,
        tools: Sequence[FunctionTool] = (),
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> LlamaChatStream:
        msgs = tuple(ctx.messages)
        since_user = _since_last_user(msgs)
        steps = sum(1 for m in since_user if m.role == "assistant" and m.tool_calls)
        self._last_tools = tuple(tools)
        req = Request(
            messages=msgs,
            tools=tuple(tools),
            temperature=self.options.temperature if temperature is None else temperature,
            max_tokens=self.options.max_tokens if max_tokens is None else max_tokens,
            allow_tools=bool(tools) and steps < self.max_tool_steps,
            gate=bool(msgs) and msgs[-1].role == "user",
        )
        return LlamaChatStream(self, req)

    async def end_of_turn_logprob(self, ctx: ChatContext, user_text: str, *,
                                  tools: Sequence[FunctionTool] | None = None,
                                  reply_text: str | None = None) -> float:
        """log P(end of turn) right after ``user_text`` as a new user turn after ``ctx``.

        For text without a final ``.?!`` it is log P(end of turn or a sentence end).

        ``ctx`` is the conversation before this user turn. The prefix is shared
        with generation's KV cache (``tools`` default to those of the last
        :meth:`chat`, so the system prompt matches), and the user's text stays
        cached for the reply that follows. With ``reply_text`` (the user message
        a reply may answer next, of which ``user_text`` is the start) the whole
        prompt of that reply is evaluated in the same batch, so the reply starts
        sampling at once. Empty text gives -inf.
        """
        if not user_text.strip():
            return -math.inf
        tools = self._last_tools if tools is None else tuple(tools)
        return await self._thread.run(self._eot_sync, tuple(ctx.messages), user_text, tools, reply_text)

    def _eot_sync(self, msgs: tuple[ChatMessage, ...], user_text: str, tools: tuple[FunctionTool, ...],
                  reply_text: str | None) -> float:
        eng = self._engine
        turn = self.template.user_turn_prefix(msgs, user_text, tools)
        end_token = eng.tokenize(turn.turn_end)[0]
        probe = self._turn_tokens(msgs, user_text, tools)
        logprobs = None if reply_text is None else self._with_reply(msgs, probe, reply_text, tools)
        if logprobs is None:
            eng.prefill(probe)
            logprobs = eng.logprobs()
        ids = [end_token]
        if user_text.rstrip()[-1:] not in _TERMINAL:
            # Unpunctuated text (STT output often is): a sentence end next counts as an end too,
            # or "who painted the Mona Lisa" would look unfinished for want of its "?".
            ids += [t for p in _TERMINAL if len(t_ := eng.tokenize(p)) == 1 for t in t_]
        return float(np.logaddexp.reduce(logprobs[ids].astype(np.float64)))

    def _with_reply(self, msgs: tuple[ChatMessage, ...], probe: list[int], reply_text: str,
                    tools: tuple[FunctionTool, ...]) -> npt.NDArray[np.float32] | None:
        """The reply's prompt (as :meth:`chat` will ask for it) evaluated in one batch with the
        probe's logits at its end; None when the probe is not the start of that prompt."""
        messages = (*msgs, ChatMessage("user", reply_text))
        reserve = self._gen.reply_reserve(self.options.max_tokens)
        prompt = self._gen.fit(messages, tools, reserve, lambda ms: self.template.render(ms, tools))
        if prompt[: len(probe)] != probe:
            return None
        return self._engine.prefill_marked(prompt, len(probe) - 1)

    async def prepare_turn(self, ctx: ChatContext, user_text: str) -> bool:
        """Evaluate the words of a user turn heard so far (after ``ctx``) into the KV cache while
        the thread is idle, so that the end-of-turn probe and the reply that follow the final
        transcript evaluate only what is new. False when the thread was busy (nothing done)."""
        if self._thread.busy or not user_text.strip():
            return False
        tools = self._last_tools

        def run() -> None:
            self._engine.prefill(self._turn_tokens(tuple(ctx.messages), user_text, tools))

        await self._thread.run(run)
        return True

    def _turn_tokens(self, msgs: tuple[ChatMessage, ...], user_text: str,
                     tools: tuple[FunctionTool, ...]) -> list[int]:
        """The prompt up to the end of ``user_text`` as a new user turn after ``msgs`` (fitted)."""

        def render(ms: list[ChatMessage]) -> str:
            return self.template.user_turn_prefix(ms, user_text, tools).prompt

        return self._gen.fit(msgs, tools, 1, render)

    async def prefill(self, ctx: ChatContext, tools: Sequence[FunctionTool] = ()) -> int:
        """Evaluate ``ctx`` (the system prompt before the first turn, the history after a reply)
        into the KV cache, so that the next turn evaluates only what is new.

        The prompt is fitted as the next turn's will be, with :data:`NEXT_TURN_TOKENS` more room:
        a history that would not leave room for another turn is cut now, while the device is
        idle, not when the user has asked (a cut evaluates half the window again). Returns the
        number of tokens now cached.
        """
        self._last_tools = tuple(tools)
        reserve = self._gen.reply_reserve(self.options.max_tokens) + NEXT_TURN_TOKENS

        def run() -> int:
            def render(ms: list[ChatMessage]) -> str:
                return self.template.render(ms, tools, add_generation_prompt=False)

            tokens = self._gen.fit(ctx.messages, tools, reserve, render)
            return self._engine.prefill(tokens) if tokens else 0

        await self._thread.run(run)
        return self._engine.n_tokens

    async def aclose(self) -> None:
        """Free the model (after the job in progress). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._thread.run(self._engine.close)
        self._thread.shutdown()


def _since_last_user(msgs: Sequence[ChatMessage]) -> Sequence[ChatMessage]:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role == "user":
            return msgs[i + 1:]
    return msgs


class LlamaChatStream(StageStream[None, ChatChunk]):
    """One reply being generated; started by :meth:`LlamaLLM.chat`, takes no input."""

    def __init__(self, llm: LlamaLLM, req: Request) -> None:
        self._llm = llm
        self._req = req
        self._cancel = threading.Event()
        self._stats = Stats()
        self._t0 = time.perf_counter()
        super().__init__()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatChunk | BaseException | None] = asyncio.Queue()

        def hand_over(item: ChatChunk | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                self._cancel.set()

        def job() -> None:
            try:
                self._llm._gen.run(self._req, hand_over, self._cancel, self._stats)
            except BaseException as exc:
                hand_over(exc)
            finally:
                hand_over(None)

        ttft: float | None = None
        finished = False
        done = asyncio.ensure_future(self._llm._thread.run(job))
        getter: asyncio.Future[ChatChunk | BaseException | None] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():  # the job never ran: the stage was closed
                    getter.cancel()
                    cause = None if done.cancelled() else done.exception()
                    raise LLMError("the LLM stage is closed") from cause
                item = getter.result()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, LLMError):
                        raise item
                    raise LLMError(f"llama.cpp generation failed: {item}", retryable=True) from item
                if ttft is None:
                    ttft = time.perf_counter() - self._t0
                self._emit(item)
        finally:
            self._cancel.set()
            if getter is not None:
                getter.cancel()
            duration = time.perf_counter() - self._t0
            st = self._stats
            self._llm._report(LLMMetrics(
                provider=self._llm.provider, ttft_s=duration if ttft is None else ttft, duration_s=duration,
                prompt_tokens=st.prompt_tokens, cached_tokens=st.cached_tokens,
                completion_tokens=st.completion_tokens, cancelled=not finished,
            ))
