"""The console's data channel: one JSON message per data-channel message, both ways.

Board → browser: the :class:`~edgeagent.web.feed.SessionFeed` messages (``state``,
``transcript``, ``metrics``), ``{"type": "hello", "peer", "state", "config_access"}``
when the channel opens, ``{"type": "config", "payload": "<notice>"}`` after every
accepted config change (the notice of the room's ``edgeagent.config`` topic), and
``{"type": "error", "message"}`` for a message it could not take.

Browser → board:

- ``{"type": "chat", "text": "..."}``: typed text (``lk.chat``);
- ``{"type": "rpc", "id": N, "method": "edgeagent.config.get|schema|set", "payload": "<json>"}``:
  the remote-config RPC methods with the same payloads, validation, limits and error codes
  as in a LiveKit room (README, "Configure a device over its room"). The answer is
  ``{"type": "rpc", "id": N, "ok": true, "payload": "<json>"}`` or, refused,
  ``{"type": "rpc", "id": N, "ok": false, "code": 422, "message", "payload": "<json>"}``
  (what ``rtc.RpcError`` carries: its code, message and data).

Who may call: a paired browser may ``get``/``schema`` unless ``web.config_access`` is
``none``, and ``set`` when it is ``set``; each browser has the token bucket of
``[control]`` (``rate_per_minute``, ``rate_burst``) and its ``max_payload_bytes``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from edgeagent.control.errors import ControlError
from edgeagent.control.patch import PROTOCOL_VERSION, parse_payload, parse_set_request, schema
from edgeagent.room.config_rpc import RPC_CODES, RateLimiter, reply
from edgeagent.web.feed import ChatRefused, Message, SessionFeed

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.control.store import ApplyHook, ConfigStore
    from edgeagent.web.peer import Peer

log = logging.getLogger(__name__)

METHODS = ("edgeagent.config.get", "edgeagent.config.schema", "edgeagent.config.set")
MAX_MESSAGE_BYTES = 256 * 1024


class ChannelHub:
    """Every browser's data channel; broadcasts the feed and answers what comes in."""

    def __init__(self, feed: SessionFeed, cfg: Config, store: ConfigStore | None,
                 apply: ApplyHook | None = None) -> None:
        self.feed, self.cfg, self.store, self.apply = feed, cfg, store, apply
        self.limiter = RateLimiter(cfg.control.rate_per_minute, cfg.control.rate_burst)
        self.channels: dict[str, Any] = {}

    # -- channels --------------------------------------------------------------------

    def add(self, peer: Peer, channel: Any) -> None:
        """Take ``peer``'s data channel (aiortc's ``datachannel`` event)."""
        self.channels[peer.id] = channel

        @channel.on("message")  # type: ignore[untyped-decorator]
        async def on_message(message: Any) -> None:
            await self.receive(peer.id, message)

        @channel.on("close")  # type: ignore[untyped-decorator]
        def on_close() -> None:
            if self.channels.get(peer.id) is channel:
                del self.channels[peer.id]

        hello = {"type": "hello", "peer": peer.id, "state": self.feed.state.value,
                 "config_access": self.cfg.web.config_access if self.store is not None else "none"}
        if channel.readyState == "open":
            self._send(channel, hello)
        else:
            channel.on("open", lambda: self._send(channel, hello))

    def remove(self, peer: Peer) -> None:
        self.channels.pop(peer.id, None)

    def broadcast(self, message: Message) -> None:
        for channel in list(self.channels.values()):
            self._send(channel, message)

    @staticmethod
    def _send(channel: Any, message: Message) -> None:
        if channel.readyState != "open":
            return
        try:
            channel.send(json.dumps(message))
        except Exception as exc:  # a closing channel: that browser is going anyway
            log.debug("web: cannot send to a data channel: %s", exc)

    def _to(self, peer_id: str, message: Message) -> None:
        channel = self.channels.get(peer_id)
        if channel is not None:
            self._send(channel, message)

    # -- what comes in ---------------------------------------------------------------

    async def receive(self, peer_id: str, message: Any) -> None:
        if isinstance(message, bytes):
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                self._to(peer_id, {"type": "error", "message": "messages must be UTF-8 JSON"})
                return
        if len(message) > MAX_MESSAGE_BYTES:
            self._to(peer_id, {"type": "error", "message": f"message over {MAX_MESSAGE_BYTES} bytes"})
            return
        try:
            data = json.loads(message)
            kind = data["type"]
        except (ValueError, TypeError, KeyError):
            self._to(peer_id, {"type": "error", "message": "expected a JSON object with a type"})
            return
        if kind == "chat":
            try:
                self.feed.chat(data.get("text"))
                log.info("web chat from %s: %s", peer_id, str(data.get("text")).strip()[:200])
            except ChatRefused as exc:
                log.warning("web chat from %s refused: %s", peer_id, exc)
                self._to(peer_id, {"type": "error", "message": f"chat refused: {exc}"})
        elif kind == "rpc":
            answer = await self.call(peer_id, data.get("method"), data.get("payload", ""))
            self._to(peer_id, {"type": "rpc", "id": data.get("id"), **answer})
        else:
            self._to(peer_id, {"type": "error", "message": f"unknown message type {kind!r}"})

    # -- config ----------------------------------------------------------------------

    async def call(self, who: str, method: Any, payload: Any) -> dict[str, Any]:
        """One config RPC call from browser ``who``: ``{"ok", "payload"}`` (+ code, message)."""
        try:
            if method not in METHODS:
                raise ControlError.one("", "bad_shape", f"unknown method {method!r}; known: {', '.join(METHODS)}")
            if not isinstance(payload, str):
                payload = json.dumps(payload)
            access = self.cfg.web.config_access if self.store is not None else "none"
            writes = method == "edgeagent.config.set"
            if access == "none" or (writes and access != "set"):
                raise ControlError.one("", "forbidden", f"the console may not call {method} "
                                       f"(web.config_access = {access})")
            wait = self.limiter.take(who)
            if wait > 0:
                raise ControlError.one("", "rate_limited", f"too many calls; try again in {wait:.1f} s")
            request = parse_payload(payload, max_bytes=self.cfg.control.max_payload_bytes)
            assert self.store is not None
            if method == "edgeagent.config.get":
                return {"ok": True, "payload": reply(**self.store.get())}
            if method == "edgeagent.config.schema":
                return {"ok": True, "payload": reply(revision=self.store.revision,
                                                     schema=schema(allow_secrets=self.cfg.control.allow_secrets))}
            return {"ok": True, "payload": await self._set(who, request)}
        except ControlError as err:
            log.warning("web: refused %s from browser %s: %s (%s)", method, who, err.code, err)
            data = json.dumps({"v": PROTOCOL_VERSION, "ok": False, "error": err.to_dict()})
            return {"ok": False, "code": RPC_CODES.get(err.code, 400), "message": str(err)[:200] or err.code,
                    "payload": data}

    async def _set(self, who: str, request: dict[str, Any]) -> str:
        assert self.store is not None
        patch, base = parse_set_request(request)
        revision, changes = await self.store.set(patch, base, self.apply)
        changed = [c.to_dict() for c in changes]
        reload = [c.path for c in changes if c.needs_reload]
        if changes:
            log.info("web: browser %s set %s (revision %d)%s", who, ", ".join(c.path for c in changes), revision,
                     f"; at the next idle moment: {', '.join(reload)}" if reload else "")
            notice = json.dumps({"v": PROTOCOL_VERSION, "revision": revision, "changed": changed,
                                 "by": f"web:{who}"})
            self.broadcast({"type": "config", "payload": notice})
        return reply(revision=revision, changed=changed, reload=reload)
