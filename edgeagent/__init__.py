"""edgeagent: an on-device voice agent for single-board computers."""

from edgeagent.audio.frame import AudioFrame

__version__ = "0.1.0"
__all__ = ["AudioFrame", "__version__"]
