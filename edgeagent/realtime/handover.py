"""The switches of a :class:`~edgeagent.realtime.session.RealtimeSession`: to the pipeline and back.

To the pipeline (the socket dropped or never opened): the model's audio already
received plays out while a pipeline :class:`~edgeagent.voice.session.AgentSession`
starts on the same input, output and history (its LLM evaluates the history
meanwhile); then a question the model had not answered is answered locally (from
its transcript, or from the turn's audio through local STT), and a reply cut off
mid-way is finished by the local LLM. The user hears one gap.

Back (the model answers again): every ``probe_interval_s`` the socket is tried; once
it opens while the pipeline is quiet, the pipeline's history goes to the model as
conversation items, the pipeline stops and the model takes the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame
from edgeagent.fallback.chain import FallbackEvent
from edgeagent.fallback.llm import CONTINUE_NOTE
from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.realtime.protocol import RealtimeError
from edgeagent.voice.compose import session_for
from edgeagent.voice.events import AgentState

if TYPE_CHECKING:
    from edgeagent.realtime.session import RealtimeSession
    from edgeagent.voice.session import AgentSession

log = logging.getLogger(__name__)

PIPELINE_EVENTS = ("conversation_item_added", "error", "agent_state_changed", "user_input_transcribed",
                   "metrics_collected")


def _tell(rt: RealtimeSession, event: FallbackEvent) -> None:
    rt.fallback_events.append(event)
    for cb in list(rt._fallback_listeners):
        cb(event)


async def to_pipeline(rt: RealtimeSession, reason: str) -> None:
    if rt._switching or rt.mode in ("pipeline", "closed"):
        return
    rt._switching = True
    assert rt._agent is not None and rt._in is not None and rt._out is not None
    mid_reply = rt._response is not None and rt._playing
    partial = "".join(rt._text).strip()
    log.warning("realtime model left (%s): the local pipeline takes over", reason)
    _tell(rt, FallbackEvent("realtime", "switched", f"realtime:{rt.client.model}", "pipeline",
                            reason.split(":")[0], reason))
    current = asyncio.current_task()
    player = rt._tasks[2] if len(rt._tasks) == 3 else None
    for t in rt._tasks:
        if t is not current and t is not player:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    await rt.client.aclose()
    if mid_reply and partial:
        rt._add(ChatMessage("assistant", partial, interrupted=True))
    m = rt.models
    cfg = dataclasses.replace(rt.config, activation=rt.activation, turn=rt.turn, interruption=rt.interruption)
    session = session_for(m, cfg, echo_path=rt.echo_path)
    for name in PIPELINE_EVENTS:
        session.on(name, rt._events.emit)
    session.on("agent_state_changed", rt._pipeline_state)
    session.conversation.history.messages.extend(rt.history.messages)
    rt.pipeline = session
    rt.pipeline_first_audio = None
    rt.mode = "pipeline"
    # The pipeline starts (and its LLM evaluates the history) while what the model already
    # said plays out; its reply goes on after that audio.
    starting = asyncio.ensure_future(session.start(rt._agent, input=rt._in, output=rt._out))
    if player is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await wait_for(rt._drained.wait(), 60)
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await player
    rt.realtime_audio_end = time.monotonic()
    await starting
    rt.history = session.conversation.history  # one history from now on
    if mid_reply:
        session.generate_reply(instructions=CONTINUE_NOTE)
    elif rt._pending_user is not None:
        session.generate_reply()
    elif (audio := rt._turn_audio) and any(f.rms_dbfs() > -45 for f in audio):
        heard = await m.stt.recognize(AudioFrame.concat(audio))
        if heard.text.strip():
            session.generate_reply(user_input=heard.text.strip())
    rt.pipeline_started.set()
    rt._probe = asyncio.ensure_future(probe_back(rt))


async def probe_back(rt: RealtimeSession) -> None:
    """Try the model every ``probe_interval_s``; switch back at a quiet moment once it answers."""
    while rt.mode == "pipeline":
        await asyncio.sleep(rt.probe_interval_s)
        pipeline = rt.pipeline
        if pipeline is None or not _quiet(pipeline):
            continue
        history = ChatContext(list(pipeline.conversation.history.messages))
        rt.history = history
        try:
            await rt._connect()
        except RealtimeError as exc:
            log.debug("realtime probe: %s", exc)
            rt.history = pipeline.conversation.history
            continue
        if not _quiet(pipeline):  # a turn began meanwhile: next time
            await rt.client.aclose()
            rt.history = pipeline.conversation.history
            continue
        down_since = rt.fallback_events[-1] if rt.fallback_events else None
        await pipeline.aclose()
        rt.pipeline = None
        rt.pipeline_started.clear()
        rt._run()
        log.info("realtime model is back: it takes the next turn")
        _tell(rt, FallbackEvent("realtime", "recovered", f"realtime:{rt.client.model}", None, "recovered",
                                f"after {down_since.reason if down_since else 'a failure'}"))
        return


def _quiet(session: AgentSession) -> bool:
    return session.quiet and session.state in (AgentState.LISTENING, AgentState.IDLE)
