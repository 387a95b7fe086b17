"""Cloud LLM over the OpenAI-compatible chat completions API (streamed, with tools).

Works with any server that speaks ``POST {base_url}/chat/completions`` with
``stream: true``: OpenAI, llama.cpp's and llama-cpp-python's servers, vLLM,
Ollama's ``/v1``, and most hosted gateways. Text deltas come out as they
arrive; tool calls are assembled from their deltas and come out complete when
the model finishes its round, as the local provider does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeagent.cloud.http import CloudError, CloudHTTP, sse_events
from edgeagent.cloud.provider import CloudProvider, connection_options
from edgeagent.llm.base import LLM, LLMOptions
from edgeagent.llm.chat import ChatChunk, ChatContext, ToolCall
from edgeagent.llm.tools import FunctionTool
from edgeagent.metrics import LLMMetrics
from edgeagent.stage import StageStream

if TYPE_CHECKING:
    from edgeagent.config import Config


class OpenAILLM(CloudProvider, LLM):
    """Registry name ``openai``.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the model name the server expects.
        api_key: sent as a Bearer token (None: no Authorization header).
        first_byte_s: the server must start its answer within this (see :mod:`edgeagent.cloud.http`).
        total_s: the whole reply must be done within this.
        connect_s: TCP/TLS connect limit.
        tool_choice: sent as ``tool_choice`` when tools are given ("auto", "required", or
            ``{"type": "function", "function": {"name": ...}}``); None leaves it to the server.
    """

    provider = "openai"

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[cloud]``: ``llm_model`` at ``llm_base_url`` (else ``base_url``), its key and limits;
        ``[llm]``: ``temperature`` and ``max_tokens``."""
        c = cfg.cloud
        return {"model": c.llm_model, "temperature": cfg.llm.temperature, "max_tokens": cfg.llm.max_tokens,
                **connection_options(c, c.llm_base_url, c.llm_first_token_s)}

    def __init__(self, *, base_url: str, model: str, api_key: str | None = None, temperature: float = 0.2,
                 max_tokens: int = 256, first_byte_s: float = 5.0, total_s: float = 60.0,
                 connect_s: float = 3.0, tool_choice: str | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.options = LLMOptions(temperature=temperature, max_tokens=max_tokens)
        self.tool_choice = tool_choice
        self.model = model
        self.first_byte_s = first_byte_s
        self.http = CloudHTTP(base_url, api_key=api_key, connect_s=connect_s, total_s=total_s)

    def chat(self, ctx: ChatContext, tools: Sequence[FunctionTool] = (), *, temperature: float | None = None,
             max_tokens: int | None = None) -> StageStream[None, ChatChunk]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": ctx.to_openai(),
            "stream": True,
            "temperature": self.options.temperature if temperature is None else temperature,
            "max_tokens": self.options.max_tokens if max_tokens is None else max_tokens,
        }
        if tools:
            body["tools"] = [t.schema() for t in tools]
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        return OpenAIChatStream(self, body)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIChatStream(StageStream[None, ChatChunk]):
    """One streamed reply; raises CloudError on any failure (the fallback chain decides what next)."""

    def __init__(self, llm: OpenAILLM, body: dict[str, Any]) -> None:
        self._llm = llm
        self._body = body
        super().__init__()

    async def _run(self) -> None:
        llm = self._llm
        t0 = time.perf_counter()
        ttft: float | None = None
        completion = prompt = 0
        calls: dict[int, _PartialCall] = {}
        finished = False
        try:
            async with llm.http.post("chat/completions", json=self._body, first_byte_s=llm.first_byte_s) as resp:
                async for event in sse_events(resp):
                    usage = event.get("usage") or {}
                    prompt = int(usage.get("prompt_tokens", prompt) or prompt)
                    choices = event.get("choices") or []
                    if not choices:
                        continue
                    delta = choices[0].get("delta") or {}
                    if not isinstance(delta, dict):
                        raise CloudError(f"{resp.url}: malformed delta {delta!r}", reason="bad-response")
                    text = delta.get("content") or ""
                    for tc in delta.get("tool_calls") or []:
                        _add_call_delta(calls, tc)
                    if text:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        completion += 1
                        self._emit(ChatChunk(text=text))
            if calls:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                self._emit(ChatChunk(tool_calls=tuple(_finish_call(c) for _, c in sorted(calls.items()))))
            finished = True
        finally:
            duration = time.perf_counter() - t0
            llm._report(LLMMetrics(provider=llm.provider, ttft_s=duration if ttft is None else ttft,
                                   duration_s=duration, prompt_tokens=prompt, cached_tokens=0,
                                   completion_tokens=completion, cancelled=not finished))


def _add_call_delta(calls: dict[int, _PartialCall], tc: Any) -> None:
    if not isinstance(tc, dict):
        raise CloudError(f"malformed tool call delta {tc!r}", reason="bad-response")
    part = calls.setdefault(int(tc.get("index", len(calls))), _PartialCall())
    part.id = tc.get("id") or part.id
    fn = tc.get("function") or {}
    part.name = fn.get("name") or part.name
    if fn.get("arguments"):
        part.arguments.append(fn["arguments"] if isinstance(fn["arguments"], str) else json.dumps(fn["arguments"]))


def _finish_call(part: _PartialCall) -> ToolCall:
    if not part.name:
        raise CloudError("a streamed tool call has no function name", reason="bad-response")
    return ToolCall(id=part.id or f"call_{uuid.uuid4().hex[:12]}", name=part.name,
                    arguments="".join(part.arguments) or "{}")
