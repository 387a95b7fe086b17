"""Cloud LLM and LLM failover, against llama-cpp-python's own OpenAI-compatible server on 127.0.0.1.

The server (``python -m llama_cpp.server``, the packaged SmolLM2) starts once for the
module. Faults come from :class:`tests.cloud_servers.FaultProxy` in front of it: a
stall before the first token, 500, 429, the connection cut mid-reply, the port
closed; and a host name that does not resolve. Each time the reply comes from the
local llama.cpp model, soon after the cloud's deadline, and the cloud provider is
used again once it recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from cloud_servers import MODEL_NAME, FaultProxy, LlamaServer, start_llama_server

from edgeagent.cloud.http import CloudError
from edgeagent.cloud.openai_llm import OpenAILLM
from edgeagent.config.cloud import CloudConfig
from edgeagent.fallback.build import apply_cloud, swap_local
from edgeagent.fallback.chain import Chain, FallbackEvent, Member
from edgeagent.fallback.llm import FallbackLLM
from edgeagent.fallback.policy import Connectivity
from edgeagent.llm.base import LLMOptions
from edgeagent.llm.chat import ChatChunk, ChatContext
from edgeagent.llm.llama import LlamaLLM
from edgeagent.llm.tools import function_tool
from edgeagent.metrics import LLMMetrics

SYSTEM = "You are a friendly voice assistant running on a small device. Keep your answers short."
DEADLINE = 2.0
"""The cloud's first-token deadline here (the bench measures the 1 s default)."""
TIMEOUT = 60.0
SLACK = 3.0
"""Allowance for a loaded 2-core CI machine on top of deadline + local first token."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    srv = start_llama_server(tmp_path_factory.mktemp("llama-server"))

    async def warm() -> None:  # the first request evaluates the system prompt: slow
        llm = OpenAILLM(base_url=srv.base_url, model=MODEL_NAME, max_tokens=2)
        try:
            await collect(llm.chat(question()))
        finally:
            await llm.aclose()

    asyncio.run(warm())
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local() -> Iterator[LlamaLLM]:
    llm = LlamaLLM(temperature=0.0, max_tokens=40)
    yield llm
    asyncio.run(llm.aclose())


def question(text: str = "What is the capital of France?") -> ChatContext:
    ctx = ChatContext()
    ctx.add("system", SYSTEM)
    ctx.add("user", text)
    return ctx


async def collect(stream: object) -> list[ChatChunk]:
    async def run() -> list[ChatChunk]:
        try:
            return [c async for c in stream]  # type: ignore[attr-defined]
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    return await asyncio.wait_for(run(), TIMEOUT)


def chain_of(cloud: OpenAILLM, local: LlamaLLM, policy: str = "cloud-first", probe_s: float = 0.3,
             connectivity: Connectivity | None = None) -> tuple[FallbackLLM, list[FallbackEvent]]:
    chain = Chain("llm", [Member(local, 30.0, cloud=False), Member(cloud, DEADLINE, cloud=True)],
                  policy=policy, probe_interval_s=probe_s, connectivity=connectivity)
    events: list[FallbackEvent] = []
    chain.on_event(events.append)
    return FallbackLLM(chain), events


async def stop(llm: FallbackLLM, cloud: OpenAILLM, proxy: FaultProxy | None = None) -> None:
    """Stop the chain's probes and the cloud client (the local model is the module's)."""
    for m in llm.chain.members:
        if m.probe_task is not None:
            m.probe_task.cancel()
    await cloud.aclose()
    if proxy is not None:
        await proxy.aclose()


# -- the provider itself ----------------------------------------------------------------


async def test_streams_a_reply_from_the_real_server(server: LlamaServer) -> None:
    llm = OpenAILLM(base_url=server.base_url, model=MODEL_NAME, temperature=0.0, max_tokens=24)
    metrics: list[LLMMetrics] = []
    llm.on_metrics(lambda m: metrics.append(m))  # type: ignore[arg-type]
    try:
        chunks = await collect(llm.chat(question()))
        text = "".join(c.text for c in chunks)
        assert len(chunks) > 1, "the reply must stream in pieces"
        assert "paris" in text.lower(), text
        assert metrics and metrics[-1].provider == "openai" and metrics[-1].completion_tokens > 1
        assert not metrics[-1].cancelled
        # the connection is reused: a second request on the same pool
        again = await collect(llm.chat(question("Say hello.")))
        assert "".join(c.text for c in again).strip()
    finally:
        await llm.aclose()


async def test_streamed_tool_calls_come_out_whole(server: LlamaServer) -> None:
    @function_tool
    def set_light(on: bool) -> str:
        """Turn the room light on or off.

        Args:
            on: true to switch the light on.
        """
        return "ok"

    llm = OpenAILLM(base_url=server.base_url, model=MODEL_NAME, temperature=0.0, max_tokens=40,
                    tool_choice={"type": "function", "function": {"name": "set_light"}})
    try:
        chunks = await collect(llm.chat(question("Turn on the light."), [set_light]))
        calls = [c for chunk in chunks for c in chunk.tool_calls]
        assert len(calls) == 1 and calls[0].name == "set_light" and calls[0].id, chunks
        assert set(set_light.parse_arguments(calls[0].arguments)) == {"on"}, calls[0].arguments
        # and the call goes back as an assistant message with tool_calls, its result as a tool message
        ctx = question("Turn on the light.")
        ctx.add("assistant", "", tool_calls=(calls[0],))
        ctx.add("tool", "The light is now on.", tool_call_id=calls[0].id)
        plain = OpenAILLM(base_url=server.base_url, model=MODEL_NAME, max_tokens=20)
        try:
            after = await collect(plain.chat(ctx))
        finally:
            await plain.aclose()
        assert "".join(c.text for c in after).strip(), "the server took the tool result and answered"
    finally:
        await llm.aclose()


async def test_a_wrong_key_is_a_clear_non_retryable_error(server: LlamaServer, tmp_path: Path) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    proxy.mode = "401"
    await proxy.up()
    llm = OpenAILLM(base_url=proxy.base_url, model=MODEL_NAME, api_key="sk-wrong")
    try:
        with pytest.raises(CloudError) as info:
            await collect(llm.chat(question()))
        assert info.value.reason == "auth" and not info.value.retryable
        assert "API key" in str(info.value)
    finally:
        await llm.aclose()
        await proxy.aclose()


async def test_a_malformed_stream_is_a_bad_response(server: LlamaServer) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    proxy.mode = "garbage"
    await proxy.up()
    llm = OpenAILLM(base_url=proxy.base_url, model=MODEL_NAME)
    try:
        with pytest.raises(CloudError) as info:
            await collect(llm.chat(question()))
        assert info.value.reason == "bad-response"
    finally:
        await llm.aclose()
        await proxy.aclose()


# -- failover ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "reason"), [
    ("stall", "stalled"), ("silent", "stalled"), ("500", "server"), ("429", "rate-limited"),
    ("garbage", "bad-response"), ("down", "unreachable"),
])
async def test_failover_to_local_and_back(server: LlamaServer, local: LlamaLLM, mode: str, reason: str) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    await proxy.up()
    cloud = OpenAILLM(base_url=proxy.base_url, model=MODEL_NAME, temperature=0.0, max_tokens=24)
    llm, events = chain_of(cloud, local)
    local_ttft: list[float] = []
    local.on_metrics(lambda m: local_ttft.append(m.ttft_s))  # type: ignore[attr-defined]
    try:
        # healthy: the cloud answers
        stream = llm.chat(question())
        assert "".join(c.text for c in await collect(stream)).strip()
        assert stream.served_by == cloud.label

        if mode == "down":
            await proxy.down()
        else:
            proxy.mode = mode
        t0 = time.monotonic()
        stream = llm.chat(question())
        first_at: list[float] = []

        async def read() -> str:
            out = []
            async for c in stream:
                first_at.append(time.monotonic()) if not first_at else None
                out.append(c.text)
            return "".join(out)

        text = await asyncio.wait_for(read(), TIMEOUT)
        await stream.aclose()
        assert text.strip(), "the local model must answer"
        assert stream.served_by == local.provider
        switched = [e for e in events if e.action == "switched"]
        assert switched and switched[-1].from_provider == cloud.label and switched[-1].to_provider == "llama"
        assert switched[-1].reason == reason, switched[-1]
        assert first_at[0] - t0 <= DEADLINE + local_ttft[-1] + SLACK

        # the next request does not wait for the dead cloud again
        chats = proxy.chats
        stream = llm.chat(question("Say hello."))
        await collect(stream)
        assert stream.served_by == local.provider and proxy.chats == chats

        # recovery: the probe brings the cloud back, and it serves again
        recovered = asyncio.Event()
        llm.chain.on_event(lambda e: recovered.set() if e.action == "recovered" else None)
        if mode == "down":
            await proxy.up()
        proxy.mode = "pass"
        await asyncio.wait_for(recovered.wait(), 20)
        stream = llm.chat(question())
        await collect(stream)
        assert stream.served_by == cloud.label
    finally:
        await stop(llm, cloud, proxy)


async def test_killed_mid_reply_the_local_model_finishes_it(server: LlamaServer, local: LlamaLLM) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    proxy.mode = "drop"
    proxy.drop_after = 4
    await proxy.up()
    cloud = OpenAILLM(base_url=proxy.base_url, model=MODEL_NAME, temperature=0.0, max_tokens=40)
    llm, events = chain_of(cloud, local)
    try:
        stream = llm.chat(question("Tell me about the city of Paris."))
        chunks = await collect(stream)
        assert stream.served_by == local.provider
        switched = [e for e in events if e.action == "switched"]
        assert [e.reason for e in switched] == ["dropped"], switched
        # some of the reply came from the cloud before the cut, the rest from the local model
        assert len(chunks) > 2 and "".join(c.text for c in chunks).strip()
    finally:
        await stop(llm, cloud, proxy)


async def test_dns_failure_fails_over(local: LlamaLLM) -> None:
    cloud = OpenAILLM(base_url="http://no-such-host.invalid/v1", model=MODEL_NAME)
    llm, events = chain_of(cloud, local, probe_s=60)
    try:
        stream = llm.chat(question())
        assert "".join(c.text for c in await collect(stream)).strip()
        assert stream.served_by == local.provider
        assert events[-1].reason in ("dns", "stalled"), events[-1]  # a resolver may hang rather than refuse
    finally:
        await stop(llm, cloud)


async def test_policies_order_the_providers(server: LlamaServer, local: LlamaLLM) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{server.port}")
    await proxy.up()
    cloud = OpenAILLM(base_url=proxy.base_url, model=MODEL_NAME, temperature=0.0, max_tokens=16)
    try:
        llm, _ = chain_of(cloud, local, policy="local-first")
        stream = llm.chat(question())
        await collect(stream)
        assert stream.served_by == local.provider and proxy.chats == 0

        llm.chain.set_policy("cloud-first")
        stream = llm.chat(question())
        await collect(stream)
        assert stream.served_by == cloud.label and proxy.chats == 1

        # cloud-when-online: the connectivity check decides, no deadline is spent while offline
        conn = Connectivity(proxy.base_url, interval_s=0.2, timeout_s=1.0)
        llm, _ = chain_of(cloud, local, policy="cloud-when-online", connectivity=conn)
        assert await conn.check()
        stream = llm.chat(question())
        await collect(stream)
        assert stream.served_by == cloud.label and proxy.chats == 2

        await proxy.down()
        assert not await conn.check()
        stream = llm.chat(question())
        await collect(stream)
        assert stream.served_by == local.provider and proxy.chats == 2
        await conn.aclose()
    finally:
        await cloud.aclose()
        await proxy.aclose()


async def test_hot_cloud_settings_and_reloads_reach_the_chain(local: LlamaLLM) -> None:
    cloud = OpenAILLM(base_url="http://127.0.0.1:9/v1", model="m", api_key="old")
    llm, _ = chain_of(cloud, local, policy="local-first")
    try:
        apply_cloud(SimpleNamespace(llm=llm), CloudConfig(policy="cloud-first", llm_first_token_s=0.7,
                                                         local_deadline_s=5.0, api_key="new"))
        assert llm.chain.policy == "cloud-first"
        assert [(m.cloud, m.deadline_s) for m in llm.chain.members] == [(False, 5.0), (True, 0.7)]
        assert cloud.http._headers["Authorization"] == "Bearer new"
        # a remote llm.temperature reaches every member
        before = local.options
        llm.options = LLMOptions(temperature=0.9, max_tokens=12)
        assert local.options == cloud.options == LLMOptions(temperature=0.9, max_tokens=12)
        local.options = before
        # a reload of [llm] replaces the local member and keeps the chain
        new = OpenAILLM(base_url="http://127.0.0.1:9/v1", model="other")
        use, retire, undo = swap_local(llm, new)
        assert use is llm and retire is local and llm.chain.members[0].stage is new
        undo()
        assert llm.chain.members[0].stage is local
        await new.aclose()
    finally:
        await stop(llm, cloud)
