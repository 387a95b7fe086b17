"""The device's config over the LiveKit data channel: RPC methods ``edgeagent.config.*``.

:class:`RoomControl` registers three RPC methods on the agent's participant in every
room joined (the protocol is in the README, "Configure a device over its room"):

- ``edgeagent.config.get`` ``{"v": 1}`` -> ``{"v": 1, "ok": true, "revision": N, "config": {...}}``
  (secrets that are set read ``***``);
- ``edgeagent.config.schema`` ``{"v": 1}`` -> ``{"v": 1, "ok": true, "revision": N, "schema": {...}}``;
- ``edgeagent.config.set`` ``{"v": 1, "base_revision": N, "patch": {...}}`` (an RFC 7386
  merge patch) -> ``{"v": 1, "ok": true, "revision": N+1, "changed": [...], "reload": [...]}``.

A refused call raises :class:`rtc.RpcError` whose ``data`` is ``{"v": 1, "ok": false,
"error": {"code", "message", "problems": [{"path", "code", "reason"}], "revision"?}}``
and whose numeric code is :data:`RPC_CODES` of the first problem (HTTP-like: 400, 403,
409, 413, 422, 429, 500, 507). Every accepted change is also broadcast, reliably, on
the data topic :data:`TOPIC` as ``{"v": 1, "revision", "changed", "by"}`` so every
controller in the room sees it.

Who may call: ``set`` only participants named in ``control.allowed_identities`` or
carrying the attribute ``control.allowed_attribute`` (NAME=VALUE, set in their token);
``get`` and ``schema`` anyone, unless ``control.restrict_get``. Each participant has a
token bucket (``control.rate_burst`` calls at once, ``control.rate_per_minute``
after). A refused call is logged with the caller's identity; nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.config.control import ControlConfig
from edgeagent.control.errors import ControlError
from edgeagent.control.patch import PROTOCOL_VERSION, parse_payload, parse_set_request, schema
from edgeagent.control.store import ApplyHook, ConfigStore

log = logging.getLogger(__name__)

TOPIC = "edgeagent.config"
"""Data topic of the change notices."""
PARTICIPANT_WAIT_S = 5.0
"""How long a call from a participant not yet announced by the server waits for it (attributes)."""

RPC_CODES = {
    "not_json": 400, "bad_shape": 400, "unsupported_version": 400, "missing": 400,
    "forbidden": 403,
    "stale_revision": 409,
    "too_large": 413,
    "unknown_key": 422, "wrong_type": 422, "out_of_range": 422, "bad_value": 422, "read_only": 422,
    "secret_not_allowed": 422, "invalid": 422,
    "rate_limited": 429,
    "apply_failed": 500,
    "write_failed": 507,
}

@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per caller: ``burst`` calls at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = per_minute / 60.0, float(burst), clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, who: str) -> float:
        """0.0 when ``who`` may call now; else seconds until the next call is allowed."""
        now = self.clock()
        b = self._buckets.get(who)
        if b is None:
            b = self._buckets[who] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate


def reply(**fields: Any) -> str:
    return json.dumps({"v": PROTOCOL_VERSION, "ok": True, **fields})


def refusal(err: ControlError) -> rtc.RpcError:
    data = json.dumps({"v": PROTOCOL_VERSION, "ok": False, "error": err.to_dict()})
    return rtc.RpcError(RPC_CODES.get(err.code, 400), str(err)[:200] or err.code, data)


class RoomControl:
    """Answers the config RPC methods in each room the device joins; see the module docs."""

    def __init__(self, store: ConfigStore, cfg: ControlConfig, apply: ApplyHook | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.cfg, self.apply = store, cfg, apply
        self.limiter = RateLimiter(cfg.rate_per_minute, cfg.rate_burst, clock)
        self._room: rtc.Room | None = None
        self._arrived = asyncio.Event()  # a participant was announced

    # -- rooms ------------------------------------------------------------------------------

    def attach(self, room: rtc.Room) -> None:
        """Register the methods on ``room``'s local participant (after each join)."""
        if not self.cfg.enabled:
            return
        self._room = room
        room.on("participant_connected", lambda p: self._arrived.set())
        lp = room.local_participant
        lp.register_rpc_method("edgeagent.config.get", self._get)
        lp.register_rpc_method("edgeagent.config.set", self._set)
        lp.register_rpc_method("edgeagent.config.schema", self._schema)

    def detach(self, room: rtc.Room) -> None:
        if room is self._room:
            self._room = None

    # -- who may call -----------------------------------------------------------------------

    async def may_set(self, identity: str) -> bool:
        if identity in self.cfg.allowed_identities:
            return True
        if not self.cfg.allowed_attribute or self._room is None:
            return False
        name, _, value = self.cfg.allowed_attribute.partition("=")
        # The server announces a participant that publishes nothing a second or two after it
        # joined; its first call can come before that, so wait a little for its attributes.
        deadline = time.monotonic() + PARTICIPANT_WAIT_S
        while (p := self._room.remote_participants.get(identity)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._arrived.wait(), left)
        return p is not None and (p.attributes or {}).get(name.strip()) == value.strip()

    async def _admit(self, data: rtc.RpcInvocationData, method: str, writes: bool) -> dict[str, Any]:
        """The request, once the caller may make it; ControlError (logged) otherwise."""
        who = data.caller_identity
        try:
            if (writes or self.cfg.restrict_get) and not await self.may_set(who):
                raise ControlError.one("", "forbidden", f"{who} may not call {method} "
                                       "(control.allowed_identities / control.allowed_attribute)")
            wait = self.limiter.take(who)
            if wait > 0:
                raise ControlError.one("", "rate_limited", f"too many calls from {who}; "
                                       f"try again in {wait:.1f} s")
            return parse_payload(data.payload, max_bytes=self.cfg.max_payload_bytes)
        except ControlError as err:
            log.warning("control: refused %s from %s: %s (%s)", method, who, err.code, err)
            raise

    # -- the methods ------------------------------------------------------------------------

    async def _get(self, data: rtc.RpcInvocationData) -> str:
        try:
            await self._admit(data, "edgeagent.config.get", writes=False)
        except ControlError as err:
            raise refusal(err) from None
        return reply(**self.store.get())

    async def _schema(self, data: rtc.RpcInvocationData) -> str:
        try:
            await self._admit(data, "edgeagent.config.schema", writes=False)
        except ControlError as err:
            raise refusal(err) from None
        return reply(revision=self.store.revision, schema=schema(allow_secrets=self.cfg.allow_secrets))

    async def _set(self, data: rtc.RpcInvocationData) -> str:
        who = data.caller_identity
        try:
            request = await self._admit(data, "edgeagent.config.set", writes=True)
            patch, base = parse_set_request(request)
            revision, changes = await self.store.set(patch, base, self.apply)
        except ControlError as err:
            if err.code not in ("forbidden", "rate_limited"):  # those are logged by _admit
                log.warning("control: refused edgeagent.config.set from %s: %s (%s)", who, err.code, err)
            raise refusal(err) from None
        changed = [c.to_dict() for c in changes]
        reload = [c.path for c in changes if c.needs_reload]
        if changes:
            log.info("control: %s set %s (revision %d)%s", who, ", ".join(c.path for c in changes), revision,
                     f"; at the next idle moment: {', '.join(reload)}" if reload else "")
            await self._announce(revision, changed, who)
        return reply(revision=revision, changed=changed, reload=reload)

    async def _announce(self, revision: int, changed: list[dict[str, Any]], who: str) -> None:
        room = self._room
        if room is None:
            return
        notice = json.dumps({"v": PROTOCOL_VERSION, "revision": revision, "changed": changed, "by": who})
        try:
            await room.local_participant.publish_data(notice, reliable=True, topic=TOPIC)
        except Exception as exc:  # the change stands; only the notice is lost
            log.warning("control: cannot broadcast the change notice: %s", exc)
