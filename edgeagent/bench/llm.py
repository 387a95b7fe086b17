"""LLM stage benchmark (target: first token <= 150 ms for a 200-token prompt
whose unchanged prefix, the system prompt and earlier turns, is already in the KV cache).

A conversation of about 200 tokens (system prompt and three earlier exchanges) is
evaluated once; then, for each run, the cache is cut back to exactly that prefix,
a new user question is added, and the time from ``chat()`` to the first text
chunk is measured. Medians over several runs after warm-up. Also: tokens/s of
generation, first token with nothing cached, and the cost of the end-of-turn probe
that the semantic turn detector runs on a cached prefix.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.bench import p90
from edgeagent.llm.chat import ChatContext
from edgeagent.llm.llama import LlamaLLM
from edgeagent.metrics import LLMMetrics

TARGET_FIRST_TOKEN_MS = 150.0

SYSTEM = (
    "You are a friendly voice assistant running on a small device in the living room. "
    "Keep your answers short, one or two sentences, and speak plainly. "
    "If you do not know something, say so."
)
HISTORY = (
    ("Good morning! Can you hear me?", "Good morning! Yes, I can hear you clearly. How can I help?"),
    ("What's a good breakfast before a long walk?",
     "Oatmeal with fruit and a glass of water will keep you going for a long walk."),
    ("How long does it take to boil an egg?",
     "About seven minutes for a firm yolk, or five minutes if you like it soft."),
    ("Thanks. Will it rain today?", "I can't check the weather from here, so take an umbrella to be safe."),
)
QUESTIONS = (
    "Why is the sky blue?",
    "Name three primary colors.",
    "Can dogs see colors?",
    "Tell me a fun fact about octopuses.",
    "Which planet is the largest?",
    "Suggest a name for a cat.",
    "Is a tomato a fruit?",
    "Explain what a rainbow is.",
    "Recommend a short book to read.",
    "Do fish sleep at night?",
    "Give me a tip for better sleep.",
)


def _history() -> ChatContext:
    ctx = ChatContext()
    ctx.add("system", SYSTEM)
    for user, assistant in HISTORY:
        ctx.add("user", user)
        ctx.add("assistant", assistant)
    return ctx


async def _turn(llm: LlamaLLM, ctx: ChatContext, max_tokens: int) -> tuple[float, float, LLMMetrics]:
    """Seconds from chat() to the first text chunk at the consumer, the process CPU
    seconds spent meanwhile (all threads), and the reply's metrics."""
    got: list[LLMMetrics] = []

    def listen(m: object) -> None:
        if isinstance(m, LLMMetrics):
            got.append(m)

    llm.on_metrics(listen)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        first = cpu = 0.0
        stream = llm.chat(ctx, max_tokens=max_tokens)

        async def consume() -> None:
            nonlocal first, cpu
            async for chunk in stream:
                if chunk.text and not first:
                    first, cpu = time.perf_counter() - t0, time.process_time() - c0

        await wait_for(consume(), 120)
    finally:
        llm._metric_listeners.remove(listen)
    if not first:
        raise RuntimeError("the LLM gave no text")
    return first, cpu, got[-1]


async def _measure(llm: LlamaLLM, runs: int, warmup: int, max_tokens: int) -> dict[str, float]:
    base = _history()
    ttft: list[float] = []
    cpu: list[float] = []
    rates: list[float] = []
    prompt = cached = 0
    for i in range(warmup + runs):
        await llm.prefill(base)  # cut the cache back to exactly the history
        ctx = base.copy()
        ctx.add("user", QUESTIONS[i % (len(QUESTIONS) - 1)])
        first, used, m = await _turn(llm, ctx, max_tokens)
        if i >= warmup:
            ttft.append(first)
            cpu.append(used)
            rates.append(m.tokens_per_s)
            prompt, cached = m.prompt_tokens, m.cached_tokens
    # (nearly) cold: the cache holds another conversation; only "<|im_start|>system" is shared
    other = ChatContext()
    other.add("user", "Hi")
    await llm.prefill(other)
    cold_ctx = base.copy()
    cold_ctx.add("user", QUESTIONS[-1])
    cold, _, cold_m = await _turn(llm, cold_ctx, max_tokens)
    eot = []
    for q in QUESTIONS[:runs]:
        await llm.prefill(base)
        t0 = time.perf_counter()
        await wait_for(llm.end_of_turn_logprob(base, q), 60)
        eot.append(time.perf_counter() - t0)
    return {
        "llm_first_token_ms": 1000 * statistics.median(ttft),
        "llm_first_token_p90_ms": 1000 * p90(ttft),
        "llm_first_token_cpu_ms": 1000 * statistics.median(cpu),
        "llm_tokens_per_s": statistics.median(rates),
        "llm_prompt_tokens": float(prompt),
        "llm_cached_tokens": float(cached),
        "llm_cold_first_token_ms": 1000 * cold,
        "llm_cold_cached_tokens": float(cold_m.cached_tokens),
        "llm_end_of_turn_ms": 1000 * statistics.median(eot),
    }


def bench(runs: int = 9, warmup: int = 2, max_tokens: int = 48, **options: Any) -> dict[str, float]:
    """Measure the default LLM (options go to :class:`LlamaLLM`).

    Returns ``llm_first_token_ms`` (median, the target figure),
    ``llm_first_token_p90_ms``, ``llm_first_token_cpu_ms`` (process CPU time,
    all threads, spent until the first token: the work itself, whatever else the
    machine is doing; about n_threads × the wall time on an idle machine),
    ``llm_tokens_per_s`` (generation after the first
    token), ``llm_prompt_tokens`` and ``llm_cached_tokens`` of the measured
    prompt, ``llm_cold_first_token_ms`` (same prompt size, nothing but the first tokens cached) and
    ``llm_end_of_turn_ms`` (the semantic turn detector's probe on a cached prefix).
    """

    async def main() -> dict[str, float]:
        llm = LlamaLLM(**{"temperature": 0.0, **options})
        try:
            return await _measure(llm, runs, warmup, max_tokens)
        finally:
            await llm.aclose()

    return asyncio.run(main())


if __name__ == "__main__":
    for key, value in bench().items():
        print(f"{key:28s} {value:8.2f}")
