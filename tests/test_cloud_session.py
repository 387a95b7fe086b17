"""``edgeagent run`` with ``[cloud]`` set: the config builds the chains, the session answers, metrics name the provider.

Each run is the real CLI in a subprocess (WAV in, WAV out) talking to servers on
127.0.0.1 in this process: llama-cpp-python's server as the cloud LLM, a server that
stalls after its headers, and the local realtime server of :mod:`realtime_server`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_servers import MODEL_NAME, LlamaServer, start_llama_server
from realtime_server import RealtimeServer
from speech import espeak, save, with_silence

from edgeagent import registry
from edgeagent.bench.failover import stalling_app
from edgeagent.cloud.speech_server import serve
from edgeagent.llm.llama import LlamaLLM
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS

RUN_TIMEOUT_S = 240.0
PROVIDER = re.compile(r"^metrics: .* llm_provider=(\S+)", re.M)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    srv = start_llama_server(tmp_path_factory.mktemp("llama-server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(with_silence(espeak("What is the capital of France?"), 0.5, 1.0),
                tmp_path_factory.mktemp("q") / "q.wav")


async def run(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    env.update(EDGEAGENT_CONFIG=os.devnull, OPENAI_API_KEY="")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "run", *args, "--set", "activation.mode=always",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_stalled_cloud_llm_is_left_for_the_local_one(question: Path, tmp_path: Path) -> None:
    app, held = stalling_app()
    runner, port = await serve(app)
    try:
        code, out, err = await run(
            "--input", str(question), "--output", str(tmp_path / "r.wav"), "--fast",
            "--set", "cloud.policy=cloud-first", "--set", "cloud.llm_model=gpt-stalled",
            "--set", f"cloud.llm_base_url=http://127.0.0.1:{port}/v1", "--set", "cloud.llm_first_token_s=1.5")
    finally:
        for ev in held:
            ev.set()
        await runner.cleanup()
    assert code == 0, out + err
    assert [ln for ln in out.splitlines() if ln.startswith("agent:") and ln[6:].strip()], out
    match = PROVIDER.search(out)
    assert match and match.group(1) == "llama", out
    assert "llm provider openai:gpt-stalled" in err and "stalled" in err, err


async def test_a_healthy_cloud_llm_answers_and_is_named(server: LlamaServer, question: Path,
                                                         tmp_path: Path) -> None:
    code, out, err = await run(
        "--input", str(question), "--output", str(tmp_path / "r.wav"), "--fast",
        "--set", "cloud.policy=cloud-first", "--set", f"cloud.llm_model={MODEL_NAME}",
        "--set", f"cloud.llm_base_url={server.base_url}", "--set", "cloud.llm_first_token_s=10")
    assert code == 0, out + err
    match = PROVIDER.search(out)
    assert match and match.group(1) == f"openai:{MODEL_NAME}@{server.base_url}", out
    assert "capital" in words(" ".join(ln for ln in out.splitlines() if ln.startswith("user:"))), out


@pytest.fixture(scope="module")
def speech_stages() -> Iterator[tuple[STT, LlamaLLM, TTS]]:
    stt: STT = registry.create("stt", "whisper", partials=False)
    llm = LlamaLLM(temperature=0.0, max_tokens=40)
    tts: TTS = registry.create("tts", "piper")
    yield stt, llm, tts
    for stage in (stt, llm, tts):
        asyncio.run(stage.aclose())


async def test_the_runner_talks_through_a_realtime_model(speech_stages: tuple[STT, LlamaLLM, TTS],
                                                         question: Path, tmp_path: Path) -> None:
    rt = RealtimeServer(*speech_stages)
    await rt.start()
    try:
        code, out, err = await run("--input", str(question), "--output", str(tmp_path / "r.wav"),
                                   "--set", f"cloud.realtime_url={rt.url}")
    finally:
        await rt.aclose()
    assert code == 0, out + err
    assert rt.of_type("session.update") and rt.of_type("input_audio_buffer.append"), rt.received[:5]
    assert {"capital", "france"} <= words(" ".join(ln for ln in out.splitlines() if ln.startswith("user:"))), out
    assert [ln for ln in out.splitlines() if ln.startswith("agent:") and ln[6:].strip()], out + err
    assert (tmp_path / "r.wav").stat().st_size > 10_000
