"""Config section ``[livekit]``: joining a LiveKit room as a participant.

Part of :class:`edgeagent.config.Config` (field ``livekit``); read by
:mod:`edgeagent.room`. With ``url`` unset the device joins no room.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from edgeagent.config.settings import HOT, JOIN, setting

LISTEN_MODES = ("linked", "identities", "all")
ROOM_MODES = ("room", "room+local", "worker", "worker+local")


def default_identity() -> str:
    """``edgeagent-<hostname>``: the participant identity when none is configured."""
    return f"edgeagent-{socket.gethostname().split('.')[0] or 'device'}"


@dataclass(frozen=True)
class LiveKitConfig:
    """A LiveKit room the device joins as a participant."""

    url: str | None = None
    """Server URL (ws://, wss://, http:// or https://); None = join no room."""
    token: str | None = setting(None, min_len=1, max_len=4096, remote=JOIN, secret=True)
    """A ready access token (JWT). Either this, or api_key + api_secret + room."""
    api_key: str | None = setting(None, min_len=1, max_len=4096, remote=JOIN, secret=True)
    """API key: with api_secret the device mints its own short-lived tokens."""
    api_secret: str | None = setting(None, min_len=1, max_len=4096, remote=JOIN, secret=True)
    """API secret that goes with api_key (keep this file private)."""
    room: str | None = None
    """Room to join (needed with api_key/api_secret; a token names its own room)."""
    identity: str | None = None
    """Participant identity; None = edgeagent-<hostname>."""
    listen: str = setting("linked", choices=LISTEN_MODES, remote=HOT)
    """Whom the agent listens to: linked (the first remote participant that joins, config
    controllers aside, re-linked to the next when they leave), identities (those listed below), or all (mixed)."""
    identities: tuple[str, ...] = setting((), min_len=1, max_len=256, max_items=64, unique=True, remote=HOT)
    """The participant identities the agent listens to (with listen = "identities")."""
    mode: str = "room"
    """room: the room is the agent's only ears and voice; room+local: the local mic and
    speaker work too (and keep working while the room is unreachable); worker: no room of
    its own: the device registers with the server as an agent worker and joins the rooms
    that applications dispatch it into, one at a time (edgeagent worker); worker+local: the
    same, and the local mic and speaker work too, between jobs and (as room+local) during one."""
    agent_name: str | None = None
    """worker: the agent name that applications dispatch; None = the participant identity.
    Devices that share a name form one pool: the server sends a job to any free one."""
    publish_local_mic: bool = False
    """room+local (worker+local: during a job): also publish the local mic as a second track
    (the sound around the board)."""
    e2ee_key: str | None = setting(None, min_len=1, max_len=4096, remote=JOIN, secret=True)
    """Shared end-to-end encryption key; None = no E2EE. Every participant needs the same key."""
    token_ttl_s: int = 600
    """Lifetime (s) of the tokens the device mints; they are renewed before they expire."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def participant_identity(self) -> str:
        return self.identity or default_identity()

    @property
    def worker(self) -> bool:
        """Whether the device is an agent worker (mode worker or worker+local)."""
        return self.mode in ("worker", "worker+local")

    @property
    def worker_agent_name(self) -> str:
        return self.agent_name or self.participant_identity


def check_livekit(cfg: LiveKitConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if cfg.listen not in LISTEN_MODES:
        return f"livekit.listen: expected one of {', '.join(LISTEN_MODES)}, got {cfg.listen!r}"
    if cfg.listen == "identities" and not cfg.identities:
        return "livekit.identities: listen = 'identities' needs at least one identity"
    if cfg.mode not in ROOM_MODES:
        return f"livekit.mode: expected one of {', '.join(ROOM_MODES)}, got {cfg.mode!r}"
    if cfg.publish_local_mic and not cfg.mode.endswith("+local"):
        return "livekit.publish_local_mic: needs mode = 'room+local' or 'worker+local'"
    if not 60 <= cfg.token_ttl_s <= 86_400:
        return f"livekit.token_ttl_s: expected 60-86400 s, got {cfg.token_ttl_s}"
    if cfg.e2ee_key is not None and len(cfg.e2ee_key) < 8:
        return "livekit.e2ee_key: use a shared key of at least 8 characters"
    if cfg.agent_name is not None and not 1 <= len(cfg.agent_name) <= 128:
        return "livekit.agent_name: expected 1-128 characters"
    if not cfg.url:
        return None
    if not cfg.url.startswith(("ws://", "wss://", "http://", "https://")):
        return f"livekit.url: expected ws://, wss://, http:// or https://, got {cfg.url!r}"
    if cfg.token:
        if cfg.api_key or cfg.api_secret:
            return "livekit: set either token or api_key/api_secret, not both"
        return None
    if not (cfg.api_key and cfg.api_secret):
        return "livekit: a url needs a token, or api_key and api_secret to mint one"
    if cfg.worker:
        return None  # each job names its room
    if not cfg.room:
        return "livekit.room: minting a token (api_key/api_secret) needs a room name"
    return None
