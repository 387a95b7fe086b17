"""edgeagent: an on-device voice agent for single-board computers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
