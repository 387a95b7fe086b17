"""The direct WebRTC peer without a browser: an aiortc client against the board's aiortc peer.

Audio both ways (a tone from the "browser" is heard by :class:`WebInput` at 16 kHz; a
tone written to :class:`WebOutput` arrives at the client), the answer is Opus only with
host candidates only, the data channel reaches the board, and the refusals (malformed
offer, a second browser) leave the first connection working. No models, no browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from live import bounded

from edgeagent.audio.frame import AudioFrame
from edgeagent.config.web import WebConfig
from edgeagent.web.audio import WebInput, WebOutput
from edgeagent.web.peer import OfferRefused, Peer, Peers, check_offer

RATE = 48_000


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        await asyncio.sleep(0.05)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


class ToneTrack(MediaStreamTrack):  # type: ignore[misc]
    """A browser's mic saying a steady tone, 20 ms frames in real time."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz, self.pts, self.start = hz, 0, time.monotonic()

    async def recv(self) -> av.AudioFrame:
        n = RATE // 50
        await asyncio.sleep(max(0.0, self.start + self.pts / RATE - time.monotonic()))
        t = (np.arange(n) + self.pts) / RATE
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        self.pts += n
        return frame


class Client:
    """The browser's side, in aiortc: mic track out, the agent's track in, a data channel."""

    def __init__(self, hz: float = 440.0) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ToneTrack(hz))
        self.channel = self.pc.createDataChannel("edgeagent")
        self.heard: list[np.ndarray] = []
        self.messages: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.channel.on("message", self.messages.append)

        @self.pc.on("track")  # type: ignore[misc]
        def on_track(track: Any) -> None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        from edgeagent.web.audio import to_mono_int16

        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                self.heard.append(to_mono_int16(frame))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


@contextlib.asynccontextmanager
async def board() -> AsyncIterator[tuple[WebInput, WebOutput, Peers, list[tuple[Peer, Any]]]]:
    """The board's side: input, output and peers, as ``edgeagent web`` makes them."""
    inp, out = WebInput(), WebOutput()
    channels: list[tuple[Peer, Any]] = []
    peers = Peers(WebConfig(enabled=True), inp, out, on_channel=lambda p, c: channels.append((p, c)))
    await out.start()
    try:
        yield inp, out, peers, channels
    finally:
        await bounded(peers.aclose(), "peers close")
        await inp.aclose()
        await out.aclose()


async def heard_by_board(inp: WebInput, seconds: float) -> np.ndarray:
    got: list[np.ndarray] = []
    total = 0
    async for frame in inp:
        if frame.samples.any():
            got.append(np.array(frame.samples))
            total += frame.num_samples
        if total >= seconds * inp.sample_rate:
            break
    return np.concatenate(got)


async def test_audio_both_ways_opus_and_host_candidates_only() -> None:
    async with board() as (inp, out, peers, channels):
        await _both_ways(inp, out, peers, channels)


async def _both_ways(inp: WebInput, out: WebOutput, peers: Peers, channels: list[tuple[Peer, Any]]) -> None:
    client = Client(hz=440.0)
    try:
        peer = await bounded(peers.answer(await bounded(client.offer(), "offer")), "answer")
        sdp = peer.answer_sdp
        audio = sdp[sdp.index("m=audio"):].split("m=application")[0]
        codecs = [line.split()[1].split("/")[0].lower() for line in audio.splitlines() if line.startswith("a=rtpmap:")]
        assert codecs == ["opus"], codecs
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" typ host" in c for c in candidates), candidates
        await bounded(client.answer(sdp), "client takes the answer")

        # Browser -> board: the tone, at 16 kHz, in the session's frames.
        heard = await bounded(heard_by_board(inp, 1.0), "the board hears the browser", 30)
        assert inp.sample_rate == 16_000
        assert abs(dominant_hz(heard[-8000:], 16_000) - 440.0) < 20, dominant_hz(heard[-8000:], 16_000)
        assert np.sqrt(np.mean(heard[-8000:].astype(np.float64) ** 2)) > 1000

        # Board -> browser: a 1 kHz tone written to the output arrives as Opus.
        t = np.arange(16_000) / 16_000
        tone = AudioFrame.from_float(0.3 * np.sin(2 * np.pi * 1000.0 * t), 16_000)
        before = len(client.heard)
        for chunk in tone.chunks(320):
            await bounded(out.write(chunk), "write")
        await bounded(out.drain(), "drain")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = np.concatenate(client.heard[before:]) if len(client.heard) > before else np.zeros(0)
            if len(got) and np.abs(got).max() > 3000 and (np.abs(got) > 3000).sum() > 20_000:
                break
            await asyncio.sleep(0.1)
        got = np.concatenate(client.heard[before:])
        loud = got[np.abs(got) > 0][: 48_000]
        assert np.abs(got).max() > 3000, "the client heard no tone"
        assert abs(dominant_hz(loud[-24_000:], 48_000) - 1000.0) < 30

        # The browser's data channel reached the board.
        await until(lambda: bool(channels), 10, "the data channel at the board")
        assert channels[0][0].id == peer.id
    finally:
        await bounded(client.close(), "client close")


async def test_refusals_leave_the_connected_browser_working() -> None:
    async with board() as (inp, _, peers, _):
        await _refusals(inp, peers)


async def _refusals(inp: WebInput, peers: Peers) -> None:
    first, second, third = Client(), Client(), Client()
    try:
        with pytest.raises(OfferRefused) as bad:
            await peers.answer("this is not sdp")
        assert bad.value.status == 400 and "v=0" in str(bad.value)
        with pytest.raises(OfferRefused) as no_audio:
            await peers.answer("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
        assert no_audio.value.status == 400 and "m=audio" in str(no_audio.value)
        peer = await bounded(peers.answer(await bounded(first.offer(), "offer")), "answer")
        await bounded(first.answer(peer.answer_sdp), "first takes the answer")
        with pytest.raises(OfferRefused) as busy:
            await peers.answer(await bounded(second.offer(), "second offer"))
        assert busy.value.status == 409 and "another browser is connected" in str(busy.value)
        assert len(peers) == 1
        heard = await bounded(heard_by_board(inp, 0.5), "the board still hears the first browser", 30)
        assert np.abs(heard).max() > 1000
        # A browser that goes away (its page closed) frees the place at once.
        await bounded(first.close(), "the first browser goes")
        await until(lambda: len(peers) == 0, 10, "place freed")
        assert not await peers.close(peer.id)  # already gone
        again = await bounded(peers.answer(await bounded(third.offer(), "offer")), "answer after hang-up")
        assert again.id != peer.id
    finally:
        for client in (first, second, third):
            await bounded(client.close(), "close")


def test_check_offer_reasons() -> None:
    for sdp, words in (("", "no SDP offer"), ("x=1\nm=audio", "v=0"), ("v=0\nnot a line\nm=audio 9", "type=value"),
                       ("v=0\no=- 0 0 IN IP4 0.0.0.0\n", "m=audio"), ("v=0\nm=audio " + "a" * 70_000, "bytes")):
        with pytest.raises(OfferRefused) as err:
            check_offer(sdp)
        assert words in str(err.value), (sdp[:20], str(err.value))
