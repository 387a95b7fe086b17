"""The Wyoming server Home Assistant connects to, and its zeroconf advertisement.

    server = SatelliteServer(satellite, cfg.home_assistant, wake_words=("hey_jarvis",))
    await server.start()          # listens on host:port, advertises _wyoming._tcp.local.
    ...
    await server.stop()

Home Assistant's Wyoming integration connects, sends ``describe`` and reads the ``info`` (with
its ``satellite`` block: name, area, local VAD, the active wake words), then ``run-satellite``;
from then on the :class:`~edgeagent.home_assistant.satellite.Satellite` streams its questions on
that connection. ``ping`` is answered with ``pong``; ``pause-satellite`` stops new runs. One
Home Assistant at a time: a connection that sends ``run-satellite`` takes over from the last.

Events are read by this module, not by the wyoming package's reader, so that a bad one is
refused rather than fatal: a header line that is not a JSON object with a ``type``, data that is
not a JSON object, or an event whose fields do not fit its type gets an ``error`` event back
(code ``malformed-event``) and one log line, and the connection goes on. Only framing that cannot
be recovered (a header longer than asyncio's 64 KiB line limit, lengths over :data:`MAX_BODY`, the peer
gone mid-event) ends that connection; the server keeps accepting new ones.

Zeroconf advertises on the listening address only (``interfaces=[host]``): on 127.0.0.1 no
multicast leaves the board; on a LAN address Home Assistant on that network discovers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any

from wyoming.event import Event, async_write_event
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from edgeagent.config.home_assistant import HomeAssistantConfig
from edgeagent.home_assistant.satellite import Satellite

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MAX_BODY = 16 * 1024 * 1024
"""Largest data or payload of one event (bytes)."""


class Malformed(ValueError):
    """An event that cannot be understood; the connection can go on."""


class Unframed(ValueError):
    """The stream cannot be read on (framing lost): the connection ends."""


def satellite_name(cfg: HomeAssistantConfig) -> str:
    return cfg.name or f"edgeagent-{socket.gethostname().split('.')[0]}"


def info_event(cfg: HomeAssistantConfig, wake_words: Sequence[str]) -> Event:
    from wyoming.info import Attribution, Info
    from wyoming.info import Satellite as SatelliteInfo

    from edgeagent import __version__

    return Info(satellite=SatelliteInfo(
        name=satellite_name(cfg), attribution=Attribution(name="edgeagent", url="https://github.com/edgeagent"),
        installed=True, description="edgeagent voice satellite (local wake word, VAD, echo cancellation)",
        version=__version__, area=cfg.area, has_vad=True, active_wake_words=list(wake_words),
        max_active_wake_words=max(1, len(wake_words)), supports_trigger=False,
    )).event()


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event; None at the end of the stream. Raises :class:`Malformed` (go on) or
    :class:`Unframed` (stop)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise Unframed("the connection ended inside a header") from None
    except asyncio.LimitOverrunError:
        raise Unframed("a header line longer than 64 KiB") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise Malformed(f"the header is not JSON: {line[:80]!r}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise Malformed(f"the header is not an object with a type: {line[:80]!r}")
    sizes = [header.get("data_length") or 0, header.get("payload_length") or 0]
    if not all(isinstance(n, int) and 0 <= n <= MAX_BODY for n in sizes):
        raise Unframed(f"unusable lengths {sizes} in {line[:80]!r}")
    try:
        data_bytes = await reader.readexactly(sizes[0]) if sizes[0] else b""
        payload = await reader.readexactly(sizes[1]) if sizes[1] else None
    except asyncio.IncompleteReadError:
        raise Unframed(f"the connection ended inside a {header['type']} event") from None
    data = header.get("data") or {}
    if data_bytes:
        try:
            extra = json.loads(data_bytes)
        except ValueError:
            raise Malformed(f"the data of a {header['type']} event is not JSON") from None
        if not isinstance(extra, dict) or not isinstance(data, dict):
            raise Malformed(f"the data of a {header['type']} event is not an object")
        data = {**data, **extra}
    if not isinstance(data, dict):
        raise Malformed(f"the data of a {header['type']} event is not an object")
    return Event(type=header["type"], data=data, payload=payload)


class _Handler(AsyncEventHandler):
    """One connection (Home Assistant's, normally)."""

    def __init__(self, server: SatelliteServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.server = server
        self.peer = writer.get_extra_info("peername")
        self._lock = asyncio.Lock()

    async def write_event(self, event: Event) -> None:
        async with self._lock:  # the satellite's stream, pongs and info interleave by whole events
            await async_write_event(event, self.writer)

    async def run(self) -> None:
        log.info("Home Assistant (%s) connected", self.peer)
        try:
            while True:
                try:
                    event = await read_event(self.reader)
                except Malformed as exc:
                    log.warning("refused a malformed event from %s: %s", self.peer, exc)
                    await self._refuse(str(exc))
                    continue
                if event is None or not await self.handle_event(event):
                    break
        except Unframed as exc:
            log.warning("dropped the connection from %s: %s", self.peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("the connection from %s failed: %s", self.peer, exc)
        finally:
            await self.disconnect()
            self.writer.close()

    async def _refuse(self, why: str) -> None:
        from wyoming.error import Error

        with contextlib.suppress(ConnectionError, OSError):
            await self.write_event(Error(text=why, code="malformed-event").event())

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except (KeyError, TypeError, ValueError) as exc:  # fields that do not fit the type
            why = f"a {event.type} event with unusable fields ({type(exc).__name__}: {exc})"
            log.warning("refused a malformed event from %s: %s", self.peer, why)
            await self._refuse(why)
        return True

    async def _dispatch(self, event: Event) -> None:
        from wyoming.info import Describe
        from wyoming.ping import Ping, Pong
        from wyoming.satellite import PauseSatellite, RunSatellite

        sat = self.server.satellite
        if Describe.is_type(event.type):
            await self.write_event(self.server.info())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif RunSatellite.is_type(event.type):
            log.info("Home Assistant (%s) runs the satellite", self.peer)
            self.server.current = self
            sat.attach(self.write_event)
        elif PauseSatellite.is_type(event.type):
            if self.server.current is self:
                self.server.current = None
                sat.attach(None)
        elif self.server.current is self:
            await sat.from_server(event)
        else:
            log.debug("%s from %s before run-satellite: ignored", event.type, self.peer)

    async def disconnect(self) -> None:
        log.info("Home Assistant (%s) disconnected", self.peer)
        if self.server.current is self:
            self.server.current = None
            self.server.satellite.attach(None)


class SatelliteServer:
    """The Wyoming TCP server of one :class:`Satellite`, advertised over zeroconf."""

    def __init__(self, satellite: Satellite, cfg: HomeAssistantConfig, *, wake_words: Sequence[str] = ()) -> None:
        self.satellite, self.cfg, self.wake_words = satellite, cfg, tuple(wake_words)
        self.current: _Handler | None = None
        self.port = cfg.port
        self._server: AsyncTcpServer | None = None
        self._zeroconf: Any = None

    def info(self) -> Event:
        return info_event(self.cfg, self.wake_words)

    async def start(self) -> None:
        server = AsyncTcpServer(self.cfg.host, self.cfg.port)
        await server.start(lambda r, w: _Handler(self, r, w))
        self._server = server
        listening = server._server  # the asyncio server: which port it got (port 0: any)
        if isinstance(listening, asyncio.Server) and listening.sockets:
            self.port = int(listening.sockets[0].getsockname()[1])
        log.info("Wyoming satellite %s listening on %s:%d", satellite_name(self.cfg), self.cfg.host, self.port)
        if self.cfg.zeroconf:
            await self._advertise()

    async def _advertise(self) -> None:
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        address = advertised_address(self.cfg.host)
        name = satellite_name(self.cfg)
        interfaces: Any = [address] if self.cfg.host not in ("0.0.0.0", "") else None
        zc = AsyncZeroconf(interfaces=interfaces) if interfaces else AsyncZeroconf()
        info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", addresses=[socket.inet_aton(address)],
                                port=self.port, server=f"{name}.local.")
        await zc.async_register_service(info)
        self._zeroconf = (zc, info)
        log.info("advertised %s.%s on %s:%d", name, SERVICE_TYPE, address, self.port)

    async def stop(self) -> None:
        if self._zeroconf is not None:
            zc, info = self._zeroconf
            self._zeroconf = None
            await zc.async_unregister_service(info)
            await zc.async_close()
        if self._server is not None:
            await self._server.stop()
            self._server = None


def advertised_address(host: str) -> str:
    """The IPv4 address to advertise for ``host`` (0.0.0.0: the address of the default route)."""
    if host not in ("0.0.0.0", ""):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))  # no packet is sent: this picks the outgoing interface
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
