"""Real OpenAI-compatible servers on 127.0.0.1 for the cloud tests, and a proxy that breaks them on cue.

- :func:`start_llama_server`: llama-cpp-python's own server (``python -m llama_cpp.server``)
  with the packaged SmolLM2 model, in a subprocess.
- :class:`FaultProxy`: an aiohttp server in front of a real upstream that passes requests
  through, or stalls before the first byte, answers 500 or 429, drops the connection
  mid-reply, or stops listening, as the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from edgeagent.llm.llama_engine import default_model_path

MODEL_NAME = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_llama_server(log_dir: Path, port: int | None = None, timeout: float = 120.0) -> LlamaServer:
    """llama_cpp.server with the packaged model; returns once ``GET /v1/models`` answers.

    Its chat format is ``chatml-function-calling``: ChatML, and tool calls (streamed as
    ``tool_calls`` deltas, the arguments held to the tool's schema by a grammar)."""
    port = port or free_port()
    log = log_dir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
           "--model_alias", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
           "--n_threads", "1", "--chat_format", "chatml-function-calling"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = LlamaServer(proc, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s: {log.read_text()[-2000:]}")


class FaultProxy:
    """``mode``: pass | stall (200 headers, then nothing) | silent (no answer at all) | 500 | 429 | 401 |
    drop (forward ``drop_after`` body chunks, then cut the connection) | garbage (a malformed stream).

    :meth:`down` stops listening (connection refused); :meth:`up` listens again on the same port.
    ``requests`` counts what reached the proxy.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.drop_after = 3
        self.requests = 0
        self.chats = 0
        """Requests to chat/completions (probes excluded)."""
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._stalled: list[asyncio.Event] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def up(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        for ev in self._stalled:
            ev.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def aclose(self) -> None:
        await self.down()
        if self._client is not None:
            await self._client.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.chats += request.path.endswith("/chat/completions")
        mode = self.mode
        body = await request.read()
        if mode in ("500", "429", "401"):
            return web.json_response({"error": {"message": f"injected {mode}"}}, status=int(mode))
        if mode in ("stall", "silent"):
            release = asyncio.Event()
            self._stalled.append(release)
            stalled: web.StreamResponse = web.Response(status=504, text="stall over")
            if mode == "stall":
                stalled = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await stalled.prepare(request)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), 60)
            return stalled
        if mode == "garbage":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: {this is not json\n\n")
            await resp.write_eof()
            return resp
        if self._client is None:
            self._client = aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._client.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers=headers) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")})
            await resp.prepare(request)
            n = 0
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
                n += 1
                if mode == "drop" and n >= self.drop_after:
                    assert request.transport is not None
                    request.transport.abort()  # as if the server process died mid-reply
                    return resp
            await resp.write_eof()
            return resp
