"""Config section ``[web]``: the web console and the direct WebRTC peer (``edgeagent web``).

Part of :class:`edgeagent.config.Config` (field ``web``); read by :mod:`edgeagent.web`.
Off by default. When on, the device serves its console on ``host:port`` (loopback unless
the owner names a LAN address) and talks to a browser over WebRTC, with no server between.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeagent.config.settings import setting

CONFIG_ACCESS = ("none", "get", "set")
TLS_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class WebConfig:
    """The web console and the browser's direct WebRTC connection."""

    enabled: bool = False
    """Serve the console and accept browsers (``edgeagent run`` then talks to the browser)."""
    host: str = "127.0.0.1"
    """Address the console listens on; 127.0.0.1 = this board only. Give the board's LAN
    address (or 0.0.0.0) to reach it from a phone or laptop on the same network."""
    port: int = 8780
    """TCP port of the console; 0: any free port (the URL is printed)."""
    tls: str = "auto"
    """HTTPS with a self-signed certificate made on the first run (browsers give a page the mic
    only over HTTPS, or on 127.0.0.1): auto (on unless host is a loopback address), on or off."""
    password: str | None = setting(None, secret=True)
    """The pairing secret a browser must give. None: a pairing code is made on the first run,
    kept in the state directory (web-pairing-code) and printed in the log."""
    max_clients: int = 1
    """Browsers connected at once; a further one is refused until one disconnects."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs (stun:host:port, turn:host:port?transport=udp); empty: host candidates
    only, which is all a LAN needs."""
    turn_username: str | None = None
    """Username for the turn: servers of ice_servers."""
    turn_credential: str | None = setting(None, secret=True)
    """Credential for the turn: servers of ice_servers."""
    config_access: str = "set"
    """What a paired browser may do with the config: none, get (read it) or set (read and
    change it, with the validation and limits of [control])."""
    max_chat_bytes: int = 4096
    """Largest chat message accepted from a browser (bytes of UTF-8)."""


def check_web(cfg: WebConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if not cfg.host.strip():
        return "web.host: give an address to listen on (127.0.0.1 for this board only)"
    if not 0 <= cfg.port <= 65535:
        return f"web.port: expected 0-65535, got {cfg.port}"
    if cfg.password is not None and len(cfg.password) < 6:
        return "web.password: use at least 6 characters (or leave it unset for a pairing code)"
    if not 1 <= cfg.max_clients <= 16:
        return f"web.max_clients: expected 1-16, got {cfg.max_clients}"
    for url in cfg.ice_servers:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            return f"web.ice_servers: expected stun:, stuns:, turn: or turns: URLs, got {url!r}"
    if cfg.tls not in TLS_MODES:
        return f"web.tls: expected one of {', '.join(TLS_MODES)}, got {cfg.tls!r}"
    if cfg.config_access not in CONFIG_ACCESS:
        return f"web.config_access: expected one of {', '.join(CONFIG_ACCESS)}, got {cfg.config_access!r}"
    if not 64 <= cfg.max_chat_bytes <= 65536:
        return f"web.max_chat_bytes: expected 64-65536, got {cfg.max_chat_bytes}"
    return None
