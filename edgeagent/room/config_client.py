"""A controller participant: read and change a device's config from a laptop, over the room.

``edgeagent config get | set KEY=VALUE... | schema | watch --url ... --room ...`` joins
the room as a participant of its own (identity ``edgeagent-controller-<host>`` unless
``--identity``; no audio) and calls the device's ``edgeagent.config.*`` RPC methods
(:mod:`edgeagent.room.config_rpc`; the protocol is in the README). The token comes from ``--token``, or
is minted from ``livekit.api_key``/``api_secret`` of the config (or ``--api-key`` /
``--api-secret``). The device is ``--device`` (default: ``livekit.identity`` of the
config, else the only agent participant in the room).

``set`` reads the current revision first and sends the change based on it, so a
change made meanwhile by someone else is refused (``stale_revision``), not overwritten.
Values are JSON when they parse as JSON (``tts.speed=1.2``, ``activation.wake_words=["alexa"]``,
``llm.max_tokens=null``), strings otherwise (``agent.instructions=Be brief.``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
from collections.abc import Sequence
from typing import Any

from livekit import api, rtc

from edgeagent.aio import wait_for
from edgeagent.config import set_path
from edgeagent.control.patch import PROTOCOL_VERSION
from edgeagent.errors import EdgeAgentError
from edgeagent.room.audio import ROLE_ATTRIBUTE
from edgeagent.room.config_rpc import TOPIC

CALL_TIMEOUT_S = 15.0


class ControllerError(EdgeAgentError):
    """A call was refused or failed; ``error`` is the device's structured error, when it sent one."""

    def __init__(self, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error

    @property
    def code(self) -> str | None:
        return None if self.error is None else str(self.error.get("code"))


def controller_token(api_key: str, api_secret: str, room: str, identity: str, ttl_s: int = 600,
                     attributes: dict[str, str] | None = None) -> str:
    """A token for a controller: join, data (RPC), no audio; marked ``edgeagent.role=controller``
    so the device never links to it as the person it listens to."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=False, can_subscribe=True,
                             can_publish_data=True)
    return (api.AccessToken(api_key, api_secret).with_identity(identity).with_name(identity)
            .with_grants(grants).with_attributes({ROLE_ATTRIBUTE: "controller", **(attributes or {})})
            .with_ttl(datetime.timedelta(seconds=ttl_s)).to_jwt())


def default_controller_identity() -> str:
    return f"edgeagent-controller-{socket.gethostname()}"


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["tts.speed=1.2", "agent.name=Ada"]`` -> the merge patch ``{"tts": {"speed": 1.2}, ...}``."""
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise EdgeAgentError(f"expected KEY=VALUE with a dotted key (tts.speed=1.2), got {item!r}")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        set_path(patch, key.strip(), value)
    return patch


class Controller:
    """One controller connection to a room."""

    def __init__(self, url: str, token: str, device: str | None = None) -> None:
        self.url, self.token, self.device = url, token, device
        self.room = rtc.Room()
        self.notices: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.room.on("data_received", self._on_data)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC:
            return
        with contextlib.suppress(ValueError):
            notice = json.loads(packet.data)
            if isinstance(notice, dict):
                self.notices.put_nowait(notice)

    async def __aenter__(self) -> Controller:
        try:
            await wait_for(self.room.connect(self.url, self.token, rtc.RoomOptions(auto_subscribe=False)),
                                   CALL_TIMEOUT_S)
        except (Exception, asyncio.TimeoutError) as exc:
            raise ControllerError(f"cannot join the room at {self.url}: {exc or 'timeout'}") from exc
        if self.device is None:
            try:
                self.device = await self._find_device()
            except BaseException:
                await self.__aexit__()
                raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(self.room.disconnect(), 10)

    async def _find_device(self, timeout: float = 5.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            agents = [p.identity for p in self.room.remote_participants.values()
                      if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT]
            if len(agents) == 1:
                return agents[0]
            if asyncio.get_running_loop().time() >= deadline:
                found = ", ".join(agents) or "none"
                raise ControllerError(f"give --device: the room has {len(agents)} agent participants ({found})")
            await asyncio.sleep(0.1)

    async def call(self, method: str, request: dict[str, Any] | str) -> dict[str, Any]:
        """Call ``edgeagent.config.<method>``; the reply object, or ControllerError."""
        assert self.device is not None
        payload = request if isinstance(request, str) else json.dumps({"v": PROTOCOL_VERSION, **request})
        try:
            raw = await wait_for(self.room.local_participant.perform_rpc(
                destination_identity=self.device, method=f"edgeagent.config.{method}", payload=payload,
                response_timeout=CALL_TIMEOUT_S), CALL_TIMEOUT_S + 5)
        except rtc.RpcError as exc:
            error = None
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                error = json.loads(exc.data or "")["error"]
            raise ControllerError(f"{method}: {exc.message} (rpc {exc.code})", error) from None
        except asyncio.TimeoutError:
            raise ControllerError(f"{method}: no answer from {self.device}") from None
        return dict(json.loads(raw))

    async def get(self) -> dict[str, Any]:
        return await self.call("get", {})

    async def schema(self) -> dict[str, Any]:
        return await self.call("schema", {})

    async def set(self, patch: dict[str, Any], base_revision: int | None = None) -> dict[str, Any]:
        """Apply ``patch`` based on ``base_revision`` (None: the revision read just before)."""
        if base_revision is None:
            base_revision = int((await self.get())["revision"])
        return await self.call("set", {"base_revision": base_revision, "patch": patch})
