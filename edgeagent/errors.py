"""The error hierarchy: one base, one class per area, a ``retryable`` flag.

Supervised loops catch :class:`EdgeAgentError`, log it, and retry when
``retryable`` is true; anything else is fatal and ends the process (systemd
restarts it). Messages are written for the person at the device: what is
wrong, and the command that fixes it.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edgeagent raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(EdgeAgentError):
    """A configuration value is missing, malformed or out of range."""


class ModelError(EdgeAgentError):
    """A model file is missing, corrupt, or cannot be fetched."""


class AudioError(EdgeAgentError):
    """An audio file or device cannot be read, opened or written."""


class AudioFormatError(AudioError):
    """Audio has a sample rate, width or channel count that cannot be used."""


class DeviceNotFoundError(AudioError):
    """No sound device matches the requested name or index."""
