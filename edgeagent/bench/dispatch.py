"""Dispatch benchmark (``scripts/bench-room --dispatch``): dispatch → agent joined → first answer.

The device runs as a worker (:func:`edgeagent.worker.run.run_worker`, the real job path:
:func:`edgeagent.room.job.run_room` with the default models) on a loopback livekit-server.
Each round: the test participant (:mod:`edgeagent.bench.participant`, its own process)
joins a fresh room and waits there, as a person who called for the agent would; the agent
is dispatched into that room with ``create_dispatch``; the participant asks its question
as soon as the agent listens, and the room is deleted after the answer (the job ends, the
worker is available for the next round). Per round, from the ``create_dispatch`` call:

- ``joined_s``: the agent is an active participant of the room (the server's view, polled
  every 20 ms);
- ``hearing_s``: the agent's voice track reaches the participant (its first frame);
- ``listening_s``: the agent's ``lk.agent.state`` is ``listening`` (the server's view);
- ``answer_ms``: the end of the question → the first loud 10 ms of the answer at the
  participant (the same measure as the room benchmark);
- ``first_answer_s``: dispatch → that first answer (includes speaking the question);
- ``free_s``: the room deleted → the worker available again.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame
from edgeagent.bench import p90
from edgeagent.bench.participant import ParticipantProcess
from edgeagent.bench.room import REPLY_TIMEOUT_S, SPEAKER, room_questions
from edgeagent.bench.server import Server, start_server
from edgeagent.errors import EdgeAgentError

AGENT = "edgeagent-bench-worker"
AGENT_NAME = "edgeagent-bench"


@dataclass
class DispatchRound:
    question: str
    joined_s: float | None = None
    hearing_s: float | None = None
    listening_s: float | None = None
    answer_ms: float | None = None
    first_answer_s: float | None = None
    free_s: float | None = None


async def _when(cond: Callable[[], Awaitable[bool] | bool], timeout: float, step: float = 0.02) -> float | None:
    """The monotonic time at which ``cond()`` (awaited when it returns an awaitable) was first true
    (polled every ``step``); None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(step)


def _since(t0: float, t: float | None) -> float | None:
    return None if t is None else t - t0


async def _round(lkapi: Any, server: Server, statuses: list[str], text: str, audio: AudioFrame,
                 workdir: Path) -> DispatchRound:
    from livekit import api

    r = DispatchRound(text)
    room = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    peer = ParticipantProcess(workdir)

    async def agent_state() -> str | None:
        """The agent's ``lk.agent.state`` once it is an active participant ("" before it sets one)."""
        res = await wait_for(lkapi.room.list_participants(api.ListParticipantsRequest(room=room)), 5)
        return next((str(p.attributes.get("lk.agent.state", "")) for p in res.participants
                     if p.identity == AGENT and p.state == 2), None)  # 2: ACTIVE

    async def joined() -> bool:
        return await agent_state() is not None

    async def listening() -> bool:
        return await agent_state() == "listening"

    try:
        await peer.join(server.url, server.token(SPEAKER, room), AGENT)
        t0 = time.monotonic()
        await wait_for(lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room)), 10)
        r.joined_s = _since(t0, await _when(joined, 20))
        r.listening_s = _since(t0, await _when(listening, 20))
        r.hearing_s = _since(t0, await _when(lambda: peer.hearing, 20))
        ended = await peer.say(audio)
        got = await peer.first_loud(ended, REPLY_TIMEOUT_S)
        if got is not None:
            r.answer_ms, r.first_answer_s = 1000 * (got - ended), got - t0
        await peer.quiet(0.3, 15)
    finally:
        await peer.leave()
        t1 = time.monotonic()
        await wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), 10)
        r.free_s = _since(t1, await _when(lambda: statuses[-1].startswith("worker available"), 15))
    return r


def summary(rounds: Sequence[DispatchRound]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": [asdict(r) for r in rounds]}
    for key in ("joined_s", "listening_s", "hearing_s", "answer_ms", "first_answer_s", "free_s"):
        values = [v for r in rounds if (v := getattr(r, key)) is not None]
        out[key] = {"p50": statistics.median(values) if values else None, "p90": p90(values) if values else None,
                    "min": min(values, default=None), "max": max(values, default=None), "n": len(values)}
    out["missed"] = sum(r.first_answer_s is None for r in rounds)
    return out


def report(fig: dict[str, Any]) -> str:
    lines = [f"dispatch → ... over {len(fig['rounds'])} rounds (p50 / p90 / min-max):"]
    for key, what in (("joined_s", "dispatch → agent joined (s)"), ("listening_s", "dispatch → agent listening (s)"),
                      ("hearing_s", "dispatch → agent's voice track heard (s)"),
                      ("answer_ms", "end of question → first answer (ms)"),
                      ("first_answer_s", "dispatch → first answer (s, incl. the question)"),
                      ("free_s", "room deleted → worker available (s)")):
        f = fig[key]
        if f["n"]:
            lines.append(f"  {what:48s} {f['p50']:.2f} / {f['p90']:.2f} / {f['min']:.2f}-{f['max']:.2f}")
        else:
            lines.append(f"  {what:48s} none")
    lines.append(f"  missed answers: {fig['missed']}")
    return "\n".join(lines)


async def measure(n: int, workdir: Path, root: Path, *, server: Server | None = None) -> dict[str, Any]:
    """``n`` rounds on a livekit-server of our own (unless ``server``) with the default models."""
    import dataclasses

    from livekit import api

    from edgeagent.config import Config
    from edgeagent.config.room import LiveKitConfig
    from edgeagent.voice.stages import Models
    from edgeagent.worker.run import run_worker

    questions = room_questions(n)
    own = server is None
    srv = server or start_server(root, Path(tempfile.mkdtemp(prefix="edgeagent-bench-dispatch-")))
    try:
        models = await Models.load()
        cfg = dataclasses.replace(Config(), livekit=LiveKitConfig(
            url=srv.url, api_key=srv.api_key, api_secret=srv.api_secret, mode="worker", agent_name=AGENT_NAME,
            identity=AGENT))
        statuses: list[str] = [""]
        stop = asyncio.Event()
        worker = asyncio.ensure_future(run_worker(models, cfg, stop, on_status=statuses.append))
        lkapi = api.LiveKitAPI("http" + srv.url.removeprefix("ws"), srv.api_key, srv.api_secret)
        try:
            if await _when(lambda: statuses[-1].startswith("worker available"), 20) is None:
                raise EdgeAgentError(f"the worker did not register: {statuses}")
            rounds = [await _round(lkapi, srv, statuses, text, audio, workdir) for text, audio in questions]
        finally:
            stop.set()
            await wait_for(worker, 30)
            await lkapi.aclose()
            await models.aclose()
    finally:
        if own:
            srv.stop()
    return summary(rounds)
