"""Room voice-to-voice benchmark (issue 5): spoken questions through a LiveKit room, timed at the participant.

An AgentSession joins a room as ``edgeagent join`` does (RoomLink, RoomInput,
RoomOutput, activation always, no echo cancellation). A test participant written with
the ``livekit`` SDK (:class:`Speaker`) talks into the room like a microphone: every
10 ms, in real time, it hands one 48 kHz block (room noise, or a question spoken by
espeak-ng) to its own :class:`rtc.AudioSource`. Per turn the latency runs from the
true end of its question (when the block holding the last loud 10 ms was handed to
the SDK) to the first loud 10 ms of the agent's track received at that participant.
The same run also measures the local path (:func:`edgeagent.bench.voice.run_session`)
so the two can be compared; ``scripts/bench-room`` runs :func:`measure` and prints
the report.
"""

from __future__ import annotations

import asyncio
import contextlib
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

import numpy as np
import numpy.typing as npt

from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.bench import p90
from edgeagent.bench.scripted import QUESTIONS, SILENCE_DBFS, espeak, trim
from edgeagent.bench.server import Server, start_server
from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)

RATE = 48_000
BLOCK = RATE // 100
"""10 ms at 48 kHz: what the participant hands to its AudioSource at a time."""
ADDED_LIMIT_MS = 150.0
"""The room path may add at most this much over the local one at p50."""
AGENT = "edgeagent-bench"
PAUSE_S = 1.0
QUIET_S = 0.3
REPLY_TIMEOUT_S = 20.0
REPLY_PLAY_S = 10.0
NOISE_DBFS = -65.0
REPLY_DBFS = -60.0
"""The agent's reply has started at the first block louder than this (the local bench takes the first
non-zero sample; the agent's silence decodes to digital zeros, so this is the codec-safe equivalent)."""


def loud(block: npt.ArrayLike, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """Whether a block of int16 samples is louder (RMS) than ``threshold_dbfs``."""
    x = np.asarray(block, np.float64) / 32768.0
    if not len(x):
        return False
    return bool(np.sqrt(np.mean(x * x)) > 10.0 ** (threshold_dbfs / 20.0))


def last_loud_block(samples: Int16Array, block: int = BLOCK, threshold_dbfs: float = SILENCE_DBFS) -> int:
    """Index of the last ``block``-sample block of ``samples`` louder than the threshold (-1: none)."""
    last = -1
    for i in range(0, len(samples), block):
        if loud(samples[i : i + block], threshold_dbfs):
            last = i // block
    return last


def first_loud_after(heard: Sequence[tuple[float, Int16Array]], t: float,
                     threshold_dbfs: float = SILENCE_DBFS) -> float | None:
    """Arrival time of the first loud block received at or after ``t`` (None: none yet)."""
    for at, pcm in heard:
        if at >= t and loud(pcm, threshold_dbfs):
            return at
    return None


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


# -- the participant ---------------------------------------------------------------------------


class Speaker:
    """The test participant: a real-time microphone into its own track, and an ear on the agent's.

    A sender task hands one 10 ms block to the AudioSource every 10 ms on an absolute
    schedule (block ``i`` once its span has passed, as a sound card would), room noise
    unless :meth:`say` put a question in. ``queue_size_ms`` is the source's queue (none by
    default: a browser's or a phone's microphone goes straight to WebRTC, too).
    """

    def __init__(self, identity: str, *, queue_size_ms: int = 0, seed: int = 3) -> None:
        from livekit import rtc

        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=queue_size_ms)
        self.heard: list[tuple[float, Int16Array]] = []
        """(arrival time, 10 ms of the agent's track) of blocks above REPLY_DBFS only (silence is not kept)."""
        self.received = 0
        self.last_loud: float | None = None
        self._rng = np.random.default_rng(seed)
        self._noise = 10.0 ** (NOISE_DBFS / 20.0) * 32768.0
        self._script: list[Int16Array] = []  # blocks still to say
        self._script_end: int | None = None  # blocks still to send before the last loud one
        self._end_at: float | None = None  # when the last loud block was handed to the SDK
        self._saying: asyncio.Future[float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.room.on("track_subscribed", self._on_track)

    def _on_track(self, track: Any, pub: Any, p: Any) -> None:
        from livekit import rtc

        if p.identity == AGENT and track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: Any) -> None:
        from livekit import rtc

        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            at = time.monotonic()
            pcm = np.frombuffer(ev.frame.data, np.int16)
            self.received += 1
            if loud(pcm, REPLY_DBFS):  # checked once, on arrival: the bench must not eat the agent's CPU
                self.heard.append((at, pcm.copy()))
                if loud(pcm):
                    self.last_loud = at

    async def join(self, url: str, token: str) -> None:
        from livekit import rtc

        await asyncio.wait_for(self.room.connect(url, token), 20)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await asyncio.wait_for(self.room.local_participant.publish_track(track, opts), 20)
        self._tasks.append(asyncio.ensure_future(self._send()))

    async def _send(self) -> None:
        from livekit import rtc

        start, i = time.monotonic(), 0
        while True:
            due = start + (i + 1) * BLOCK / RATE
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # stalled: a new schedule
                start, i = time.monotonic() - BLOCK / RATE, 0
            pcm = self._rng.normal(0.0, self._noise, BLOCK)
            said: Int16Array | None = None
            if self._script:
                said = self._script.pop(0)
                pcm += said
            block = np.clip(np.round(pcm), -32768, 32767).astype(np.int16)
            handed = time.monotonic()
            await self.source.capture_frame(rtc.AudioFrame(block.tobytes(), RATE, 1, BLOCK))
            if said is not None and self._script_end is not None:
                if self._script_end <= 0:
                    self._end_at = handed
                self._script_end = self._script_end - 1 if self._script_end > 0 else None
            if not self._script and self._saying is not None and not self._saying.done():
                self._saying.set_result(self._end_at if self._end_at is not None else handed)
            i += 1

    async def say(self, audio: AudioFrame) -> float:
        """Speak ``audio`` (48 kHz); returns when its last loud block was handed to the SDK, the
        true end of speech, once it has all been sent."""
        samples = audio.samples
        blocks = []
        for i in range(0, len(samples), BLOCK):
            b = np.zeros(BLOCK, np.float64)
            part = samples[i : i + BLOCK]
            b[: len(part)] = part
            blocks.append(b.astype(np.int16))
        end = last_loud_block(samples)
        self._script_end, self._end_at = (end if end >= 0 else None), None
        self._saying = asyncio.get_running_loop().create_future()
        self._script = blocks
        return await self._saying

    @property
    def busy(self) -> bool:
        return bool(self._script)

    def quiet_for(self) -> float:
        """Seconds since the last loud block of the agent (inf before any)."""
        return float("inf") if self.last_loud is None else time.monotonic() - self.last_loud

    async def leave(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self.room.disconnect(), 10)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self.source.aclose(), 5)


def room_questions(n: int, texts: Sequence[str] = QUESTIONS) -> list[tuple[str, AudioFrame]]:
    """``n`` questions (no wake word: a room has none) spoken by espeak-ng at 48 kHz."""
    return [(texts[i % len(texts)], trim(espeak(texts[i % len(texts)], rate=RATE))) for i in range(n)]


# -- the room session -------------------------------------------------------------------------


async def run_room(models: Any, server: Server, questions: Sequence[tuple[str, AudioFrame]], *,
                   speaker_queue_ms: int = 0, out_queue_ms: int | None = None) -> list[RoomTurn]:
    from livekit import api

    from edgeagent.bench import voice
    from edgeagent.config_room import LiveKitConfig
    from edgeagent.config_voice import ActivationConfig, AgentConfig
    from edgeagent.room.audio import RoomInput, RoomOutput
    from edgeagent.room.connection import RoomLink
    from edgeagent.voice import Agent, AgentSession
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
    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
                           activation=ActivationConfig(mode="always"), echo_cancellation=False,
                           ignore_own_playback=False)
    state, metrics, replies = voice.watch(session)
    token = (api.AccessToken(server.api_key, server.api_secret).with_identity("bench-speaker")
             .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt())
    peer = Speaker("bench-speaker", queue_size_ms=speaker_queue_ms)
    turns: list[RoomTurn] = []

    async def until(cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    try:
        await asyncio.wait_for(out.start(), 10)
        await link.start()
        if not await link.wait_connected(20):
            raise EdgeAgentError(f"the agent did not join the room: {link.last_error}")
        await asyncio.wait_for(session.start(Agent(instructions=AgentConfig().instructions), input=inp,
                                             output=out), 60)
        try:
            await peer.join(server.url, token)
        except (Exception, asyncio.TimeoutError) as exc:
            raise EdgeAgentError(f"the test participant could not join: {exc}") from exc
        if not await until(lambda: inp.linked == "bench-speaker" and inp.track_sid_of("bench-speaker")
                           and link.agent_track_sid and peer.received, 20):
            raise EdgeAgentError("the agent and the participant did not hear each other within 20 s")
        await asyncio.sleep(1.0)
        for i, (text, audio) in enumerate(questions):
            await until(lambda: state[0] is AgentState.LISTENING and not peer.busy
                        and peer.quiet_for() > QUIET_S, 60)
            await asyncio.sleep(PAUSE_S)
            session.history.messages.clear()
            seen, said = len(metrics), len(replies)
            turn = RoomTurn(text)
            first_handed[0], armed[0] = None, True
            ended = await peer.say(audio)
            mark = len(peer.heard)
            got: list[float | None] = [None]

            def answered(mark: int = mark, got: list[float | None] = got, ended: float = ended) -> bool:
                got[0] = first_loud_after(peer.heard[mark:], ended, REPLY_DBFS)
                return got[0] is not None

            if await until(answered, REPLY_TIMEOUT_S) and got[0] is not None:
                turn.e2e_ms = 1000 * (got[0] - ended)
                if first_handed[0] is not None:
                    turn.out_ms = 1000 * (got[0] - first_handed[0])

            def over(seen: int = seen) -> bool:
                return (len(metrics) > seen and state[0] is not AgentState.SPEAKING
                        and peer.quiet_for() > QUIET_S)

            if not await until(over, REPLY_PLAY_S):
                turn.cut_off = True
                session.interrupt()
                await until(over, 30.0)
            if len(metrics) > seen:
                m = metrics[-1]
                turn.heard = m.transcript
                turn.raw = {k: v for k, v in asdict(m).items() if isinstance(v, float | bool | str) or v is None}
            turn.reply = " ".join(replies[said:])
            turns.append(turn)
            log.info("room %d/%d: %s", i + 1, len(questions), turn)
            peer.heard.clear()
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
        await asyncio.wait_for(closing, timeout)
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
    from edgeagent.bench import voice
    from edgeagent.bench.scripted import make_questions

    turns, _ = await voice.run_session(models, make_questions(n), idle_s=0.5, record=workdir / "local.wav",
                                       first_dbfs=REPLY_DBFS)
    return voice.summary(turns)


async def measure(n: int, workdir: Path, root: Path, *, local: bool = True, speaker_queue_ms: int = 0,
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
            room = await run_room(models, srv, questions, speaker_queue_ms=speaker_queue_ms)
        finally:
            await models.aclose()
    finally:
        if own:
            srv.stop()
    fig = figures(room, local_fig, n)
    fig["speaker_queue_ms"] = speaker_queue_ms
    return fig
