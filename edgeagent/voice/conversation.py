"""What a session remembers: the agent in charge, the chat history, tools and handoffs, turn metrics.

:class:`Conversation` is the session's :class:`~edgeagent.voice.reply.ReplyHost`:
replies ask it for the LLM context (the agent's instructions, then the history)
and the tools, and hand it tool calls to run. It adds every message to the
history and reports it as ``conversation_item_added``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeagent import heap
from edgeagent.aio import wait_for
from edgeagent.llm.chat import ChatContext, ChatMessage, ToolCall
from edgeagent.llm.tools import FunctionTool, RunContext, ToolError
from edgeagent.voice.agent import Agent, StopResponse
from edgeagent.voice.events import (
    TRANSCRIPT,
    AgentHandoffEvent,
    AgentState,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    MetricsCollectedEvent,
    TurnMetrics,
)
from edgeagent.voice.reply import Reply
from edgeagent.voice.speech import SpeechHandle

if TYPE_CHECKING:
    from edgeagent.voice.session import AgentSession

log = logging.getLogger(__name__)

TOOL_TIMEOUT_S = 30.0
MAX_HISTORY = 64
"""Messages kept in the history: a device that runs for months must not grow without end
(the LLM sees even fewer: it drops the oldest turns that do not fit its context)."""


@dataclass
class TurnRecord:
    """One user turn as it was heard; monotonic times."""

    id: str = ""
    speech_end: float | None = None
    final_at: float | None = None
    committed_at: float | None = None
    transcript: str = ""
    eot_probability: float | None = None
    audio_eot_probability: float | None = None
    end_of_turn_delay: float | None = None
    preempt_hit: bool | None = None
    preempt_misses: int = 0
    stt_provider: str | None = None
    """Who transcribed it (see :attr:`edgeagent.voice.events.TurnMetrics.stt_provider`)."""

    def __post_init__(self) -> None:
        self.id = self.id or uuid.uuid4().hex[:8]


class Conversation:
    """The agent, the history and everything that changes them."""

    def __init__(self, session: AgentSession) -> None:
        self._session = session
        self.history = ChatContext()
        self._agent: Agent | None = None
        self._state = AgentState.INITIALIZING
        self._readying: asyncio.Future[int] | None = None

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            raise RuntimeError("the session has no agent yet: start() it")
        return self._agent

    # -- the history -----------------------------------------------------------------

    def llm_context(self) -> ChatContext:
        ctx = ChatContext()
        ctx.add("system", self.agent.instructions)
        ctx.messages.extend(self.history.messages)
        return ctx

    def preempt_context(self, user_text: str) -> ChatContext | None:
        """The context a reply to ``user_text`` would see if the turn ended now, or None when
        no reply may be generated before the turn is committed: the agent overrides
        ``on_user_turn_completed`` (it may change the context or refuse to answer)."""
        if type(self.agent).on_user_turn_completed is not Agent.on_user_turn_completed:
            return None
        ctx = self.llm_context()
        ctx.add("user", user_text)
        return ctx

    def still_fits(self, ctx: ChatContext, user_text: str) -> bool:
        """A reply begun on ``ctx`` answers ``user_text`` now (nothing changed since)."""
        now = self.preempt_context(user_text)
        return now is not None and now.messages == ctx.messages

    def current_tools(self) -> Sequence[FunctionTool]:
        return self.agent.tools

    def add(self, message: ChatMessage) -> None:
        msgs = self.history.messages
        msgs.append(message)
        while len(msgs) > MAX_HISTORY or (msgs and msgs[0].role == "tool"):
            del msgs[0]  # oldest first; never start with a tool result whose call is gone
        self._session.emit(ConversationItemAddedEvent(message, self.agent.label if self._agent else ""))

    # -- agents ----------------------------------------------------------------------

    async def set_agent(self, agent: Agent) -> None:
        old = self._agent
        if old is agent:
            return
        if old is not None:
            await old.on_exit()
        agent._session = self._session
        self._agent = agent
        if old is not None:
            log.info("handoff: %s -> %s", old.label, agent.label)
            self._session.emit(AgentHandoffEvent(old.label, agent.label))
        await self._session.llm.prefill(self.llm_context(), agent.tools)  # the new prompt, into the cache
        await agent.on_enter()

    async def exit(self) -> None:
        if self._readying is not None:
            self._readying.cancel()
        if self._agent is not None:
            await self._agent.on_exit()

    def ready_next_turn(self) -> None:
        """Evaluate the history into the LLM's cache now, while nobody speaks, not when the user
        has asked: a history that has grown too long is cut here (the next prompt evaluates
        half the window again: 4.5-9 s at each cut of the 60-minute soak, in the reply's time)."""
        if self._readying is not None and not self._readying.done():
            return
        future = asyncio.ensure_future(self._ready())
        future.add_done_callback(_log_failure)
        self._readying = future

    async def _ready(self) -> int:
        cached = await self._session.llm.prefill(self.llm_context(), self.agent.tools)
        await asyncio.get_running_loop().run_in_executor(None, heap.release)  # the turn's garbage, back
        return cached

    # -- tools -----------------------------------------------------------------------

    async def run_tools(self, calls: Sequence[ToolCall], text: str, handle: SpeechHandle) -> None:
        """Run the LLM's tool calls; their results (or errors) go into the history."""
        self.add(ChatMessage("assistant", text, tool_calls=tuple(calls)))
        tools = {t.name: t for t in self.agent.tools}
        next_agent: Agent | None = None
        for call in calls:
            tool = tools.get(call.name)
            try:
                if tool is None:
                    raise ToolError(f"no tool named {call.name!r}")
                ctx = RunContext(session=self._session, agent=self.agent, userdata=self._session.userdata,
                                 speech=handle)
                log.info("tool call %s(%s)", call.name, call.arguments)
                result = await wait_for(tool.call(call.arguments, ctx), TOOL_TIMEOUT_S)
            except (ToolError, asyncio.TimeoutError) as exc:
                result = f"error: {exc or 'the tool took too long'}"
                log.warning("tool %s: %s", call.name, result)
            except Exception as exc:
                log.exception("tool %s failed", call.name)
                self._session.emit(ErrorEvent(exc, "tool"))
                result = f"error: the tool failed ({type(exc).__name__})"
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Agent):
                next_agent, result = result
            elif isinstance(result, Agent):
                next_agent, result = result, f"transferred to {result.label}"
            self.add(ChatMessage("tool", _tool_text(result), tool_call_id=call.id))
        if next_agent is not None:
            await self.set_agent(next_agent)

    # -- replies ---------------------------------------------------------------------

    async def play(self, reply: Reply) -> None:
        """Run ``reply``; for a user turn, add the user's message and ask the agent first."""
        user_text = reply.user_text
        if user_text is not None:
            message = ChatMessage("user", user_text)
            self.add(message)
            if reply.begun:  # preemptive: its context is this one (see still_fits)
                await reply.run()
                return
            ctx = self.llm_context()
            try:
                await self.agent.on_user_turn_completed(ctx, message)
            except StopResponse:
                log.info("%s chose not to answer", self.agent.label)
                return
            reply.set_context(ctx)
        await reply.run()

    async def finish(self, reply: Reply) -> None:
        """After a reply: what was said goes into the history, the turn's metrics go out."""
        handle = reply.handle
        text = (handle.spoken_text if handle.interrupted else handle.text).strip()
        if text and handle.add_to_chat_ctx:
            self.add(ChatMessage("assistant", text, interrupted=handle.interrupted))
        log.info("agent: %s%s", text or "(nothing)", " (interrupted)" if handle.interrupted else "",
                 extra=TRANSCRIPT if text else None)
        self.ready_next_turn()
        turn = handle.turn
        if isinstance(turn, TurnRecord):
            metrics = turn_metrics(turn, reply, handle.interrupted)
            log.info("turn metrics %s", metrics.as_log(), extra={**metrics.log_fields(), **TRANSCRIPT})
            self._session.emit(MetricsCollectedEvent(metrics))

    @property
    def state(self) -> AgentState:
        return self._state

    def set_state(self, state: AgentState) -> None:
        if state is not self._state:
            old, self._state = self._state, state
            log.info("state: %s", state.value, extra={"STATE": state.value})  # a journal field
            self._session.emit(AgentStateChangedEvent(old, state))

    def on_first_audio(self, handle: SpeechHandle) -> None:
        self._session.on_first_audio()


def _log_failure(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("the history could not be evaluated ahead of the next turn: %s", exc)


def turn_metrics(turn: TurnRecord, reply: Reply, interrupted: bool) -> TurnMetrics:
    t = reply.times
    end = turn.speech_end

    def since(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)

    return TurnMetrics(
        turn_id=turn.id,
        transcript=turn.transcript,
        end_of_utterance_delay=since(end, turn.committed_at),
        transcription_delay=since(end, turn.final_at),
        llm_ttft=since(t.llm_request, t.llm_first),
        tts_ttfa=since(t.tts_first_text, t.tts_first_audio),
        e2e_latency=since(end, t.first_out),
        eot_probability=turn.eot_probability,
        interrupted=interrupted,
        audio_eot_probability=turn.audio_eot_probability,
        end_of_turn_delay=turn.end_of_turn_delay,
        preempt_hit=turn.preempt_hit,
        preempt_misses=turn.preempt_misses,
        llm_ttft_after_speech=since(end, t.llm_first),
        tts_ttfa_after_speech=since(end, t.tts_first_audio),
        stt_provider=turn.stt_provider,
        llm_provider=t.llm_provider,
        tts_provider=t.tts_provider,
    )


def _tool_text(result: Any) -> str:
    if result is None:
        return "done"
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result)
    except (TypeError, ValueError):
        return str(result)

