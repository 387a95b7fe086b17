"""The talking agent: :class:`AgentSession` runs an :class:`Agent` on an audio input and output."""

from edgeagent.llm.tools import RunContext, ToolError, function_tool
from edgeagent.voice.agent import Agent, StopResponse
from edgeagent.voice.events import (
    AgentHandoffEvent,
    AgentState,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    MetricsCollectedEvent,
    SpeechCreatedEvent,
    TurnMetrics,
    UserInputTranscribedEvent,
    WakeWordDetectedEvent,
)
from edgeagent.voice.session import AgentSession
from edgeagent.voice.speech import SpeechHandle
from edgeagent.voice.stages import Models

__all__ = [
    "Agent",
    "AgentHandoffEvent",
    "AgentSession",
    "AgentState",
    "AgentStateChangedEvent",
    "ConversationItemAddedEvent",
    "ErrorEvent",
    "MetricsCollectedEvent",
    "Models",
    "RunContext",
    "SpeechCreatedEvent",
    "SpeechHandle",
    "StopResponse",
    "ToolError",
    "TurnMetrics",
    "UserInputTranscribedEvent",
    "WakeWordDetectedEvent",
    "function_tool",
]
