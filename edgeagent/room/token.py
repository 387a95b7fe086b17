"""Access tokens for the room: minted on the device with ``livekit-api``, or given ready.

A minted token carries exactly what the agent needs: join this one room, publish
(audio and data), subscribe, and update its own metadata and attributes (for
``lk.agent.state``), for a short ``ttl_s``. :class:`TokenSource` hands out a token
and knows when it expires, so the connection can renew it ahead of time.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

import jwt
from livekit import api

from edgeagent.config.room import LiveKitConfig
from edgeagent.errors import ConfigError

#: Renew a token once this fraction of its life has passed.
RENEW_AT = 0.8


@dataclass(frozen=True)
class Token:
    """A JWT and when it stops being valid (Unix time; None = never, or unknown)."""

    jwt: str
    expires_at: float | None

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


def agent_grants(room: str) -> api.VideoGrants:
    """The grants the agent needs in ``room``, and nothing more."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=True,  # covers set_attributes (lk.agent.state)
    )


def mint_token(
    api_key: str, api_secret: str, *, room: str, identity: str, name: str | None = None, ttl_s: int = 600
) -> Token:
    """A fresh token for ``identity`` in ``room`` that expires after ``ttl_s`` seconds."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = time.time()
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_kind("agent")
        .with_grants(agent_grants(room))
        .with_ttl(datetime.timedelta(seconds=ttl_s))
        .to_jwt()
    )
    return Token(token, float(int(now) + ttl_s))


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: we hold no secret for a given token)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ConfigError(f"livekit.token: not a JWT ({exc})") from exc
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


class TokenSource:
    """Where the connection gets its tokens: minted (renewable) or the configured one."""

    def __init__(self, cfg: LiveKitConfig) -> None:
        self.cfg = cfg
        self.identity = cfg.participant_identity
        if not cfg.token and not (cfg.api_key and cfg.api_secret and cfg.room):
            raise ConfigError("livekit: a url needs a token, or api_key, api_secret and room to mint one")
        self._current: Token | None = None

    @property
    def renewable(self) -> bool:
        return not self.cfg.token

    def get(self) -> Token:
        """The current token, minting a new one when none is left or it is due for renewal."""
        cur = self._current
        if cur is not None and not self.due(cur):
            return cur
        if self.cfg.token:
            cur = Token(self.cfg.token, token_expiry(self.cfg.token))
        else:
            assert self.cfg.api_key and self.cfg.api_secret and self.cfg.room
            cur = mint_token(self.cfg.api_key, self.cfg.api_secret, room=self.cfg.room,
                             identity=self.identity, ttl_s=self.cfg.token_ttl_s)
        self._current = cur
        return cur

    def renew_in(self, token: Token, now: float | None = None) -> float | None:
        """Seconds until ``token`` should be replaced (None: never)."""
        if token.expires_at is None or not self.renewable:
            return None
        life = float(self.cfg.token_ttl_s)
        return max(0.0, token.expires_at - (1 - RENEW_AT) * life - (time.time() if now is None else now))

    def due(self, token: Token) -> bool:
        left = self.renew_in(token)
        return left is not None and left <= 0
