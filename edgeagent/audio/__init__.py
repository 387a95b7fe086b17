"""Audio frames, conversion at the edges, and the input/output contract."""

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, AudioOutput, IOCounters

__all__ = ["RECOGNITION_RATE", "AudioFrame", "AudioInput", "AudioOutput", "IOCounters"]
