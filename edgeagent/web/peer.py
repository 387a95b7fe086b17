"""Direct WebRTC with a browser (aiortc): one SDP offer in, one answer out, in the style of WHIP.

    peers = Peers(cfg.web, web_input, web_output, on_channel=hub.add)
    peer = await peers.answer(offer_sdp)      # OfferRefused(status, code, message) when refused
    ... peer.answer_sdp goes back to the browser ...
    await peers.close(peer.id)

The board never sends an offer and never trickles: the browser gathers its candidates
first and POSTs the whole offer, the board answers with all of its own (ICE lite in
spirit). With ``web.ice_servers`` empty only host candidates are gathered (aiortc would
otherwise ask a public STUN server); STUN/TURN URLs there are used as given. The audio
is Opus in both directions (the answer offers nothing else); the browser's data channel
carries the console's messages (:mod:`edgeagent.web.channel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from edgeagent.aio import wait_for
from edgeagent.config.web import WebConfig
from edgeagent.web.audio import AgentTrack, WebInput, WebOutput

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 5.0
RECEIVE_PREFETCH = 1
"""Packets aiortc's audio jitter buffer holds back behind the one it hands out. Its default
(4) adds a steady 80 ms before the board hears the browser; one packet (20 ms) is enough for
the in-order delivery of a LAN (a packet later than that is dropped, as a lost one)."""


class OfferRefused(Exception):
    """An offer the board does not answer: HTTP ``status``, a short ``code`` and the reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Peer:
    """One connected browser."""

    id: str
    pc: RTCPeerConnection
    track: AgentTrack
    client: str = ""
    answer_sdp: str = ""
    channel: Any = None
    opened: float = field(default_factory=time.monotonic)


def check_offer(sdp: str) -> None:
    """Refuse (400) what is plainly not a browser's SDP offer with audio, before aiortc parses it."""
    if not sdp.strip():
        raise OfferRefused(400, "bad_offer", "the request has no SDP offer in its body")
    if len(sdp.encode("utf-8", "replace")) > MAX_OFFER_BYTES:
        raise OfferRefused(413, "too_large", f"the SDP offer is over {MAX_OFFER_BYTES} bytes")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if lines[0] != "v=0":
        raise OfferRefused(400, "bad_offer", "malformed SDP offer: it must start with v=0")
    if any(len(line) < 2 or line[1] != "=" for line in lines if line):
        bad = next(line for line in lines if line and (len(line) < 2 or line[1] != "="))
        raise OfferRefused(400, "bad_offer", f"malformed SDP offer: {bad[:60]!r} is not a type=value line")
    if not any(line.startswith("m=audio") for line in lines):
        raise OfferRefused(400, "bad_offer", "the SDP offer has no audio (m=audio): the console sends the mic")


def ice_servers(cfg: WebConfig) -> list[RTCIceServer]:
    """The STUN/TURN servers of ``cfg`` (none: host candidates only)."""
    return [RTCIceServer(urls=url, username=cfg.turn_username if url.startswith("turn") else None,
                         credential=cfg.turn_credential if url.startswith("turn") else None)
            for url in cfg.ice_servers]


def _opus() -> list[Any]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


def _short_jitter_buffer(receiver: Any) -> None:
    """:data:`RECEIVE_PREFETCH` for this receiver (aiortc has no option for it: its private
    buffer is replaced when it is there, else left alone with one debug line)."""
    from aiortc.jitterbuffer import JitterBuffer

    name = "_RTCRtpReceiver__jitter_buffer"
    old = getattr(receiver, name, None)
    if isinstance(old, JitterBuffer):
        setattr(receiver, name, JitterBuffer(capacity=old.capacity, prefetch=RECEIVE_PREFETCH))
    else:
        log.debug("web: aiortc's audio jitter buffer not found: its default prefetch stays")


class Peers:
    """The browsers connected now (at most ``web.max_clients``); see the module docs."""

    def __init__(self, cfg: WebConfig, inp: WebInput, out: WebOutput, *,
                 on_channel: Callable[[Peer, Any], None] | None = None,
                 on_closed: Callable[[Peer], None] | None = None) -> None:
        self.cfg, self.inp, self.out = cfg, inp, out
        self.on_channel, self.on_closed = on_channel, on_closed
        self.peers: dict[str, Peer] = {}
        self._pending = 0  # offers being answered (they hold a place)
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self.peers)

    async def answer(self, sdp: str, client: str = "") -> Peer:
        """The answer to a browser's offer; :class:`OfferRefused` (nothing kept) when refused."""
        check_offer(sdp)
        async with self._lock:
            if len(self.peers) + self._pending >= self.cfg.max_clients:
                raise OfferRefused(409, "busy", (
                    "another browser is connected (web.max_clients = "
                    f"{self.cfg.max_clients}): disconnect it first"))
            self._pending += 1
        try:
            return await self._answer(sdp, client)
        finally:
            self._pending -= 1

    async def _answer(self, sdp: str, client: str) -> Peer:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.cfg)))
        track = self.out.new_track()
        peer = Peer(id=secrets.token_hex(8), pc=pc, track=track, client=client)
        transceiver = pc.addTransceiver(track, direction="sendrecv")
        transceiver.setCodecPreferences(_opus())
        _short_jitter_buffer(transceiver.receiver)

        @pc.on("track")
        def on_track(remote: Any) -> None:
            if remote.kind == "audio":
                self.inp.add_track(peer.id, remote)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            peer.channel = channel
            # The console's channel closes with its page: hang up then, not when ICE gives up.
            channel.on("close", lambda: asyncio.ensure_future(self.close(peer.id)))
            if self.on_channel is not None:
                self.on_channel(peer, channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("web: browser %s (%s): %s", peer.id, client or "?", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close(peer.id)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            self.out.drop_track(track)
            with contextlib.suppress(Exception):
                await wait_for(pc.close(), CLOSE_TIMEOUT_S)
            reason = str(exc) or type(exc).__name__
            if "send parameters" in reason:
                reason = "it offers no codec the board speaks (Opus)"
            raise OfferRefused(400, "bad_offer", f"the SDP offer could not be used: {reason}") from exc
        peer.answer_sdp = pc.localDescription.sdp
        self.peers[peer.id] = peer
        log.info("web: browser %s (%s) connected", peer.id, client or "?")
        return peer

    async def close(self, peer_id: str) -> bool:
        """Hang up on ``peer_id``; False when no such browser is connected."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        self.inp.remove(peer_id)
        self.out.drop_track(peer.track)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await wait_for(peer.pc.close(), CLOSE_TIMEOUT_S)
        log.info("web: browser %s disconnected", peer_id)
        if self.on_closed is not None:
            self.on_closed(peer)
        return True

    async def aclose(self) -> None:
        for peer_id in list(self.peers):
            await self.close(peer_id)
