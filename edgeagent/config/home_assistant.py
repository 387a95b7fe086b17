"""Config section ``[home_assistant]``: Home Assistant's devices as tools, the board as its satellite.

Part of :class:`edgeagent.config.Config` (field ``home_assistant``); read by
:mod:`edgeagent.home_assistant`. Nothing here is used until it is set:

- ``url`` and ``token``: the local agent gets tools to list and control Home Assistant's
  entities and to pass a command to its conversation API (:mod:`edgeagent.home_assistant.tools`);
- ``satellite = true``: ``edgeagent run`` is a Wyoming voice satellite of Home Assistant
  (:mod:`edgeagent.home_assistant.satellite`): the wake word, VAD, echo cancellation and barge-in
  stay on the board, Home Assistant's Assist pipeline hears the question and answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeagent.config.settings import HOT, setting


@dataclass(frozen=True)
class HomeAssistantConfig:
    """Home Assistant: its REST API as the agent's tools, and the Wyoming satellite mode."""

    url: str | None = setting(None, min_len=1, max_len=2048, remote=HOT)
    """Home Assistant's address (e.g. http://homeassistant.local:8123); None: no Home Assistant tools."""
    token: str | None = setting(None, min_len=1, max_len=4096, remote=HOT, secret=True)
    """A long-lived access token (Home Assistant: your profile, Security, Long-lived access tokens);
    settable remotely only with control.allow_secrets, never sent back."""
    timeout_s: float = setting(5.0, lo=0.5, hi=60.0, remote=HOT)
    """A request to Home Assistant that takes longer fails with a short spoken sentence (s)."""
    conversation_agent: str | None = setting(None, min_len=1, max_len=256, remote=HOT)
    """agent_id for Home Assistant's conversation API; None: its default agent."""
    satellite: bool = False
    """Run as a Wyoming voice satellite of Home Assistant (its Assist pipeline answers)."""
    host: str = "127.0.0.1"
    """Address the satellite listens on; 127.0.0.1 = this board only. Give the board's LAN address
    (or 0.0.0.0) so that Home Assistant on another machine can connect."""
    port: int = setting(10700, lo=0, hi=65535)
    """TCP port of the satellite (Home Assistant's default for Wyoming satellites); 0: any free port."""
    zeroconf: bool = True
    """Advertise the satellite over zeroconf (_wyoming._tcp.local.) on the listening address, so
    Home Assistant discovers it."""
    name: str | None = setting(None, min_len=1, max_len=63)
    """Satellite name shown in Home Assistant; None: edgeagent-<hostname>."""
    area: str | None = None
    """Home Assistant area the satellite suggests for itself (e.g. Kitchen)."""
    listen_s: float = setting(8.0, lo=1.0, hi=60.0)
    """After the wake word, the longest the question is streamed to Home Assistant (s)."""
    answer_s: float = setting(30.0, lo=1.0, hi=300.0)
    """How long the satellite waits for Home Assistant's answer once the question is sent (s)."""


def check_home_assistant(cfg: HomeAssistantConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if cfg.url is not None and not cfg.url.startswith(("http://", "https://")):
        return f"home_assistant.url: expected an http:// or https:// URL, got {cfg.url!r}"
    if cfg.url is not None and not cfg.token:
        return "home_assistant.token: the tools need a long-lived access token with home_assistant.url"
    if not cfg.host.strip():
        return "home_assistant.host: give an address to listen on (127.0.0.1 for this board only)"
    return None
