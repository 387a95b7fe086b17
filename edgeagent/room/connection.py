"""RoomLink: the device's membership of one LiveKit room, kept up for as long as it runs.

    link = RoomLink(cfg.livekit)
    link.add_connected_hook(lambda room: ...)   # after every (re)connect
    await link.start()                          # returns at once; connecting goes on in the background
    ...
    await link.aclose()

A supervisor task connects a fresh :class:`rtc.Room` (with the shared E2EE key when
one is set), publishes the agent's audio track (see :meth:`RoomLink.set_agent_audio`),
runs the connected hooks, and waits for the room to go. Each step is logged on
``edgeagent.room.connection``.

When the connection breaks (a network cut, a server killed or restarted), the SDK
(livekit 1.2) first tries to get it back itself, on the same Room: ``reconnecting``,
then up to 10 attempts 0.1-7 s apart (23-28 s in all, measured on loopback). A quick blip is a
*resume* (same session). A server that went away and came back (same keys, nothing of
the old session left) is a *full reconnect*: the SDK joins it anew with the same
Room, republishes our tracks with new sids (``local_track_republished``; the
publication objects, :attr:`RoomLink.agent_publication` included, are updated in
place), keeps our attributes, and reports the remote participants leaving
(``track_unsubscribed``, ``participant_disconnected``) and then joining again, so
handlers attached by the connected hooks stay valid; then ``reconnected``. The
connected hooks are not run again for that Room (they would publish a second time);
code that must refresh something after it listens to the Room's ``reconnected``.
When the SDK gives up (``disconnected``), the supervisor joins again with a new Room
after an exponential backoff with jitter (``backoff_s`` doubling up to
``max_backoff_s``, each delay drawn from its upper half), so remote tracks are
subscribed again, our track is published again and the connected hooks run again.
``max_backoff_s`` is 8 s: after a long outage the device is back at most ~8 s after the
server (the SDK's own attempts are at most ~7 s apart), well within 15 s.

Another participant joining with our identity makes the server drop us
(``DUPLICATE_IDENTITY``). That is permanent too: two devices with one identity would
otherwise take turns throwing each other out every few seconds, so the one dropped
logs one error line naming the identity, sets :attr:`RoomLink.failed` and stays out
(the local agent runs on; give each device its own ``livekit.identity``). A device that
restarts takes its old session's place the same way, and the old one is gone by then.

Errors never reach the caller. Network trouble (refused, DNS, timeouts, a server that
went away) is retried forever. An authentication refusal (HTTP 401/403: a bad,
expired or foreign token, a wrong secret, no room_join grant) is **permanent**: one
clear error line, :attr:`RoomLink.failed` set, no more attempts, because the same
credentials will be refused again; fix the config and restart (the local agent runs
on). Grants missing from a given token (publish, subscribe, data, metadata) are one
error line each after the join; the room stays joined for what still works.

Tokens: a configured token is used as is; with api_key/api_secret each join uses a
token minted for ``token_ttl_s`` and renewed once 80% of its life has passed. A joined
room does not need a fresh token: the server refreshes the session's own token, and
the SDK uses it to resume.

A dispatched job (:mod:`edgeagent.worker`) has ``rejoin=False``: a room the SDK reports lost
is not joined again (that would create it anew); :attr:`RoomLink.ended` is set instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.config.room import LiveKitConfig
from edgeagent.errors import ConfigError
from edgeagent.room.join_problems import describe_error, hide_tokens, missing_grants
from edgeagent.room.token import TokenSource

log = logging.getLogger(__name__)

ABANDONED_JOIN_S = 30.0
"""How long a join attempt that timed out may go on in the SDK before the next one starts."""

Hook = Callable[[rtc.Room], "Awaitable[None] | None"]

class RoomLink:
    """See the module docs."""

    def __init__(
        self,
        cfg: LiveKitConfig,
        *,
        tokens: TokenSource | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        connect_timeout_s: float = 10.0,
        abandon_s: float = ABANDONED_JOIN_S,
        rejoin: bool = True,
    ) -> None:
        if not cfg.url:
            raise ConfigError("livekit.url: set the server URL to join a room")
        self.cfg = cfg
        self.url = cfg.url
        self.tokens = tokens or TokenSource(cfg)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.abandon_s = abandon_s
        self.rejoin = rejoin
        #: Set when a link with ``rejoin=False`` has lost its room for good; :attr:`end_reason` says why.
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        #: The joined room; None while (re)connecting.
        self.room: rtc.Room | None = None
        #: Set while joined.
        self.connected = asyncio.Event()
        #: Set when the link has given up (a permanent error); :attr:`last_error` says why.
        self.failed = asyncio.Event()
        self.last_error: str | None = None
        #: Joins that succeeded so far (the first is 1).
        self.joins = 0
        #: The publication of the agent's voice in the current room (its ``sid`` names the
        #: track in ``lk.transcribed_track_id``).
        self.agent_publication: rtc.LocalTrackPublication | None = None
        self._agent_source: rtc.AudioSource | None = None
        self._agent_track_name = "agent-voice"
        self._connected_hooks: list[Hook] = []
        self._disconnected_hooks: list[Hook] = []
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Future[None]] = set()
        self._gone = asyncio.Event()
        self._closed = False
        self._lost_at: float | None = None  # when the current outage began
        self._ousted = False  # the server dropped the joined room for a duplicate identity
        self._lost_reason: str | None = None  # the DisconnectReason name of the last loss

    # -- public ------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self.tokens.identity

    @property
    def agent_track_sid(self) -> str | None:
        return self.agent_publication.sid if self.agent_publication is not None else None

    def add_connected_hook(self, hook: Hook) -> None:
        """Call ``hook(room)`` after every join (after the agent track is published); at
        once too when already joined. It may be a coroutine function; errors are logged."""
        self._connected_hooks.append(hook)
        if self.room is not None and self.connected.is_set():
            self._spawn(self._call(hook, self.room, "connected hook"))

    def add_disconnected_hook(self, hook: Hook) -> None:
        """Call ``hook(room)`` when a joined room is lost or left."""
        self._disconnected_hooks.append(hook)

    def set_agent_audio(self, source: rtc.AudioSource, name: str = "agent-voice") -> None:
        """Publish ``source`` as the agent's voice in every room joined (now too, if joined)."""
        self._agent_source, self._agent_track_name = source, name
        if self.room is not None and self.connected.is_set():
            self._spawn(self._publish_agent(self.room))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def start(self) -> None:
        """Start joining in the background; returns at once."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._supervise(), name="room-link")

    async def wait_connected(self, timeout: float) -> bool:
        """True once joined within ``timeout`` seconds; False on timeout or a permanent failure."""
        waits = [asyncio.ensure_future(self.connected.wait()), asyncio.ensure_future(self.failed.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.connected.is_set()

    async def aclose(self) -> None:
        """Leave the room and stop reconnecting; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._gone.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wait_for(self._task, 15)
        room, self.room = self.room, None
        self.connected.clear()
        if room is not None:
            await self._leave(room)

    # -- the supervisor ------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return float(cap * random.uniform(0.5, 1.0))

    def _options(self) -> rtc.RoomOptions:
        opts = rtc.RoomOptions(auto_subscribe=True, connect_timeout=min(5.0, self.connect_timeout_s))
        if self.cfg.e2ee_key:
            opts.encryption = rtc.E2EEOptions(
                key_provider_options=rtc.KeyProviderOptions(shared_key=self.cfg.e2ee_key.encode()))
        return opts

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closed:
            room = await self._join()
            if room is None:
                if self.failed.is_set():
                    return
                delay = self._backoff(attempt)
                attempt += 1
                log.info("room: next attempt in %.1f s (attempt %d)", delay, attempt + 1)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            await self._gone.wait()
            self.connected.clear()
            self.room = None
            self.agent_publication = None
            for hook in list(self._disconnected_hooks):
                await self._call(hook, room, "disconnected hook")
            if self._closed:
                await self._leave(room)
                return
            await self._leave(room)
            if not self.rejoin:
                self.end_reason = self._lost_reason or "disconnected"
                log.info("room: left %r (%s); not joining again", room.name, self.end_reason)
                self.ended.set()
                return
            if self._ousted:
                self._give_up(f"another participant joined room {room.name!r} as {self.identity!r} and the "
                              "server dropped this one (DUPLICATE_IDENTITY); staying out so that the two do not "
                              "take turns throwing each other out (give each device its own livekit.identity)")
                return
            delay = self._backoff(0)
            log.info("room: rejoining in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _join(self) -> rtc.Room | None:
        """One attempt; the joined room, or None (the error is logged)."""
        try:
            token = self.tokens.get()
        except ConfigError as exc:
            self._give_up(str(exc))
            return None
        room = rtc.Room()
        self._gone.clear()
        room.on("disconnected", lambda reason: self._on_disconnected(room, reason))
        room.on("reconnecting", lambda: self._on_reconnecting(room))
        room.on("reconnected", lambda: self._on_reconnected(room))
        room.on("local_track_republished", lambda pub, old: self._on_republished(room, pub, old))
        log.info("room: joining %s as %s%s", self.url, self.identity, " (E2EE)" if self.cfg.e2ee_key else "")
        connecting = asyncio.ensure_future(room.connect(self.url, token.jwt, self._options()))
        try:
            await wait_for(asyncio.shield(connecting), self.connect_timeout_s)
        except asyncio.CancelledError:
            connecting.cancel()
            raise
        except (Exception, asyncio.TimeoutError) as exc:
            line, permanent = describe_error(exc, self.url)
            if not connecting.done():
                await self._abandon(connecting)
            await self._leave(room)
            if permanent:
                self._give_up(line)
            elif line != self.last_error:
                log.error("room: %s", line)
            else:
                log.info("room: still failing: %s", line)
            self.last_error = line
            return None
        self.joins += 1
        self.last_error = None
        lost = f", {time.monotonic() - self._lost_at:.1f} s after the room was lost" \
            if self._lost_at is not None else ""
        self._lost_at = None
        log.info("room: joined %r as %s (join %d, %d other participant(s)%s)",
                 room.name, self.identity, self.joins, len(room.remote_participants), lost)
        for line in missing_grants(room):
            log.error("room: %s", line)
        self.room = room
        if self._agent_source is not None:
            await self._publish_agent(room)
        self.connected.set()
        for hook in list(self._connected_hooks):
            await self._call(hook, room, "connected hook")
        return room

    def _give_up(self, line: str) -> None:
        self.last_error = line
        log.error("room: %s; not retrying (fix the [livekit] config)", line)
        self.failed.set()

    async def _publish_agent(self, room: rtc.Room) -> None:
        source = self._agent_source
        if source is None or not room.local_participant.permissions.can_publish:
            return
        track = rtc.LocalAudioTrack.create_audio_track(self._agent_track_name, source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        try:
            pub = await wait_for(room.local_participant.publish_track(track, opts), 15)
        except (Exception, asyncio.TimeoutError) as exc:
            log.error("room: cannot publish the agent's voice: %s", hide_tokens(str(exc)) or "timeout")
            return
        if room is self.room:
            self.agent_publication = pub
        log.info("room: published the agent's voice as track %s", pub.sid)

    async def _call(self, hook: Hook, room: rtc.Room, what: str) -> None:
        try:
            result = hook(room)
            if inspect.isawaitable(result):
                await wait_for(result, 15)
        except (Exception, asyncio.TimeoutError):
            log.exception("room: %s %r failed", what, hook)

    async def _abandon(self, connecting: asyncio.Future[None]) -> None:
        """Wait for a join attempt that took too long to end, before the next one.

        Cancelling ``Room.connect`` does not stop the SDK: it goes on trying in the background
        (and ``disconnect()`` of a room that is not connected yet does nothing), so it could
        join later and throw the next attempt, which has the same identity, out of the room
        with DUPLICATE_IDENTITY (seen after a watchdog restart: scripts/check-service)."""
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(asyncio.shield(connecting), self.abandon_s)
        if not connecting.done():
            connecting.cancel()
        log.info("room: the join attempt that took too long has ended")

    async def _leave(self, room: rtc.Room) -> None:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(room.disconnect(), 10)

    # -- room events (on the loop) -------------------------------------------------------

    def _on_disconnected(self, room: rtc.Room, reason: Any) -> None:
        if room is self.room or self.room is None:
            if not self._closed:
                name = rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else reason  # type: ignore[arg-type]
                (log.warning if self.rejoin else log.info)("room: disconnected (%s)", name)  # a job's room: its end
                self._lost_reason = str(name)
                if room is self.room and reason == rtc.DisconnectReason.DUPLICATE_IDENTITY:
                    self._ousted = True
                if room is self.room and self._lost_at is None:
                    self._lost_at = time.monotonic()
            self._gone.set()

    def _on_reconnecting(self, room: rtc.Room) -> None:
        if room is self.room:
            log.warning("room: connection lost, the SDK is trying to get it back")
            self._lost_at = time.monotonic()
            self.connected.clear()

    def _on_reconnected(self, room: rtc.Room) -> None:
        if room is self.room:
            lost = f" after {time.monotonic() - self._lost_at:.1f} s" if self._lost_at is not None else ""
            self._lost_at = None
            log.info("room: connection back%s (the SDK's reconnect; agent track %s)", lost, self.agent_track_sid)
            self.connected.set()

    def _on_republished(self, room: rtc.Room, pub: rtc.LocalTrackPublication, old: str) -> None:
        if room is self.room:
            log.info("room: the server lost our session; the SDK joined again and republished %s as %s (was %s)",
                     pub.name, pub.sid, old)
