"""The room transport on the real loopback livekit-server (scripts/test starts it).

The device side is :mod:`edgeagent.room` (RoomLink, RoomInput, RoomOutput) under an
AgentSession; the other side is a test participant written with the ``livekit`` SDK
that speaks espeak-ng questions through its own AudioSource in real time and records
the agent's track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from live import bounded
from livekit import api, rtc
from speech import espeak, with_silence

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.config.room import LiveKitConfig
from edgeagent.config.voice import ActivationConfig
from edgeagent.room import RoomInput, RoomLink, RoomOutput, TokenSource, mint_token
from edgeagent.voice import Agent, AgentSession, ConversationItemAddedEvent, Models, UserInputTranscribedEvent

if TYPE_CHECKING:
    from conftest import LiveKitServer

pytestmark = pytest.mark.livekit
log = logging.getLogger(__name__)
RATE = 48_000
BLOCK = RATE // 100
AGENT = "edgeagent-test"
LINK_LOG = "edgeagent.room.connection"


def words(text: str) -> set[str]:
    import re

    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) > 2}


def peer_token(server: LiveKitServer, identity: str, room: str) -> str:
    return (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


class Peer:
    """A remote participant: speaks into its own track, records the agent's."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        self.heard: list[tuple[float, np.ndarray]] = []  # (arrival time, 10 ms of 48 kHz)
        self._reader: asyncio.Task[None] | None = None
        self.room.on("track_subscribed", self._on_track)

    def _on_track(self, track: rtc.Track, pub: Any, p: rtc.RemoteParticipant) -> None:
        if p.identity == AGENT and track.kind == rtc.TrackKind.KIND_AUDIO and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            self.heard.append((time.monotonic(), np.frombuffer(ev.frame.data, np.int16).copy()))

    async def join(self, server: LiveKitServer, room: str) -> None:
        await bounded(self.room.connect(server.url, peer_token(server, self.identity, room)), f"{self.identity} join")
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await bounded(self.room.local_participant.publish_track(track, opts), f"{self.identity} publish")

    async def say(self, text: str) -> float:
        """Speak ``text`` in real time; returns the monotonic time the speech ended."""
        audio = with_silence(espeak(text, RATE), 0.3, 0.0)
        start = time.monotonic()
        for i, chunk in enumerate(audio.chunks(BLOCK)):
            pcm = np.zeros(BLOCK, np.int16)
            pcm[: chunk.num_samples] = chunk.samples
            await asyncio.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
            await bounded(self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, BLOCK)), "capture")
        return time.monotonic()

    async def hum_silence(self, seconds: float) -> None:
        await self.say_raw(np.zeros(int(seconds * RATE), np.int16))

    async def say_raw(self, pcm: np.ndarray) -> None:
        start = time.monotonic()
        for i in range(0, len(pcm), BLOCK):
            block = np.zeros(BLOCK, np.int16)
            part = pcm[i : i + BLOCK]
            block[: len(part)] = part
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            await bounded(self.source.capture_frame(rtc.AudioFrame(block.tobytes(), RATE, 1, BLOCK)), "capture")

    def first_loud_after(self, t: float, db: float = -35.0) -> float | None:
        for at, pcm in self.heard:
            if at >= t and AudioFrame.from_int16(pcm, RATE).rms_dbfs() > db:
                return at
        return None

    def audio_after(self, t: float) -> AudioFrame:
        parts = [pcm for at, pcm in self.heard if at >= t]
        return AudioFrame.from_int16(np.concatenate(parts) if parts else np.zeros(0, np.int16), RATE)

    async def leave(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.source.aclose(), 5)


class RoomAgent:
    """An AgentSession whose ears and voice are the room."""

    def __init__(self, models: Models, server: LiveKitServer, room: str) -> None:
        cfg = LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret,
                            room=room, identity=AGENT)
        self.link = RoomLink(cfg, backoff_s=0.2)
        self.inp = RoomInput(self.link, listen=cfg.listen)
        self.out = RoomOutput(self.link)
        self.session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts,
                                    wake=models.wake,
                                    audio_turn=models.audio_turn, activation=ActivationConfig(mode="always"),
                                    echo_cancellation=False)
        self.items: list[ConversationItemAddedEvent] = []
        self.heard: list[UserInputTranscribedEvent] = []
        self.session.on("conversation_item_added", self.items.append)
        self.session.on("user_input_transcribed", self.heard.append)

    def replies(self) -> list[str]:
        return [e.item.content for e in self.items if e.item.role == "assistant" and e.item.content]

    async def wait_reply(self, after: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while len(self.replies()) <= after:
            assert time.monotonic() < deadline, f"no reply within {timeout} s; heard {self.heard}"
            await asyncio.sleep(0.05)
        return self.replies()[after]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RoomAgent]:
        await bounded(self.out.start(), "RoomOutput.start")
        await self.link.start()
        assert await self.link.wait_connected(20), f"the agent did not join: {self.link.last_error}"
        agent = Agent(instructions="You are a helpful voice assistant. Answer in one short sentence.")
        await bounded(self.session.start(agent, input=self.inp, output=self.out), "session start", 30)
        try:
            yield self
        finally:
            await bounded(self.session.aclose(), "session close", 15)
            await bounded(self.out.aclose(), "output close", 10)
            await bounded(self.inp.aclose(), "input close", 10)
            await bounded(self.link.aclose(), "link close", 20)


async def test_room_question_gets_a_spoken_reply_on_the_agent_track(
    models: Models, livekit_server: LiveKitServer
) -> None:
    room = f"loop-{uuid.uuid4().hex[:8]}"
    peer = Peer("alice")
    async with RoomAgent(models, livekit_server, room).running() as agent:
        try:
            await peer.join(livekit_server, room)
            assert agent.link.agent_track_sid and agent.link.agent_track_sid.startswith("TR_")
            await peer.hum_silence(1.0)  # let the subscription settle
            assert agent.inp.linked == "alice"
            ended = await peer.say("What is the capital of France?")
            reply = await agent.wait_reply(0, 60)
            first = None
            deadline = time.monotonic() + 20
            while first is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                first = peer.first_loud_after(ended)
            assert first is not None, f"no agent audio reached the participant; reply was {reply!r}"
            # until the agent has been quiet for a second
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                last_loud = max((at for at, pcm in peer.heard if np.abs(pcm).max() > 500), default=first)
                if time.monotonic() - last_loud > 1.0:
                    break
            audio = peer.audio_after(ended)
            heard = (await bounded(models.stt.recognize(resample(audio, 16_000)), "stt", 60)).text
        finally:
            await peer.leave()
    log.info("room e2e: end of speech -> first agent audio at the participant %.0f ms; reply %r; heard %r",
             (first - ended) * 1000, reply, heard)
    print(f"room e2e latency {(first - ended) * 1000:.0f} ms; reply {reply!r}; transcribed {heard!r}")
    common = words(reply) & words(heard)
    assert len(common) >= max(1, len(words(reply)) // 2), f"reply {reply!r}, heard on the track {heard!r}"


async def test_linked_mode_ignores_a_second_participant_and_relinks(
    models: Models, livekit_server: LiveKitServer
) -> None:
    room = f"linked-{uuid.uuid4().hex[:8]}"
    alice, bob = Peer("alice"), Peer("bob")
    async with RoomAgent(models, livekit_server, room).running() as agent:
        try:
            await alice.join(livekit_server, room)
            await alice.hum_silence(0.5)
            await bob.join(livekit_server, room)
            await bob.hum_silence(0.5)
            assert agent.inp.linked == "alice"
            await bob.say("What is the capital of France?")
            await asyncio.sleep(6.0)
            assert agent.replies() == [] and agent.heard == [], f"bob was heard: {agent.heard}"
            # the agent hears alice meanwhile (positive control)
            await alice.say("What is the capital of France?")
            await agent.wait_reply(0, 60)
            # alice leaves: bob is linked next
            await alice.leave()
            deadline = time.monotonic() + 10
            while agent.inp.linked != "bob":
                assert time.monotonic() < deadline, f"not re-linked to bob: {agent.inp.linked}"
                await asyncio.sleep(0.05)
        finally:
            await bob.leave()
            await alice.leave()


# -- tokens and bad input ---------------------------------------------------------------------


def test_minted_token_has_exactly_the_grants_and_a_short_ttl(livekit_server: LiveKitServer) -> None:
    before = time.time()
    tok = mint_token(livekit_server.api_key, livekit_server.api_secret, room="r1", identity="dev", ttl_s=600)
    claims = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(tok.jwt)
    v = claims.video
    assert v is not None and claims.identity == "dev"
    assert (v.room_join, v.room, v.can_publish, v.can_subscribe, v.can_publish_data, v.can_update_own_metadata) == (
        True, "r1", True, True, True, True)
    assert not any((v.room_create, v.room_list, v.room_admin, v.room_record, v.ingress_admin, v.hidden))
    assert tok.expires_at is not None and 599 <= tok.expires_at - before <= 601
    src = TokenSource(LiveKitConfig(url="ws://x", api_key=livekit_server.api_key,
                                    api_secret=livekit_server.api_secret, room="r1", token_ttl_s=600))
    t = src.get()
    renew = src.renew_in(t)
    assert renew is not None and 470 <= renew <= 481  # renewed after 80% of its life
    assert src.get() is t  # not due yet: the same token
    assert src.renew_in(t, now=time.time() + 500) == 0 and src.due(t) is False


async def test_minted_token_joins_with_metadata_permission(livekit_server: LiveKitServer) -> None:
    link = RoomLink(LiveKitConfig(url=livekit_server.url, api_key=livekit_server.api_key,
                                  api_secret=livekit_server.api_secret, room=f"t-{uuid.uuid4().hex[:6]}"))
    await link.start()
    try:
        assert await link.wait_connected(20), link.last_error
        assert link.room is not None
        perms = link.room.local_participant.permissions
        assert perms.can_publish and perms.can_subscribe and perms.can_publish_data and perms.can_update_metadata
        assert link.identity.startswith("edgeagent-")
    finally:
        await bounded(link.aclose(), "link close")


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LINK_LOG and r.levelno >= logging.ERROR]


async def test_bad_token_gives_one_error_line_and_stops(
    livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    bad = (api.AccessToken(livekit_server.api_key, "x" * 40).with_identity("dev")
           .with_grants(api.VideoGrants(room_join=True, room="r1")).to_jwt())
    link = RoomLink(LiveKitConfig(url=livekit_server.url, token=bad), backoff_s=0.05)
    await link.start()
    assert not await link.wait_connected(15)
    assert link.failed.is_set()
    await asyncio.sleep(0.5)  # no more attempts
    await bounded(link.aclose(), "link close")
    errs = errors_of(caplog)
    assert len(errs) == 1 and "refused the join" in errs[0], errs
    assert "eyJ" not in errs[0], "the token leaked into the log"


async def test_wrong_url_gives_one_error_line_and_keeps_retrying(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = RoomLink(LiveKitConfig(url=f"ws://127.0.0.1:{port}", api_key="k", api_secret="s" * 32, room="r"),
                    backoff_s=0.05, max_backoff_s=0.2)
    await link.start()
    assert not await link.wait_connected(3)
    assert not link.failed.is_set(), "connection refused is not permanent"
    await bounded(link.aclose(), "link close")
    attempts = [r for r in caplog.records if r.name == LINK_LOG and "joining" in r.getMessage()]
    errs = errors_of(caplog)
    assert len(attempts) >= 3, "it should keep retrying"
    assert len(errs) == 1 and "connection refused" in errs[0], errs


async def test_missing_grant_is_one_error_line(
    livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    room = f"g-{uuid.uuid4().hex[:6]}"
    tok = (api.AccessToken(livekit_server.api_key, livekit_server.api_secret).with_identity("dev")
           .with_grants(api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True, can_publish=False))
           .to_jwt())
    link = RoomLink(LiveKitConfig(url=livekit_server.url, token=tok))
    await link.start()
    try:
        assert await link.wait_connected(20), link.last_error
    finally:
        await bounded(link.aclose(), "link close")
    errs = errors_of(caplog)
    assert len(errs) == 1 and "can_publish" in errs[0], errs


async def test_rejoins_and_republishes_after_being_removed(livekit_server: LiveKitServer) -> None:
    """The server drops the agent (RoomService.remove_participant): the link joins again,
    publishes its track again and runs its hooks again."""
    room = f"rj-{uuid.uuid4().hex[:6]}"
    cfg = LiveKitConfig(url=livekit_server.url, api_key=livekit_server.api_key,
                        api_secret=livekit_server.api_secret, room=room, identity=AGENT)
    link = RoomLink(cfg, backoff_s=0.1)
    out = RoomOutput(link)
    joined: list[rtc.Room] = []
    link.add_connected_hook(joined.append)
    await bounded(out.start(), "output start")
    await link.start()
    lkapi = api.LiveKitAPI(livekit_server.url.replace("ws", "http", 1), livekit_server.api_key,
                           livekit_server.api_secret)
    try:
        assert await link.wait_connected(20)
        first_sid = link.agent_track_sid
        assert first_sid
        await bounded(lkapi.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=AGENT)),
                      "remove_participant")
        deadline = time.monotonic() + 15
        while link.joins < 2 or link.agent_track_sid is None:
            assert time.monotonic() < deadline, f"no rejoin within 15 s: {link.last_error}"
            await asyncio.sleep(0.05)
        assert len(joined) == 2 and joined[0] is not joined[1]
        assert link.agent_track_sid != first_sid
    finally:
        await bounded(lkapi.aclose(), "api close")
        await bounded(out.aclose(), "output close")
        await bounded(link.aclose(), "link close")


async def test_a_second_device_with_the_same_identity_does_not_start_a_kicking_match(
    livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two devices configured with one identity: the server drops the first when the second
    joins (DUPLICATE_IDENTITY). The first says so in one error line and stays out, so the
    second keeps its place instead of both rejoining and throwing each other out."""
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    cfg = LiveKitConfig(url=livekit_server.url, api_key=livekit_server.api_key,
                        api_secret=livekit_server.api_secret, room=f"dup-{uuid.uuid4().hex[:6]}", identity=AGENT)
    first, second = RoomLink(cfg, backoff_s=0.1), RoomLink(cfg, backoff_s=0.1)
    try:
        await first.start()
        assert await first.wait_connected(20), first.last_error
        await second.start()
        assert await second.wait_connected(20), second.last_error
        await bounded(first.failed.wait(), "the first device giving up", 15)
        await asyncio.sleep(3.0)  # long enough for several rejoin rounds at backoff 0.1 s
        assert (first.joins, second.joins) == (1, 1), "a device rejoined: they take turns"
        assert second.connected.is_set() and not first.connected.is_set()
        errs = errors_of(caplog)
        assert len(errs) == 1 and AGENT in errs[0] and "DUPLICATE_IDENTITY" in errs[0], errs
    finally:
        await bounded(second.aclose(), "link close")
        await bounded(first.aclose(), "link close")




async def play(out: RoomOutput, audio: AudioFrame) -> None:
    """Write ``audio`` to the agent's room output in 20 ms frames and wait until it was sent."""
    for chunk in audio.chunks(BLOCK * 2):
        await bounded(out.write(chunk), "write")
    await bounded(out.drain(), "drain")


async def test_the_agent_track_goes_quiet_when_idle_and_speaks_at_once_when_written(
    livekit_server: LiveKitServer,
) -> None:
    """RoomOutput sends nothing while it has nothing to say (no capture, no packets), and
    the next write goes out at once and whole."""
    from edgeagent.room.audio import IDLE_AFTER_S

    room = f"idle-{uuid.uuid4().hex[:6]}"
    link = RoomLink(LiveKitConfig(url=livekit_server.url, api_key=livekit_server.api_key,
                                  api_secret=livekit_server.api_secret, room=room, identity=AGENT))
    out = RoomOutput(link)
    rendered: list[float] = []
    out.on_render = lambda block, rate, now: rendered.append(now)
    peer = Peer("listener")
    tone = AudioFrame.from_float(0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE), RATE)
    await bounded(out.start(), "output start")
    await link.start()
    try:
        assert await link.wait_connected(20), link.last_error
        await peer.join(livekit_server, room)
        await play(out, tone)
        deadline = time.monotonic() + IDLE_AFTER_S + 2.0
        while out.sending:
            assert time.monotonic() < deadline, "the output kept sending after it ran out of audio"
            await asyncio.sleep(0.02)
        idle_from = time.monotonic()
        await asyncio.sleep(1.5)
        assert not [t for t in rendered if t > idle_from], "blocks were rendered while idle"
        t1 = time.monotonic()
        await play(out, tone)
        await asyncio.sleep(0.5)
    finally:
        await peer.leave()
        await bounded(out.aclose(), "output close")
        await bounded(link.aclose(), "link close")
    first = peer.first_loud_after(t1)
    assert first is not None and first - t1 < 0.25, f"the tone after the pause arrived {first and first - t1} s late"
    heard = peer.audio_after(t1).to_float32().astype(np.float64)
    loud = np.flatnonzero(np.abs(heard) > 0.1)
    assert len(loud) and (loud[-1] - loud[0]) / RATE > 0.45, "the tone after the pause did not arrive whole"


async def test_e2ee_peer_with_the_key_hears_the_agent_and_one_without_does_not(
    livekit_server: LiveKitServer,
) -> None:
    room, key = f"e2ee-{uuid.uuid4().hex[:6]}", "a shared secret for tests"
    link = RoomLink(LiveKitConfig(url=livekit_server.url, api_key=livekit_server.api_key,
                                  api_secret=livekit_server.api_secret, room=room, identity=AGENT, e2ee_key=key))
    out = RoomOutput(link)
    with_key, without = Peer("keyed"), Peer("keyless")
    opts = rtc.RoomOptions(encryption=rtc.E2EEOptions(
        key_provider_options=rtc.KeyProviderOptions(shared_key=key.encode())))
    await bounded(out.start(), "output start")
    await link.start()
    try:
        assert await link.wait_connected(20), link.last_error
        await bounded(with_key.room.connect(livekit_server.url, peer_token(livekit_server, "keyed", room), opts),
                      "keyed join")
        await bounded(without.room.connect(livekit_server.url, peer_token(livekit_server, "keyless", room)),
                      "keyless join")
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        tone = AudioFrame.from_float(0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE), RATE)
        await play(out, tone)
        await asyncio.sleep(0.5)
    finally:
        await with_key.leave()
        await without.leave()
        await bounded(out.aclose(), "output close")
        await bounded(link.aclose(), "link close")

    def tone_share(audio: AudioFrame) -> float:
        x = audio.to_float32().astype(np.float64)
        if len(x) < RATE // 2:
            return 0.0
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / RATE)
        return float(spec[np.abs(freqs - 440) <= 20].sum() / max(spec.sum(), 1e-12))

    keyed, keyless = tone_share(with_key.audio_after(t0)), tone_share(without.audio_after(t0))
    assert keyed > 0.8, f"the participant with the key did not hear the tone ({keyed:.2f})"
    assert keyless < 0.3, f"the participant without the key heard the tone ({keyless:.2f})"
