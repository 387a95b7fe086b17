"""WorkerLink: the device registered with livekit-server as an agent worker, kept registered.

    link = WorkerLink(cfg.livekit, handler)       # handler: availability, assignment, termination
    await link.start()                            # returns at once; registering goes on in the background
    await link.send_status(full=True, jobs=1)
    ...
    await link.aclose()

The agent worker protocol (livekit-server ``pkg/agent`` and ``pkg/service/agentservice.go``,
messages ``livekit.protocol.agent``), as spoken here:

1. A WebSocket to ``<url>/agent`` (``http`` becomes ``ws``) with ``Authorization: Bearer <JWT>``,
   a token with the ``agent`` grant (minted from api_key/api_secret, or the configured token).
2. ``WorkerMessage.register`` (job type ``JT_ROOM``, the agent name, our version, the
   participant permissions a job token gets); the server answers ``ServerMessage.register``
   with the worker id within 10 s, else it drops the socket.
3. Then any order: the server sends ``availability`` (a job offered: answer at once,
   ``available`` true or false; it waits 10 s, then tries another worker), ``assignment``
   (the job is ours: its token), ``termination`` (end that job), ``pong``. We send
   ``update_worker`` (``WS_AVAILABLE``/``WS_FULL``, job count, load: the server offers
   jobs only to available workers), ``update_job`` (a job's status, ``JS_SUCCESS`` or
   ``JS_FAILED`` at its end) and ``ping`` every :attr:`ping_s`.

A socket that closes, or brings nothing (not even a pong) for :attr:`silence_s`, is
dropped and the link registers again after an exponential backoff with jitter
(``backoff_s`` doubling up to ``max_backoff_s``). Each registration gets a new worker
id; the handler's ``registered`` is called again and should send the current status.
A refusal of the token (HTTP 401) is permanent: one error line, :attr:`failed` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from typing import Protocol

import aiohttp
from livekit import api
from livekit.protocol import agent, models

from edgeagent import __version__
from edgeagent.aio import wait_for
from edgeagent.config.room import LiveKitConfig
from edgeagent.errors import ConfigError

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0
"""The server drops a socket that has not registered within 10 s (``RegisterTimeout``)."""


class WorkerHandler(Protocol):
    """What a :class:`WorkerLink` reports; each method is called on the loop and must not block."""

    def registered(self, worker_id: str) -> None: ...
    def availability(self, request: agent.AvailabilityRequest) -> None: ...
    def assignment(self, assignment: agent.JobAssignment) -> None: ...
    def termination(self, termination: agent.JobTermination) -> None: ...
    def unregistered(self) -> None: ...


def agent_url(url: str) -> str:
    """``ws://host:7880`` (or http, with a path) → ``ws://host:7880/agent``."""
    if url.startswith("http"):
        url = "ws" + url[4:]
    return url.rstrip("/") + "/agent"


def worker_token(cfg: LiveKitConfig, ttl_s: int = 600) -> str:
    """A token with the ``agent`` grant: the configured one, or minted."""
    if cfg.token:
        return cfg.token
    if not (cfg.api_key and cfg.api_secret):
        raise ConfigError("livekit: a worker needs api_key and api_secret (or a token with the agent grant)")
    return (api.AccessToken(cfg.api_key, cfg.api_secret).with_grants(api.VideoGrants(agent=True))
            .with_ttl(datetime.timedelta(seconds=ttl_s)).to_jwt())


class WorkerLink:
    """See the module docs."""

    def __init__(self, cfg: LiveKitConfig, handler: WorkerHandler, *, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0, ping_s: float = 10.0) -> None:
        if not cfg.url:
            raise ConfigError("livekit.url: set the server URL to register as a worker")
        self.cfg, self.handler = cfg, handler
        self.url = agent_url(cfg.url)
        self.agent_name = cfg.worker_agent_name
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.ping_s = ping_s
        self.silence_s = 3 * ping_s
        #: The id of the current registration; None while not registered.
        self.worker_id: str | None = None
        #: Set while registered.
        self.registered = asyncio.Event()
        #: Set when the server refused our credentials (permanent); :attr:`last_error` says why.
        self.failed = asyncio.Event()
        self.last_error: str | None = None
        #: Registrations so far (the first is 1).
        self.registrations = 0
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._supervise(), name="worker-link")

    async def aclose(self) -> None:
        """Unregister (the socket closes) and stop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wait_for(self._task, 10)

    # -- sending -----------------------------------------------------------------------

    async def send(self, msg: agent.WorkerMessage) -> bool:
        """Send one message; False when not registered (or the socket just broke)."""
        ws = self._ws
        if ws is None or ws.closed or not self.registered.is_set():
            return False
        try:
            async with self._send_lock:
                await wait_for(ws.send_bytes(msg.SerializeToString()), 5)
        except (Exception, asyncio.TimeoutError) as exc:
            log.info("worker: could not send %s: %s", msg.WhichOneof("message"), exc or "timeout")
            return False
        return True

    async def send_status(self, *, full: bool, jobs: int) -> bool:
        status = agent.WorkerStatus.WS_FULL if full else agent.WorkerStatus.WS_AVAILABLE
        return await self.send(agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(
            status=status, load=1.0 if full else 0.0, job_count=jobs)))

    async def answer(self, job_id: str, *, available: bool, identity: str = "", name: str = "",
                     attributes: dict[str, str] | None = None) -> bool:
        return await self.send(agent.WorkerMessage(availability=agent.AvailabilityResponse(
            job_id=job_id, available=available, participant_identity=identity, participant_name=name,
            participant_attributes=attributes or {})))

    async def update_job(self, job_id: str, status: agent.JobStatus, error: str = "") -> bool:
        return await self.send(agent.WorkerMessage(update_job=agent.UpdateJobStatus(
            job_id=job_id, status=status, error=error)))

    # -- the supervisor ----------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return float(cap * random.uniform(0.5, 1.0))

    async def _supervise(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as http:
            while not self._closed:
                served = await self._connection(http)
                if self.failed.is_set():
                    return
                attempt = 0 if served else attempt + 1
                delay = self._backoff(attempt)
                log.info("worker: registering again in %.1f s", delay)
                await asyncio.sleep(delay)

    async def _connection(self, http: aiohttp.ClientSession) -> bool:
        """One socket: connect, register, serve until it breaks. True when it was registered."""
        try:
            headers = {"Authorization": f"Bearer {worker_token(self.cfg)}"}
            ws = await wait_for(http.ws_connect(self.url, headers=headers, autoping=True), REGISTER_TIMEOUT_S)
        except ConfigError as exc:
            return self._give_up(str(exc))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                return self._give_up(f"{self.url} refused the worker's token (HTTP {exc.status}): "
                                     "check livekit.api_key/api_secret")
            return self._error(f"{self.url} refused the worker socket: HTTP {exc.status}")
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            return self._error(f"cannot reach {self.url}: {exc or 'timeout'}")
        self._ws = ws
        try:
            if not await self._register(ws):
                return False
            await self._serve(ws)
            return True
        finally:
            self._ws = None
            was = self.registered.is_set()
            self.registered.clear()
            self.worker_id = None
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await wait_for(ws.close(), 5)
            if was:
                self.handler.unregistered()

    def _give_up(self, line: str) -> bool:
        self.last_error = line
        log.error("worker: %s; not retrying", line)
        self.failed.set()
        return False

    def _error(self, line: str) -> bool:
        if line != self.last_error:
            log.error("worker: %s", line)
        self.last_error = line
        return False

    async def _register(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> bool:
        perms = models.ParticipantPermission(can_publish=True, can_subscribe=True, can_publish_data=True,
                                             can_update_metadata=True, agent=True)
        req = agent.RegisterWorkerRequest(type=agent.JobType.JT_ROOM, agent_name=self.agent_name,
                                          version=__version__, allowed_permissions=perms)
        try:
            await wait_for(ws.send_bytes(agent.WorkerMessage(register=req).SerializeToString()), 5)
            reply = await wait_for(ws.receive(), REGISTER_TIMEOUT_S)
        except (Exception, asyncio.TimeoutError) as exc:
            return self._error(f"registration at {self.url} failed: {exc or 'no answer'}")
        msg = agent.ServerMessage()
        if reply.type != aiohttp.WSMsgType.BINARY:
            return self._error(f"registration at {self.url} failed: the server sent {reply.type.name}")
        msg.ParseFromString(reply.data)
        if (which := msg.WhichOneof("message")) != "register":
            return self._error(f"registration at {self.url} failed: expected its answer, got {which}")
        self.worker_id = msg.register.worker_id
        self.registrations += 1
        self.last_error = None
        self.registered.set()
        log.info("worker: registered at %s as %s (agent name %r, server %s, registration %d)", self.url,
                 self.worker_id, self.agent_name, msg.register.server_info.version or "?", self.registrations,
                 extra={"WORKER_ID": self.worker_id, "AGENT_NAME": self.agent_name})
        self.handler.registered(self.worker_id)
        return True

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        pinger = asyncio.create_task(self._ping(), name="worker-ping")
        try:
            while True:
                try:
                    frame = await wait_for(ws.receive(), self.silence_s)
                except asyncio.TimeoutError:
                    log.warning("worker: nothing from the server for %.0f s; connecting again", self.silence_s)
                    return
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.ERROR):
                    if not self._closed:
                        log.warning("worker: the server closed the worker socket (%s)", ws.close_code)
                    return
                if frame.type == aiohttp.WSMsgType.BINARY:
                    self._dispatch(frame.data)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    def _dispatch(self, data: bytes) -> None:
        msg = agent.ServerMessage()
        try:
            msg.ParseFromString(data)
        except Exception as exc:  # a protobuf DecodeError
            log.warning("worker: an unreadable message from the server: %s", exc)
            return
        which = msg.WhichOneof("message")
        if which == "availability":
            self.handler.availability(msg.availability)
        elif which == "assignment":
            self.handler.assignment(msg.assignment)
        elif which == "termination":
            self.handler.termination(msg.termination)
        elif which != "pong":
            log.debug("worker: ignored a %s message", which)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.ping_s)
            await self.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=int(time.time() * 1000))))
