"""Failover benchmark (``scripts/bench --failover``): a stalled cloud provider → the first local audio.

A "cloud" server on 127.0.0.1 accepts every request, sends its headers, and then
says nothing (the stall a per-read timeout never catches). Against it:

- ``llm``: the chain is [cloud LLM (stalled), local llama.cpp]; the reply's text goes to
  the local Piper voice. Measured: request → first audio sample of the reply.
- ``tts``: the local LLM answers; the voice chain is [cloud TTS (stalled), local Piper].
  Measured: request → first audio sample.

Each round uses a fresh chain (so the cloud is tried, and stalls, every time) with
the default deadlines of ``[cloud]``. Target: every round under 1.5 s.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from edgeagent import registry
from edgeagent.aio import wait_for
from edgeagent.bench import p90
from edgeagent.cloud.openai_llm import OpenAILLM
from edgeagent.cloud.openai_tts import OpenAITTS
from edgeagent.cloud.speech_server import serve
from edgeagent.config.cloud import CloudConfig
from edgeagent.fallback.chain import Chain, FallbackEvent, Member
from edgeagent.fallback.llm import FallbackLLM
from edgeagent.fallback.tts import FallbackTTS
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext
from edgeagent.tts.base import TTS

TARGET_S = 1.5
QUESTIONS = ("What is the capital of France?", "How many legs does a spider have?",
             "What colour is the sky?", "Name a large animal.", "What is two plus two?")
SYSTEM = "You are a helpful voice assistant on a small device. Answer in one or two short sentences."


def stalling_app() -> tuple[web.Application, list[asyncio.Event]]:
    """Every request gets 200 and its headers, then silence until released."""
    held: list[asyncio.Event] = []

    async def stall(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        ev = asyncio.Event()
        held.append(ev)
        await ev.wait()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stall)
    return app, held


async def _first_audio(llm: LLM, tts: TTS, question: str) -> tuple[float, str, str]:
    """Seconds from the request to the first audio sample; who served the LLM and the TTS."""
    ctx = ChatContext()
    ctx.add("system", SYSTEM)
    ctx.add("user", question)
    t0 = time.perf_counter()
    chat = llm.chat(ctx, max_tokens=40)
    speech = tts.stream()

    async def feed() -> None:
        async for chunk in chat:
            speech.push(chunk.text)
        speech.flush()

    feeder = asyncio.ensure_future(feed())
    try:
        async for audio in speech:
            if audio.frame.num_samples:
                return (time.perf_counter() - t0, str(chat.served_by or llm.provider),
                        str(speech.served_by or tts.provider))
            if audio.is_final:
                break
        raise RuntimeError("the reply had no audio")
    finally:
        feeder.cancel()
        await chat.aclose()
        await speech.aclose()


async def measure(rounds: int = 5) -> dict[str, Any]:
    cloud_cfg = CloudConfig()
    app, held = stalling_app()
    runner, port = await serve(app)
    base = f"http://127.0.0.1:{port}/v1"
    local_llm: LLM = await asyncio.to_thread(registry.create, "llm", "llama", temperature=0.0, max_tokens=40)
    local_tts: TTS = await asyncio.to_thread(registry.create, "tts", "piper")
    events: list[FallbackEvent] = []
    fig: dict[str, Any] = {"target_s": TARGET_S, "deadlines_s": {
        "llm": cloud_cfg.llm_first_token_s, "tts": cloud_cfg.tts_first_audio_s}, "rounds": rounds}
    try:
        warm = ChatContext()
        warm.add("system", SYSTEM)
        await local_llm.prefill(warm)
        await _first_audio(local_llm, local_tts, "Hello.")  # warm both local models
        for scenario in ("llm", "tts"):
            times: list[float] = []
            served: set[str] = set()
            for i in range(rounds):
                cloud_llm = OpenAILLM(base_url=base, model="stalled")
                cloud_tts = OpenAITTS(base_url=base)
                try:
                    if scenario == "llm":
                        chain = Chain("llm", [Member(local_llm, cloud_cfg.local_deadline_s, cloud=False),
                                              Member(cloud_llm, cloud_cfg.llm_first_token_s, cloud=True)],
                                      policy="cloud-first", probe_interval_s=3600)
                        chain.on_event(events.append)
                        llm: LLM = FallbackLLM(chain)
                        tts: TTS = local_tts
                    else:
                        chain = Chain("tts", [Member(local_tts, cloud_cfg.local_deadline_s, cloud=False),
                                              Member(cloud_tts, cloud_cfg.tts_first_audio_s, cloud=True)],
                                      policy="cloud-first", probe_interval_s=3600)
                        chain.on_event(events.append)
                        llm, tts = local_llm, FallbackTTS(chain)
                    seconds, llm_by, tts_by = await wait_for(
                        _first_audio(llm, tts, QUESTIONS[i % len(QUESTIONS)]), 30)
                    times.append(seconds)
                    served.add(f"llm={llm_by} tts={tts_by}")
                finally:
                    for m in chain.members:
                        if m.probe_task is not None:
                            m.probe_task.cancel()
                    await cloud_llm.aclose()
                    await cloud_tts.aclose()
            fig[scenario] = {"first_local_audio_s": [round(t, 3) for t in times],
                             "p50_s": round(statistics.median(times), 3), "p90_s": round(p90(times), 3),
                             "max_s": round(max(times), 3), "served_by": sorted(served)}
        fig["switches"] = sum(1 for e in events if e.action == "switched" and e.reason == "stalled")
        fig["missed"] = [s for s in ("llm", "tts") if fig[s]["max_s"] >= TARGET_S]
        if fig["switches"] != 2 * rounds:
            fig["missed"].append("switches")
        return fig
    finally:
        for ev in held:
            ev.set()
        await runner.cleanup()
        await local_llm.aclose()
        await local_tts.aclose()


def table(fig: dict[str, Any]) -> str:
    lines = [f"failover: stalled cloud provider -> first local audio (target < {fig['target_s']} s, "
             f"{fig['rounds']} rounds each)"]
    for s in ("llm", "tts"):
        f = fig[s]
        lines.append(f"  {s:4s} stalled (deadline {fig['deadlines_s'][s]:.1f} s): p50 {f['p50_s']:.3f} s  "
                     f"p90 {f['p90_s']:.3f} s  max {f['max_s']:.3f} s  "
                     f"{'OK' if f['max_s'] < fig['target_s'] else 'MISSED'}  ({', '.join(f['served_by'])})")
    lines.append(f"  switches on 'stalled': {fig['switches']} of {2 * fig['rounds']}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="scripts/bench --failover", description=__doc__.splitlines()[0])
    ap.add_argument("--failover", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args(list(argv))
    import logging

    if args.json_only:  # the switch warnings would go to stderr otherwise
        logging.getLogger("edgeagent").setLevel(logging.ERROR)
    fig = asyncio.run(measure(args.rounds))
    if not args.json_only:
        print(table(fig))
    print(json.dumps(fig))
    return 1 if fig["missed"] else 0
