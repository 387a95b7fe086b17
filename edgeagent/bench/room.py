"""Room voice-to-voice benchmark: spoken questions through a LiveKit room, timed at the participant.

An AgentSession joins a room as ``edgeagent join`` does (RoomLink, RoomInput,
RoomOutput, activation always, no echo cancellation). A test participant written with
the ``livekit`` SDK (:mod:`edgeagent.bench.participant`, in a process of its own, as a
remote person is) talks into the room like a microphone: every 10 ms, in real time, it
hands one 48 kHz block (room noise, or a question spoken by espeak-ng) to its own
:class:`rtc.AudioSource`, and times what it hears of the agent's track. Per turn the latency runs from the
true end of its question (when the block holding the last loud 10 ms was handed to
the SDK) to the first loud 10 ms of the agent's track received at that participant.
The same run also measures the local path (:func:`edgeagent.bench.voice.run_session`)
so the two can be compared; ``scripts/bench-room`` runs :func:`measure` and prints
the report.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.bench import p90
from edgeagent.bench.participant import RATE, REPLY_DBFS, ParticipantProcess, loud
from edgeagent.bench.scripted import QUESTIONS, espeak, trim
from edgeagent.bench.server import Server, start_server
from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)

ADDED_LIMIT_MS = 150.0
"""The room path may add at most this much over the local one at p50."""
AGENT = "edgeagent-bench"
SPEAKER = "bench-speaker"
PAUSE_S = 1.0
QUIET_S = 0.3
REPLY_TIMEOUT_S = 20.0
REPLY_PLAY_S = 10.0


@dataclass
class RoomTurn:
    question: str
    heard: str = ""
    reply: str = ""
    e2e_ms: float | None = None
    """True end of speech (handed to the SDK) -> first agent audio (above REPLY_DBFS) received."""
    out_ms: float | None = None
    """Of which: the agent's first loud block handed to its AudioSource -> received (the way back)."""
    cut_off: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    """The session's own TurnMetrics (times from the VAD's end of speech)."""


def room_summary(turns: Sequence[RoomTurn]) -> dict[str, Any]:
    e2e = [t.e2e_ms for t in turns if t.e2e_ms is not None]
    back = [t.out_ms for t in turns if t.out_ms is not None]
    return {
        "p50_ms": statistics.median(e2e) if e2e else None,
        "p90_ms": p90(e2e) if e2e else None,
        "out_p50_ms": statistics.median(back) if back else None,
        "answered": len(e2e),
        "turns": [asdict(t) for t in turns],
    }


def figures(room: Sequence[RoomTurn], local: dict[str, Any] | None, n: int,
            limit_ms: float = ADDED_LIMIT_MS) -> dict[str, Any]:
    """The room's and the local path's p50/p90, what the room adds at p50, and the verdict."""
    out: dict[str, Any] = {"questions": n, "room": room_summary(room), "limit_added_ms": limit_ms}
    r = out["room"]
    out["room_p50_ms"], out["room_p90_ms"] = r["p50_ms"], r["p90_ms"]
    out["room_answered_fraction"] = r["answered"] / n if n else 0.0
    if local is not None:
        out["local"] = local
        out["local_p50_ms"], out["local_p90_ms"] = local.get("p50_ms"), local.get("p90_ms")
    a, b = out["room_p50_ms"], out.get("local_p50_ms")
    out["added_p50_ms"] = a - b if a is not None and b is not None else None
    missed = []
    if out["added_p50_ms"] is None or out["added_p50_ms"] > limit_ms:
        missed.append("added_p50_ms")
    if out["room_answered_fraction"] < 1.0:
        missed.append("room_answered_fraction")
    out["missed"] = missed
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def report(fig: dict[str, Any]) -> str:
    lines = [f"{'#':>2} {'question':40} {'heard':36} {'room e2e':>9} {'way back':>9} {'local e2e':>9}"]
    lines.append("-" * len(lines[0]))
    local_turns = fig.get("local", {}).get("turns", [])
    for i, t in enumerate(fig["room"]["turns"]):
        le = local_turns[i]["e2e_ms"] if i < len(local_turns) else None
        lines.append(f"{i + 1:>2} {t['question'][:40]:40} {t['heard'][:36]:36} {_ms(t['e2e_ms']):>9} "
                     f"{_ms(t['out_ms']):>9} {_ms(le):>9}")
    lines.append("")
    lines.append(f"room  (end of speech at the participant -> first agent audio there): "
                 f"p50 {_ms(fig['room_p50_ms'])} ms, p90 {_ms(fig['room_p90_ms'])} ms, "
                 f"answered {fig['room']['answered']}/{fig['questions']}")
    if "local" in fig:
        lines.append(f"local (end of speech at the mic -> first agent audio at the speaker): "
                     f"p50 {_ms(fig['local_p50_ms'])} ms, p90 {_ms(fig['local_p90_ms'])} ms")
    verdict = "ok" if "added_p50_ms" not in fig["missed"] else "MISSED"
    lines.append(f"room adds {_ms(fig['added_p50_ms'])} ms at p50 (limit {fig['limit_added_ms']:g} ms): {verdict}")
    return "\n".join(lines)


def room_questions(n: int, texts: Sequence[str] = QUESTIONS) -> list[tuple[str, AudioFrame]]:
    """``n`` questions (no wake word: a room has none) spoken by espeak-ng at 48 kHz."""
    return [(texts[i % len(texts)], trim(espeak(texts[i % len(texts)], rate=RATE))) for i in range(n)]


# -- the room session -------------------------------------------------------------------------


async def run_room(models: Any, server: Server, questions: Sequence[tuple[str, AudioFrame]], workdir: Path,
                   *, out_queue_ms: int | None = None) -> list[RoomTurn]:
    from edgeagent.bench import voice
    from edgeagent.config import Config
    from edgeagent.config.room import LiveKitConfig
    from edgeagent.config.voice import AgentConfig
    from edgeagent.room.audio import RoomInput, RoomOutput
    from edgeagent.room.connection import RoomLink
    from edgeagent.voice import Agent
    from edgeagent.voice.compose import session_for, without_wake_word
    from edgeagent.voice.events import AgentState

    room_name = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret,
                        room=room_name, identity=AGENT)
    link = RoomLink(cfg, backoff_s=0.2)
    inp = RoomInput(link, listen=cfg.listen)
    out = RoomOutput(link) if out_queue_ms is None else RoomOutput(link, queue_size_ms=out_queue_ms)
    first_handed: list[float | None] = [None]
    armed = [False]

    def timed_render(block: Int16Array, rate: int, now: float) -> None:  # the render tap
        if armed[0] and loud(block, REPLY_DBFS):
            first_handed[0], armed[0] = now, False

    out.on_render = timed_render
    session = session_for(models, without_wake_word(Config(), None), echo_path=False)
    state, metrics, replies = voice.watch(session)
    token = server.token(SPEAKER, room_name)
    peer = ParticipantProcess(workdir)
    turns: list[RoomTurn] = []

    async def until(cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def reply_over(seen: int, timeout: float) -> bool:
        """The turn's metrics are in, the agent is not speaking and its track has been quiet."""
        deadline = time.monotonic() + timeout
        done = await until(lambda: len(metrics) > seen and state[0] is not AgentState.SPEAKING, timeout)
        return done and await peer.quiet(QUIET_S, max(0.0, deadline - time.monotonic()))

    try:
        await wait_for(out.start(), 10)
        await link.start()
        if not await link.wait_connected(20):
            raise EdgeAgentError(f"the agent did not join the room: {link.last_error}")
        await wait_for(session.start(Agent(instructions=AgentConfig().instructions), input=inp,
                                             output=out), 60)
        await peer.join(server.url, token, AGENT)
        if not await until(lambda: inp.linked == SPEAKER and inp.track_sid_of(SPEAKER)
                           and link.agent_track_sid and peer.hearing, 20):
            raise EdgeAgentError("the agent and the participant did not hear each other within 20 s")
        await asyncio.sleep(1.0)
        for i, (text, audio) in enumerate(questions):
            await until(lambda: state[0] is AgentState.LISTENING, 60)
            await peer.quiet(QUIET_S, 30)
            await asyncio.sleep(PAUSE_S)
            session.history.messages.clear()
            seen, said = len(metrics), len(replies)
            turn = RoomTurn(text)
            first_handed[0], armed[0] = None, True
            ended = await peer.say(audio)
            got = await peer.first_loud(ended, REPLY_TIMEOUT_S)
            if got is not None:
                turn.e2e_ms = 1000 * (got - ended)
                if first_handed[0] is not None:
                    turn.out_ms = 1000 * (got - first_handed[0])
            if not await reply_over(seen, REPLY_PLAY_S):
                turn.cut_off = True
                session.interrupt()
                await reply_over(seen, 30.0)
            if len(metrics) > seen:
                m = metrics[-1]
                turn.heard = m.transcript
                turn.raw = {k: v for k, v in asdict(m).items() if isinstance(v, float | bool | str) or v is None}
            turn.reply = " ".join(replies[said:])
            turns.append(turn)
            log.info("room %d/%d: %s", i + 1, len(questions), turn)
            peer.clear()
    finally:
        # The link first (as `edgeagent join` does): once the participant leaves, the server
        # closes the room and the link would be rejoining while the rest closes.
        await _closed("the link", link.aclose(), 20)
        await _closed("the participant", peer.leave(), 30)
        await _closed("the session", session.aclose(), 30)
        await _closed("the room output", out.aclose(), 10)
        await _closed("the room input", inp.aclose(), 10)
    return turns


async def _closed(what: str, closing: Any, timeout: float) -> None:
    """Await one close step; one that hangs or fails is logged by name, and the next goes on."""
    try:
        await wait_for(closing, timeout)
    except asyncio.TimeoutError:
        log.warning("closing %s took more than %g s", what, timeout)
    except Exception as exc:
        log.warning("closing %s failed: %s", what, exc)


async def run_local(models: Any, n: int, workdir: Path) -> dict[str, Any]:
    """The local figures of scripts/bench (the session only, no baseline) with the same models.

    The reply starts where it does at the participant: at its first 10 ms above
    :data:`REPLY_DBFS` (scripts/bench takes the first non-zero sample, 30-50 ms earlier
    with Piper's soft onsets; the codec does not keep digital zeros, so the room cannot).
    """
    from edgeagent.bench import report, voice
    from edgeagent.bench.scripted import make_questions

    turns, _ = await voice.run_session(models, make_questions(n), idle_s=0.5, record=workdir / "local.wav",
                                       first_dbfs=REPLY_DBFS)
    return report.summary(turns)


async def measure(n: int, workdir: Path, root: Path, *, local: bool = True,
                  server: Server | None = None) -> dict[str, Any]:
    """The local path, then the room path (a livekit-server of our own unless ``server``)."""
    from edgeagent.voice.stages import Models

    if shutil.which("espeak-ng") is None:
        raise EdgeAgentError("espeak-ng is not installed (scripts/setup --dev)")
    questions = room_questions(n)
    own = server is None
    srv = server or start_server(root, Path(tempfile.mkdtemp(prefix="edgeagent-bench-room-")))
    try:
        models = await Models.load()
        try:
            local_fig = await run_local(models, n, workdir) if local else None
            room = await run_room(models, srv, questions, workdir)
        finally:
            await models.aclose()
    finally:
        if own:
            srv.stop()
    return figures(room, local_fig, n)
