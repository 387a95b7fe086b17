"""The llama.cpp LLM stage with the packaged SmolLM2-135M-Instruct (real model, no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edgeagent.errors import ModelError
from edgeagent.llm import toolcall
from edgeagent.llm.chat import ChatChunk, ChatContext, ChatMessage, Role, ToolCall
from edgeagent.llm.llama import NEXT_TURN_TOKENS, LlamaLLM
from edgeagent.llm.llama_engine import Utf8Stream
from edgeagent.llm.prompt import template_for
from edgeagent.llm.tools import FunctionTool, function_tool
from edgeagent.metrics import LLMMetrics
from edgeagent.registry import create

# A voice-assistant system prompt; SmolLM2-135M answers factual questions
# reliably with it (with its default "named SmolLM" prompt it does not).
SYSTEM = "You are a friendly voice assistant running on a small device. Keep your answers short."
TIMEOUT = 120.0


@function_tool
def set_light(on: bool) -> str:
    """Turn the room light on or off.

    Args:
        on: true to switch the light on.
    """
    return "The light is now on." if on else "The light is now off."


@pytest.fixture(scope="module")
def llm() -> Iterator[LlamaLLM]:
    model = create("llm", "llama", temperature=0.0)
    assert isinstance(model, LlamaLLM)
    yield model
    asyncio.run(model.aclose())


@pytest.fixture()
def metrics(llm: LlamaLLM) -> Iterator[list[LLMMetrics]]:
    got: list[LLMMetrics] = []

    def listen(m: object) -> None:
        if isinstance(m, LLMMetrics):
            got.append(m)

    llm.on_metrics(listen)
    yield got
    llm._metric_listeners.remove(listen)


def conversation(*user_turns: str) -> ChatContext:
    ctx = ChatContext()
    ctx.add("system", SYSTEM)
    for text in user_turns:
        ctx.add("user", text)
    return ctx


async def collect(llm: LlamaLLM, ctx: ChatContext, tools: tuple[FunctionTool, ...] = (),
                  **kw: int) -> tuple[str, list[ToolCall], list[ChatChunk]]:
    async def run() -> list[ChatChunk]:
        return [c async for c in llm.chat(ctx, tools, **kw)]

    chunks = await asyncio.wait_for(run(), TIMEOUT)
    text = "".join(c.text for c in chunks)
    calls = [call for c in chunks for call in c.tool_calls]
    return text, calls, chunks


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the capital of France?", ("paris",)),
        ("What is the capital of Japan?", ("tokyo",)),
        ("How many legs does a spider have?", ("8", "eight")),
    ],
)
async def test_answers_a_short_question(llm: LlamaLLM, metrics: list[LLMMetrics], question: str,
                                        expected: tuple[str, ...]) -> None:
    text, calls, chunks = await collect(llm, conversation(question))
    assert any(word in text.lower() for word in expected), text
    assert not calls
    assert len(chunks) > 1, "the reply should stream in several deltas"
    assert text == text.strip()
    (m,) = metrics
    assert m.provider == "llama" and not m.cancelled
    assert m.prompt_tokens > 10 and m.completion_tokens >= len(chunks)
    assert 0 < m.ttft_s <= m.duration_s


async def test_calls_the_light_tool_then_answers_with_its_result(llm: LlamaLLM) -> None:
    ctx = conversation("Turn on the light.")
    text, calls, _ = await collect(llm, ctx, (set_light,))
    assert text == "", "tool-call text must not be spoken"
    (call,) = calls
    assert call.name == "set_light"
    assert set_light.parse_arguments(call.arguments) == {"on": True}
    assert call.id

    ctx.add("assistant", tool_calls=(call,))
    ctx.add("tool", await set_light.call(call.arguments), tool_call_id=call.id)
    answer, more_calls, _ = await collect(llm, ctx, (set_light,))
    assert not more_calls
    assert "light" in answer.lower() and "<" not in answer, answer


async def test_tool_arguments_follow_the_request(llm: LlamaLLM) -> None:
    _, calls, _ = await collect(llm, conversation("Please switch the light off."), (set_light,))
    assert [set_light.parse_arguments(c.arguments) for c in calls] == [{"on": False}]


async def test_question_with_tools_available_is_answered_in_text(llm: LlamaLLM) -> None:
    text, calls, _ = await collect(llm, conversation("What is the capital of France?"), (set_light,))
    assert not calls
    assert "paris" in text.lower()


async def test_tool_steps_are_bounded(llm: LlamaLLM) -> None:
    saved = llm.max_tool_steps
    llm.max_tool_steps = 0
    try:
        text, calls, _ = await collect(llm, conversation("Turn on the light."), (set_light,), max_tokens=40)
    finally:
        llm.max_tool_steps = saved
    assert not calls
    assert text and "<tool_call>" not in text


async def test_tool_call_opened_mid_reply_is_not_spoken(llm: LlamaLLM) -> None:
    """Native mode (no gate): the model writes ``<tool_call>`` itself after some text.

    SmolLM2-135M does that when asked to copy one, which exercises the path a
    native tool caller (Qwen2.5) takes: text before the tag is spoken, the tag
    is held back, the call is finished under the grammar.
    """
    ctx = ChatContext()
    ctx.add("user", 'Copy this text exactly: "Okay. <tool_call>[{"name": "set_light", "arguments": {"on": true}}]'
                    '</tool_call>"')
    saved = llm._gen.settings.tool_margin
    llm._gen.settings.tool_margin = None
    try:
        text, calls, _ = await collect(llm, ctx, (set_light,))
    finally:
        llm._gen.settings.tool_margin = saved
    assert "Okay" in text and "<" not in text, text
    assert [(c.name, set_light.parse_arguments(c.arguments)) for c in calls] == [("set_light", {"on": True})]


def test_gguf_template_and_chatml_agree(llm: LlamaLLM) -> None:
    """SmolLM2's GGUF template is ChatML: our writer and the GGUF's own jinja template give the same prompt."""
    assert llm.template.format == "chatml"
    jinja = template_for(llm._engine.metadata, "jinja")
    ctx = conversation("Turn on the light.")
    call = ToolCall("call_1", "set_light", '{"on": true}')
    ctx.add("assistant", tool_calls=(call,))
    ctx.add("tool", "The light is now on.", tool_call_id="call_1")
    ctx.add("assistant", "Done.")
    assert jinja.render(ctx.messages, (set_light,)) == llm.template.render(ctx.messages, (set_light,))
    assert jinja.user_turn_prefix(ctx.messages, "Hi") == llm.template.user_turn_prefix(ctx.messages, "Hi")


async def test_aclose_stops_generation_within_100_ms(llm: LlamaLLM, metrics: list[LLMMetrics]) -> None:
    stream = llm.chat(conversation("Write a long story about a dragon and a knight."), max_tokens=400)
    first = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
    assert first.text
    t0 = time.perf_counter()
    await asyncio.wait_for(stream.aclose(), 5)
    took = time.perf_counter() - t0
    assert took < 0.1, f"aclose took {took * 1000:.0f} ms"
    assert [c async for c in stream] == []  # nothing more comes out
    # the worker finishes the token in flight (~10 ms here) and is free again
    t1 = time.perf_counter()
    await asyncio.wait_for(llm._thread.run(lambda: None), 5)
    idle = time.perf_counter() - t1
    assert idle < 0.5, f"the inference thread was busy {idle * 1000:.0f} ms after aclose"
    (m,) = metrics
    assert m.cancelled
    in_cache = llm._gen.engine.n_tokens
    await asyncio.sleep(0.2)
    assert llm._gen.engine.n_tokens == in_cache <= m.prompt_tokens + m.completion_tokens + 1, m


async def test_second_turn_reuses_the_kv_cache(llm: LlamaLLM, metrics: list[LLMMetrics]) -> None:
    ctx = conversation("What is the capital of Italy?")
    text, _, _ = await collect(llm, ctx)
    ctx.add("assistant", text)
    ctx.add("user", "And what is the capital of Japan?")
    text2, _, _ = await collect(llm, ctx)
    assert "tokyo" in text2.lower()
    first, second = metrics
    assert second.cached_tokens >= first.prompt_tokens, (first, second)
    assert second.prompt_tokens > second.cached_tokens


async def test_end_of_turn_logprob_separates_finished_from_cut_off(llm: LlamaLLM) -> None:
    ctx = conversation()
    done = await asyncio.wait_for(llm.end_of_turn_logprob(ctx, "How many legs does a spider have?"), TIMEOUT)
    cut = await asyncio.wait_for(llm.end_of_turn_logprob(ctx, "How many legs does a"), TIMEOUT)
    assert done > -3.0, done
    assert cut < -6.0, cut
    assert done - cut > 6.0
    # Unpunctuated (as STT output often is): a sentence end next counts as finished.
    bare = await asyncio.wait_for(llm.end_of_turn_logprob(ctx, "who painted the Mona Lisa"), TIMEOUT)
    open_ended = await asyncio.wait_for(llm.end_of_turn_logprob(ctx, "tell me about"), TIMEOUT)
    assert bare > -3.0 > -6.0 > open_ended, (bare, open_ended)
    assert await llm.end_of_turn_logprob(ctx, "   ") == -math.inf


async def test_end_of_turn_probe_keeps_generation_intact(llm: LlamaLLM, metrics: list[LLMMetrics]) -> None:
    question = "What is the capital of Japan?"
    before, _, _ = await collect(llm, conversation(question))
    for partial in ("What is the", "What is the capital of Japan?", "Something else entirely."):
        await asyncio.wait_for(llm.end_of_turn_logprob(conversation(), partial), TIMEOUT)
    after, _, _ = await collect(llm, conversation(question))
    assert after == before
    assert metrics[-1].cached_tokens > 0


async def test_the_probe_evaluates_the_reply_prompt_in_the_same_batch(llm: LlamaLLM,
                                                                      metrics: list[LLMMetrics]) -> None:
    """With ``reply_text`` the probe's answer is the same, and the reply that follows finds its
    whole prompt cached with the logits after it: it evaluates nothing before its first token,
    and says what it says without the probe."""
    question = "What is the capital of Japan?"
    before, _, _ = await collect(llm, conversation(question))
    words = "What is the capital of Japan"
    alone = await asyncio.wait_for(llm.end_of_turn_logprob(conversation(), words), TIMEOUT)
    await asyncio.wait_for(llm.prepare_turn(conversation(), "What is the capital"), TIMEOUT)
    both = await asyncio.wait_for(llm.end_of_turn_logprob(conversation(), words, reply_text=question), TIMEOUT)
    assert both == pytest.approx(alone, abs=0.05)
    after, _, _ = await collect(llm, conversation(question))
    assert after == before
    assert metrics[-1].cached_tokens == metrics[-1].prompt_tokens, metrics[-1]
    # A reply to other words does not take that prompt's logits for its own.
    other = "What is the capital of France?"
    await asyncio.wait_for(llm.end_of_turn_logprob(conversation(), words, reply_text=question), TIMEOUT)
    text, _, _ = await collect(llm, conversation(other))
    assert "paris" in text.lower() and metrics[-1].cached_tokens < metrics[-1].prompt_tokens


async def test_a_dropped_reply_leaves_no_trace_in_the_next_one() -> None:
    """A reply begun and dropped (a preemptive reply to a fragment) changes nothing: the next
    reply to a prompt is the one it would have been, sampled (temperature > 0) or not, and the
    KV cache then holds that prompt and reply, not the dropped tokens."""
    sampled = create("llm", "llama", temperature=0.7)
    assert isinstance(sampled, LlamaLLM)
    try:
        question = conversation("Tell me a fun fact about cats.")
        clean, _, _ = await collect(sampled, question, max_tokens=24)
        stream = sampled.chat(conversation("What is the capital of"), max_tokens=200)
        for _ in range(5):
            await asyncio.wait_for(stream.__anext__(), TIMEOUT)
        await asyncio.wait_for(stream.aclose(), 5)
        again, _, _ = await collect(sampled, question, max_tokens=24)
        assert again == clean
        engine = sampled._gen.engine
        prompt = engine.tokenize(sampled.template.render(question.messages, (), add_generation_prompt=True))
        assert engine._tokens[: len(prompt)] == prompt
    finally:
        await asyncio.wait_for(sampled.aclose(), 30)


async def test_empty_input_and_empty_reply(llm: LlamaLLM, metrics: list[LLMMetrics]) -> None:
    text, calls, _ = await collect(llm, conversation(""), max_tokens=24)
    assert isinstance(text, str) and not calls
    text, calls, chunks = await collect(llm, conversation("Say something."), max_tokens=0)
    assert chunks == []
    assert len(metrics) == 2 and metrics[1].completion_tokens == 0 and not metrics[1].cancelled


@contextlib.asynccontextmanager
async def small_llm() -> AsyncIterator[tuple[LlamaLLM, list[LLMMetrics]]]:
    """A model with a 384-token context (a few turns fill it) and the metrics of its replies."""
    small = LlamaLLM(n_ctx=384, temperature=0.0, max_tokens=32)
    got: list[LLMMetrics] = []
    small.on_metrics(lambda m: got.append(m) if isinstance(m, LLMMetrics) else None)
    try:
        yield small, got
    finally:
        await small.aclose()


async def test_long_conversation_is_trimmed_to_the_window(metrics: list[LLMMetrics]) -> None:
    async with small_llm() as (small, got):
        ctx = conversation()
        for i in range(12):
            ctx.add("user", f"Tell me something about the number {i}, in one sentence please.")
            ctx.add("assistant", f"The number {i} comes after {i - 1} and before {i + 1}; it is a whole number.")
        ctx.add("user", "What is the capital of France?")
        text, _, _ = await collect(small, ctx)
        assert "paris" in text.lower()
        assert got[-1].prompt_tokens <= 384 - 32


async def test_a_history_that_slides_keeps_its_prompt_cached(llm: LlamaLLM, metrics: list[LLMMetrics]) -> None:
    """A session keeps its last MAX_HISTORY messages, dropping the oldest at each new one. A prompt
    from the oldest kept message changed right after the system prompt every turn, and each reply
    evaluated the whole history again (scripts/soak: the first reply's wait went from ~0.1 s to
    ~5 s once 64 messages were reached). From where the history slid, the prompt starts half way
    through it and keeps that start: a turn evaluates only what is new, but for one re-cut when
    that start is dropped in turn. The caller here keeps 16 messages: the session's 64 give the
    same arithmetic in four times the turns."""
    keep = 16
    history: list[ChatMessage] = []

    def add(role: Role, text: str) -> None:  # as Conversation.add does
        history.append(ChatMessage(role, text))
        del history[:-keep]

    for i in range(keep // 2 + 6):
        add("user", f"Number {i}?")
        ctx = conversation()
        ctx.messages.extend(history)
        await collect(llm, ctx, max_tokens=1)
        add("assistant", f"It is {i}.")
    slid = metrics[keep // 2:]  # the turns after the history was full
    recut = [m for m in slid if m.prompt_tokens - m.cached_tokens > 40]
    assert 1 <= len(recut) <= 2, [(m.prompt_tokens, m.cached_tokens) for m in slid]


@pytest.mark.parametrize("ready", [True, False], ids=["readied", "control"])
async def test_a_history_readied_after_each_reply_is_cut_before_the_next_question(ready: bool) -> None:
    """After each reply the session evaluates the history ahead of the next turn (prefill): a
    history that leaves no room for another turn is cut then, while nobody waits, so no question
    waits for half the window to be evaluated again (4.5-9 s at each cut of the 60-minute soak).
    The control, with no prefill between turns, shows such a cut lands on a question."""
    async with small_llm() as (small, got):
        ctx = conversation()
        for i in range(16):
            ctx.add("user", f"Tell me about the number {i}.")
            await collect(small, ctx, max_tokens=1)
            ctx.add("assistant", f"The number {i} comes after {i - 1} and before {i + 1}.")
            if ready:
                assert await asyncio.wait_for(small.prefill(ctx), 60) <= 384 - 32 - NEXT_TURN_TOKENS
        evaluated = [m.prompt_tokens - m.cached_tokens for m in got]
        if ready:
            assert max(evaluated[1:]) <= 20, evaluated
        else:
            assert max(evaluated[1:]) > 60, evaluated


def test_model_file_that_fails_to_load_names_file_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError) as err:
        LlamaLLM(bad)
    assert str(bad) in str(err.value) and "edgeagent models pull" in str(err.value)
    with pytest.raises(ModelError, match="does not exist"):
        LlamaLLM(tmp_path / "missing.gguf")


def test_utf8_split_across_tokens_comes_out_whole() -> None:
    data = "café 🙂".encode()
    stream = Utf8Stream()
    out = "".join(stream.feed(data[i:i + 1]) for i in range(len(data))) + stream.finish()
    assert out == "café 🙂"


def test_tool_call_text_parsing() -> None:
    calls = toolcall.parse_calls('[{"name": "set_light", "arguments": {"on": true}}]</tool_call>', [set_light])
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("set_light", {"on": True})]
    single = toolcall.parse_calls('{"name": "set_light", "arguments": {"on": false}}', [set_light])
    assert json.loads(single[0].arguments) == {"on": False}
    assert toolcall.parse_calls('[{"name": "open_door", "arguments": {}}]', [set_light]) == []
    assert toolcall.parse_calls('[{"name": "set_light", "arguments": {"on": 3}}]', [set_light]) == []
    assert toolcall.parse_calls("[]", [set_light]) == []
    grammar = toolcall.grammar([set_light])
    assert '"\\"set_light\\""' in grammar and "root ::=" in grammar
