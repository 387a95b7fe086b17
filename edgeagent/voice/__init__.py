"""The talking agent: for now the minimal sequential :class:`VoiceLoop` (issue 4 replaces it)."""

from edgeagent.voice.loop import (
    AgentReply,
    AgentState,
    LoopEvent,
    StateChanged,
    UserTranscript,
    VoiceLoop,
    WakeDetected,
)
from edgeagent.voice.stages import Models

__all__ = [
    "AgentReply",
    "AgentState",
    "LoopEvent",
    "Models",
    "StateChanged",
    "UserTranscript",
    "VoiceLoop",
    "WakeDetected",
]
