"""An Agent: instructions, tools and lifecycle hooks, in the spirit of LiveKit Agents.

    class Assistant(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="You are a helpful assistant.", tools=[get_time])

        @function_tool
        async def set_light(self, ctx: RunContext, on: bool) -> str:
            \"\"\"Turn the room light on or off.\"\"\"
            ...

        @function_tool
        async def to_weather(self, ctx: RunContext) -> Agent:
            \"\"\"Hand the user over to the weather expert.\"\"\"
            return WeatherAgent()          # a handoff: the new agent takes the conversation

Tools come from the ``tools`` argument and from methods decorated with
:func:`~edgeagent.llm.tools.function_tool`. A tool that returns an :class:`Agent`
(or ``(agent, result)``) hands the conversation over to it: the session calls the
old agent's :meth:`Agent.on_exit`, the new one's :meth:`Agent.on_enter`, and the
reply goes on with the new instructions and tools and the same chat history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.llm.tools import FunctionTool

if TYPE_CHECKING:
    from edgeagent.voice.session import AgentSession


class StopResponse(Exception):
    """Raise in :meth:`Agent.on_user_turn_completed` to not answer this turn."""


class Agent:
    """Instructions, tools and hooks; the session runs it."""

    def __init__(self, *, instructions: str, tools: Sequence[FunctionTool] = (), label: str | None = None) -> None:
        if not instructions.strip():
            raise ValueError("an Agent needs instructions")
        self.instructions = instructions
        self.label = label or type(self).__name__
        own = [t.bind(self) for t in _method_tools(type(self))]
        names = [t.name for t in (*tools, *own)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{self.label}: tool names must be unique, repeated: {dup}")
        self.tools: tuple[FunctionTool, ...] = (*tools, *own)
        self._session: AgentSession | None = None

    @property
    def session(self) -> AgentSession:
        """The session running this agent (from :meth:`on_enter` on)."""
        if self._session is None:
            raise RuntimeError(f"{self.label} is not running in a session")
        return self._session

    # -- lifecycle hooks (override) ---------------------------------------------

    async def on_enter(self) -> None:
        """Called when the agent takes over (at start, or after a handoff)."""

    async def on_exit(self) -> None:
        """Called when another agent takes over or the session ends."""

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        """Called with the user's finished turn before the LLM answers it.

        ``turn_ctx`` is the context the LLM will see (system prompt and history):
        messages added to it reach the LLM for this turn only. Raise
        :class:`StopResponse` to not answer.
        """


def _method_tools(cls: type) -> list[FunctionTool]:
    seen: dict[str, FunctionTool] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            if isinstance(value, FunctionTool):
                seen[value.name] = value
    return list(seen.values())
