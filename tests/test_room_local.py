"""``livekit.mode = room+local`` for real: the loopback livekit-server and the PulseAudio null sinks.

The device side is :func:`edgeagent.room.job.run_room` (in this process, with the
local mic and speaker of ``[audio]``: the default source mic_feed.monitor and sink
speaker). The other side is a participant written with the ``livekit`` SDK, which
speaks espeak-ng questions into the room, records the agent's tracks and reads the
``lk.transcription`` streams. ``play(mic_feed, wav)`` speaks into the local mic and a
:class:`Recorder` on speaker.monitor hears the local speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from live import Recorder, bounded, loud_blocks, play
from livekit import api, rtc
from speech import espeak, piper, save, with_silence

from edgeagent import config as config_mod
from edgeagent.audio.frame import AudioFrame
from edgeagent.config import AudioConfig
from edgeagent.config.room import LiveKitConfig
from edgeagent.config.voice import ActivationConfig
from edgeagent.room.job import run_room
from edgeagent.room.local import MIC_TRACK_NAME
from edgeagent.voice import Models

if TYPE_CHECKING:
    from conftest import LiveKitServer, PulseDevices

    from edgeagent.bench.server import Server

pytestmark = [pytest.mark.livekit, pytest.mark.pulse]
RATE = 48_000
BLOCK = RATE // 100
AGENT = "edgeagent-local"


class Peer:
    """A remote participant: speaks into its track, records each of the agent's tracks by name,
    collects the final ``lk.transcription`` texts."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        self.heard: dict[str, list[tuple[float, float]]] = {}  # track name -> (arrival, dBFS of 10 ms)
        self.finals: list[tuple[float, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.room.on("track_subscribed", self._on_track)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if p.identity == AGENT and track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._read(pub.name, track))

    async def _read(self, name: str, track: rtc.Track) -> None:
        blocks = self.heard.setdefault(name, [])
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            pcm = np.frombuffer(ev.frame.data, np.int16)
            blocks.append((time.monotonic(), AudioFrame.from_int16(pcm.copy(), RATE).rms_dbfs()))

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            if (reader.info.attributes or {}).get("lk.transcription_final") == "true":
                self.finals.append((time.monotonic(), text))

        self._spawn(read())

    async def join(self, server: LiveKitServer | Server, room: str) -> None:
        token = (api.AccessToken(server.api_key, server.api_secret).with_identity(self.identity)
                 .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())
        await bounded(self.room.connect(server.url, token), f"{self.identity} join")
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await bounded(self.room.local_participant.publish_track(track, opts), f"{self.identity} publish")

    async def say(self, audio: AudioFrame) -> float:
        """Speak ``audio`` (48 kHz) in real time; returns when it ended."""
        start = time.monotonic()
        for i, chunk in enumerate(audio.chunks(BLOCK)):
            pcm = np.zeros(BLOCK, np.int16)
            pcm[: chunk.num_samples] = chunk.samples
            await asyncio.sleep(max(0.0, start + i * 0.01 - time.monotonic()))
            await bounded(self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, BLOCK)), "capture")
        return time.monotonic()

    def loud_s(self, name: str, after: float, before: float = float("inf"), db: float = -35.0) -> float:
        """Seconds of loud audio on the agent's track ``name`` between two times."""
        return 0.01 * sum(1 for at, level in self.heard.get(name, []) if after <= at < before and level > db)

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self.room.disconnect(), 10)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self.source.aclose(), 5)


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("room_local")
    return save(with_silence(piper("What is the capital of France?"), 0.5, 1.5), d / "question.wav")


@contextlib.asynccontextmanager
async def device_in_room(models: Models, server: LiveKitServer | Server, room: str, *,
                         audio: AudioConfig | None = None,
                         publish_local_mic: bool = True) -> AsyncIterator[asyncio.Task[int]]:
    """run_room in room+local mode (publishing the local mic unless told not to) until the block ends."""
    cfg = config_mod.Config(
        audio=audio or AudioConfig(),
        activation=ActivationConfig(mode="always"),
        livekit=LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret, room=room,
                              identity=AGENT, mode="room+local", publish_local_mic=publish_local_mic),
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_room(models, cfg, stop))
    try:
        yield task
    finally:
        stop.set()
        code = await bounded(task, "run_room to stop", 60)
        assert code == 0


async def wait_until(check: Any, timeout: float, what: str, task: asyncio.Task[int], peer: Peer) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert not task.done(), f"run_room ended early: {task.result()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s; transcripts: {peer.finals}"
        await asyncio.sleep(0.1)


def agent_finals(peer: Peer, after: float) -> list[str]:
    return [text for at, text in peer.finals if at >= after]


async def test_room_and_local_both_ask_and_both_hear_the_answers(
    models: Models, livekit_server: LiveKitServer, pulse: PulseDevices, question_wav: Path
) -> None:
    room = f"local-{uuid.uuid4().hex[:8]}"
    peer = Peer("alice")
    remote_question = with_silence(espeak("What is the capital of Germany?", RATE), 0.3, 0.0)
    rec = await bounded(Recorder.start(pulse.speaker_monitor), "recorder start")
    try:
        async with device_in_room(models, livekit_server, room) as task:
            await peer.join(livekit_server, room)
            await wait_until(lambda: "agent-voice" in peer.heard and MIC_TRACK_NAME in peer.heard, 30,
                             "the agent's voice and the room mic tracks", task, peer)
            await bounded(peer.say(AudioFrame.silence(1.0, RATE)), "silence", 10)  # links alice

            # (a) a question into the local mic: answered in the room and on the local speaker.
            t0 = time.monotonic()
            await play(pulse.mic_sink, question_wav)
            t_asked = time.monotonic()
            await wait_until(lambda: len(agent_finals(peer, t0)) >= 2, 60,
                             "the question's and the answer's transcripts", task, peer)
            await wait_until(lambda: peer.loud_s("agent-voice", t_asked) > 0.5, 20,
                             "the agent's reply on its room track", task, peer)
            # The room heard the local question on the published mic track too.
            assert peer.loud_s(MIC_TRACK_NAME, t0, t_asked + 1.0) > 0.5, peer.heard.get(MIC_TRACK_NAME, [])[-5:]
            await asyncio.sleep(4.0)  # let the reply finish on the speaker

            # (b) a remote participant's question: answered, and heard on the local speaker.
            t1 = time.monotonic()
            t_said = await peer.say(remote_question)
            await wait_until(lambda: len(agent_finals(peer, t1)) >= 2, 60,
                             "the question's and the answer's transcripts", task, peer)
            await wait_until(lambda: peer.loud_s("agent-voice", t_said) > 0.5, 20,
                             "the agent's second reply on its room track", task, peer)
            await asyncio.sleep(3.0)
    finally:
        t_end = time.monotonic()
        audio = await bounded(rec.stop(), "recorder stop", 15)
        await peer.leave()
    heard_at = loud_times(audio, t_end)
    assert sum(1 for t in heard_at if t_asked <= t < t1) * 0.02 > 0.5, \
        "the reply to the local question was not played on the local speaker"
    assert sum(1 for t in heard_at if t1 <= t < t_said) * 0.02 > 0.5, \
        "the remote participant's voice was not played on the local speaker"
    assert sum(1 for t in heard_at if t >= t_said) * 0.02 > 0.5, \
        "the reply to the remote question was not played on the local speaker"


def loud_times(audio: AudioFrame, ended: float) -> list[float]:
    """Monotonic times of the loud 20 ms blocks of a recording that ended at ``ended``."""
    return [ended - audio.duration + i * 0.02 for i in loud_blocks(audio)]


async def test_room_local_without_local_devices_runs_in_the_room_only(
    models: Models, livekit_server: LiveKitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mic that does not open: one line says so, and the room is still answered."""
    room = f"local-{uuid.uuid4().hex[:8]}"
    peer = Peer("alice")
    try:
        async with device_in_room(models, livekit_server, room,
                                  audio=AudioConfig(input_device="no-such-microphone")) as task:
            await peer.join(livekit_server, room)
            await wait_until(lambda: "agent-voice" in peer.heard, 30, "the agent's voice track", task, peer)
            assert MIC_TRACK_NAME not in peer.heard  # no local mic to publish
            await bounded(peer.say(AudioFrame.silence(1.0, RATE)), "silence", 10)
            t0 = time.monotonic()
            t_said = await bounded(peer.say(with_silence(espeak("What is the capital of Germany?", RATE),
                                                             0.3, 0.0)), "say")
            await wait_until(lambda: len(agent_finals(peer, t0)) >= 2, 60, "the question's and the answer's "
                             "transcripts", task, peer)
            await wait_until(lambda: peer.loud_s("agent-voice", t_said) > 0.5, 20,
                             "the agent's reply on its room track", task, peer)
    finally:
        await peer.leave()
    err = capsys.readouterr().err
    assert err.count("did not open") == 1 and "joining the room only" in err, err


@pytest.mark.parametrize("echo_cancellation", [True, False], ids=["aec", "half-duplex"])
async def test_room_mic_does_not_send_the_agent_back_to_the_room(
    models: Models, livekit_server: LiveKitServer, pulse: PulseDevices, loopback: None, echo_cancellation: bool
) -> None:
    """The local speaker is heard by the local mic (a loopback): while the agent answers a remote
    question, its published room-mic track stays (nearly) quiet, and the agent does not answer
    itself. With echo cancellation the canceller removes the agent's voice; without it the mic is
    muted while the speaker plays (half-duplex)."""
    room = f"local-{uuid.uuid4().hex[:8]}"
    peer = Peer("alice")
    try:
        async with device_in_room(models, livekit_server, room,
                                  audio=AudioConfig(echo_cancellation=echo_cancellation)) as task:
            await peer.join(livekit_server, room)
            await wait_until(lambda: "agent-voice" in peer.heard and MIC_TRACK_NAME in peer.heard, 30,
                             "the agent's voice and the room mic tracks", task, peer)
            await bounded(peer.say(AudioFrame.silence(1.0, RATE)), "silence", 10)
            t0 = time.monotonic()
            t_said = await bounded(peer.say(with_silence(espeak("What is the capital of Germany?", RATE),
                                                         0.3, 0.0)), "say")
            await wait_until(lambda: len(agent_finals(peer, t0)) >= 2, 60, "the question's and the answer's "
                             "transcripts", task, peer)
            await wait_until(lambda: peer.loud_s("agent-voice", t_said) > 1.0, 20,
                             "the agent's reply on its room track", task, peer)
            await asyncio.sleep(4.0)  # the rest of the reply, and the follow-up window
            t_end = time.monotonic()
    finally:
        await peer.leave()
    voice = peer.loud_s("agent-voice", t_said, t_end)
    # The loopback also carries alice's own voice (remote voices play locally), so the room mic is
    # judged from the end of her question, while only the agent spoke.
    echo = peer.loud_s(MIC_TRACK_NAME, t_said + 0.5, t_end)
    assert voice > 1.0
    assert echo < 0.1 * voice, f"the room mic carried {echo:.2f} s of loud audio during {voice:.2f} s of reply"
    answers = [t for at, t in peer.finals if at >= t0]
    assert len(answers) <= 2, f"the agent answered itself: {answers}"
