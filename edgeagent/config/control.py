"""Config section ``[control]``: who may read and change the device's config remotely.

Part of :class:`edgeagent.config.Config` (field ``control``); read by
:mod:`edgeagent.control`. The section itself is read-only remotely: only the
person with the config file decides who the controllers are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControlConfig:
    """Remote configuration over the LiveKit data channel (RPC edgeagent.config.*)."""

    enabled: bool = True
    """Answer the config RPC methods (get, set, schema) in the room."""
    allowed_identities: tuple[str, ...] = ()
    """Participant identities that may change the config (set)."""
    allowed_attribute: str = ""
    """A participant attribute that also allows set, written NAME=VALUE
    (e.g. "edgeagent.role=admin"); empty: none."""
    restrict_get: bool = False
    """Limit get and schema to the participants who may set; false: anyone in the room may read
    the config (secrets are never sent back)."""
    allow_secrets: bool = False
    """Allow setting secrets (API keys, tokens, the E2EE key) remotely; they are never sent back."""
    max_payload_bytes: int = 16384
    """Largest request accepted (bytes of JSON); bigger ones are refused unread."""
    rate_per_minute: int = 30
    """Calls per minute allowed to each participant (a token bucket refilled at this rate)."""
    rate_burst: int = 10
    """Calls a participant may make at once before the per-minute rate applies."""


def check_control(cfg: ControlConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if any(not ident.strip() for ident in cfg.allowed_identities):
        return "control.allowed_identities: an identity must not be empty"
    if cfg.allowed_attribute:
        name, sep, value = cfg.allowed_attribute.partition("=")
        if not sep or not name.strip() or not value.strip():
            return f"control.allowed_attribute: expected NAME=VALUE, got {cfg.allowed_attribute!r}"
    if not 256 <= cfg.max_payload_bytes <= 1_048_576:
        return f"control.max_payload_bytes: expected 256-1048576, got {cfg.max_payload_bytes}"
    if not 1 <= cfg.rate_per_minute <= 6000:
        return f"control.rate_per_minute: expected 1-6000, got {cfg.rate_per_minute}"
    if not 1 <= cfg.rate_burst <= 1000:
        return f"control.rate_burst: expected 1-1000, got {cfg.rate_burst}"
    return None
