"""The LiveKit Agents conventions (edgeagent.room.conventions) against the real livekit-server.

The agent side is an rtc.Room of its own with a real AgentSession (default models,
a scripted mic, a real-time WAV speaker); the test is a second participant that
sees ``lk.agent.state``, reads ``lk.transcription`` streams and types on ``lk.chat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from live import words
from livekit import api, rtc
from speech import piper

from edgeagent.audio.wav import WavFileOutput, read_wav
from edgeagent.bench.scripted import ScriptedMic
from edgeagent.config.voice import ActivationConfig
from edgeagent.room.conventions import RoomConventions
from edgeagent.voice import Agent, AgentSession, Models

if TYPE_CHECKING:
    from conftest import LiveKitServer

pytestmark = pytest.mark.livekit
STEP = 20.0  # seconds, for every single await on the SDK
REPLY = 60.0  # seconds, for a whole spoken reply
QUESTION = "What is the capital of France?"


def _token(server: LiveKitServer, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True, can_update_own_metadata=True)
    return (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
            .with_name(identity).with_grants(grants).to_jwt())


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    async def poll() -> None:
        while True:
            if check():
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{what}: not within {timeout:.0f} s")


@dataclass
class Transcript:
    sender: str
    """The identity the handler was given: the agent's, even for user transcripts (the server
    does not pass on ``sender_identity``); front ends tell them apart by the track id."""
    opened: dict[str, str]
    """The attributes in the stream's header."""
    text: str = ""
    closed: dict[str, str] = field(default_factory=dict)
    """The attributes once the stream has ended (header + trailer)."""
    done: bool = False


@dataclass
class Scene:
    agent_room: rtc.Room
    user_room: rtc.Room
    session: AgentSession
    conventions: RoomConventions
    mic: ScriptedMic
    agent_track: str
    user_track: str
    states: list[str]
    transcripts: list[Transcript]
    name: str = ""

    def of(self, side: str, done: bool = True) -> list[Transcript]:
        """The transcripts of "agent" or "user" (by ``lk.transcribed_track_id``)."""
        track = self.agent_track if side == "agent" else self.user_track
        return [t for t in self.transcripts
                if t.opened.get("lk.transcribed_track_id") == track and (t.done or not done)]

    def user_messages(self) -> list[str]:
        return [m.content for m in self.session.history.messages if m.role == "user"]

    async def chat(self, text: str) -> None:
        await asyncio.wait_for(self.user_room.local_participant.send_text(text, topic="lk.chat"), STEP)


async def _silent_track(room: rtc.Room, name: str) -> tuple[str, rtc.AudioSource]:
    source = rtc.AudioSource(48_000, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await asyncio.wait_for(room.local_participant.publish_track(track, options), STEP)
    return publication.sid, source


@contextlib.asynccontextmanager
async def scene(server: LiveKitServer, models: Models, wav: Path, max_chat_bytes: int = 4096,
                listen: str | None = None, identities: tuple[str, ...] = ()) -> AsyncIterator[Scene]:
    name = f"conv-{uuid.uuid4().hex[:8]}"
    agent_room, user_room = rtc.Room(), rtc.Room()
    mic, speaker = ScriptedMic(seed=3), WavFileOutput(wav, realtime=True)
    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts,
                           audio_turn=models.audio_turn, activation=ActivationConfig(mode="always"),
                           echo_cancellation=False)
    states: list[str] = []
    transcripts: list[Transcript] = []
    readers: set[asyncio.Task[None]] = set()
    sources: list[rtc.AudioSource] = []

    def user_track() -> str | None:
        user = agent_room.remote_participants.get("user")
        pubs = [] if user is None else list(user.track_publications.values())
        return next((p.sid for p in pubs if p.source == rtc.TrackSource.SOURCE_MICROPHONE), None)

    def on_transcript(reader: rtc.TextStreamReader, sender: str) -> None:
        t = Transcript(sender, dict(reader.info.attributes or {}))
        transcripts.append(t)

        async def read() -> None:
            t.text = await asyncio.wait_for(reader.read_all(), REPLY)
            t.closed, t.done = dict(reader.info.attributes or {}), True

        task = asyncio.ensure_future(read())
        readers.add(task)

    def on_attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity == "agent" and "lk.agent.state" in changed:
            states.append(changed["lk.agent.state"])

    conventions = None
    try:
        await asyncio.wait_for(agent_room.connect(server.url, _token(server, "agent", name)), STEP)
        agent_track, source = await _silent_track(agent_room, "agent-voice")
        sources.append(source)
        conventions = RoomConventions(agent_room, session, agent_track_sid=lambda: agent_track,
                                      user_track_sid=user_track, user_identity=lambda: "user",
                                      listen=listen, identities=identities, max_chat_bytes=max_chat_bytes)
        conventions.attach()
        await asyncio.wait_for(speaker.start(), STEP)
        await asyncio.wait_for(session.start(Agent(instructions="You are a helpful voice assistant. "
                                                   "Answer in one short sentence."), input=mic, output=speaker), 60)
        user_room.register_text_stream_handler("lk.transcription", on_transcript)
        user_room.on("participant_attributes_changed", on_attributes)
        await asyncio.wait_for(user_room.connect(server.url, _token(server, "user", name)), STEP)
        await until(lambda: "agent" in user_room.remote_participants, STEP, "the agent seen by the user")
        initial = user_room.remote_participants["agent"].attributes.get("lk.agent.state")
        if initial is not None and not states:
            states.append(initial)
        user_sid, source = await _silent_track(user_room, "user-mic")
        sources.append(source)
        await until(lambda: user_track() == user_sid, STEP, "the user's track seen by the agent")
        await until(lambda: bool(states) and states[-1] == "listening", STEP, "lk.agent.state listening")
        yield Scene(agent_room, user_room, session, conventions, mic, agent_track, user_sid, states, transcripts,
                    name)
    finally:
        if conventions is not None:
            await asyncio.wait_for(conventions.aclose(), STEP)
        await asyncio.wait_for(session.aclose(), 30)
        await asyncio.wait_for(mic.aclose(), 5)
        await asyncio.wait_for(speaker.aclose(), 10)
        for task in readers:
            task.cancel()
        for closer in [*(s.aclose() for s in sources), user_room.disconnect(), agent_room.disconnect()]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer, 10)


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(w in it for w in wanted)


def _check_agent_transcript(t: Transcript, agent_track: str) -> None:
    assert t.opened.get("lk.transcription_final") == "false", t
    assert t.opened.get("lk.segment_id", "").startswith("SG_"), t
    assert t.opened.get("lk.transcribed_track_id") == agent_track, t
    assert t.closed.get("lk.transcription_final") == "true", t
    assert t.closed.get("lk.segment_id") == t.opened["lk.segment_id"], t
    assert t.text.strip(), t


async def test_spoken_turn_sends_both_transcripts_and_the_agent_state(
    livekit_server: LiveKitServer, models: Models, tmp_path: Path
) -> None:
    async with scene(livekit_server, models, tmp_path / "out.wav") as s:
        s.mic.speak(piper(QUESTION))
        await until(lambda: bool(s.of("agent")), REPLY, "the agent's final transcript")
        await until(lambda: s.states[-1] == "listening", STEP, "listening after the reply")
        reply = [m.content for m in s.session.history.messages if m.role == "assistant"]
    assert _in_order(s.states, ["listening", "thinking", "speaking", "listening"]), s.states
    user = s.of("user", done=False)
    assert user, s.transcripts
    finals = [t for t in user if t.opened.get("lk.transcription_final") == "true"]
    assert len(finals) == 1 and {"capital", "france"} <= words(finals[0].text), user
    assert len({t.opened.get("lk.segment_id") for t in user}) == 1, user  # one segment per user turn
    for t in user:
        assert t.opened.get("lk.transcribed_track_id") == s.user_track, t
    agent = s.of("agent")
    assert len(agent) == 1, agent
    _check_agent_transcript(agent[0], s.agent_track)
    assert reply and words(agent[0].text) == words(reply[0]), (agent[0].text, reply)


async def test_chat_is_answered_by_voice_and_by_text(
    livekit_server: LiveKitServer, models: Models, tmp_path: Path
) -> None:
    wav = tmp_path / "out.wav"
    async with scene(livekit_server, models, wav) as s:
        seen = len(s.states)
        await s.chat(QUESTION)
        await until(lambda: bool(s.of("agent")), REPLY, "the text answer on lk.transcription")
        await until(lambda: s.states[-1] == "listening", STEP, "listening after the reply")
        assert s.user_messages() == [QUESTION]
    assert _in_order(s.states[seen:], ["thinking", "speaking", "listening"]), s.states
    _check_agent_transcript(s.of("agent")[0], s.agent_track)
    audio = read_wav(wav)
    assert float(np.abs(audio.samples).max()) > 1000, "the reply was not spoken"


async def test_bad_chat_is_refused_and_a_flood_costs_one_reply(
    livekit_server: LiveKitServer, models: Models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "edgeagent.room.conventions")
    async with scene(livekit_server, models, tmp_path / "out.wav", max_chat_bytes=200) as s:
        await s.chat("a" * 300)
        await s.chat("   ")
        await asyncio.wait_for(
            s.user_room.local_participant.send_bytes(b"caf\xc3 \xff\xfe", topic="lk.chat"), STEP)
        await until(lambda: len([r for r in caplog.records if "refused" in r.getMessage()]) >= 3, STEP,
                    "three refusals")
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 3, refusals
        assert any("over the limit" in r for r in refusals), refusals
        assert any("empty" in r for r in refusals), refusals
        assert any("UTF-8" in r for r in refusals), refusals
        await asyncio.sleep(1.0)
        assert s.user_messages() == [] and s.states[-1] == "listening", (s.user_messages(), s.states)

        texts = ["Say hello.", "Say goodbye.", "Count to three.", QUESTION]
        for text in texts:
            await s.chat(text)
        await until(lambda: bool(s.user_messages()) and s.user_messages()[-1] == QUESTION, REPLY,
                    "the last chat message taken")
        history = s.session.history.messages
        await until(lambda: history[-1].role == "assistant" and history[-2].content == QUESTION, REPLY,
                    "the answer to the last message")
        await until(lambda: bool(s.of("agent")) and s.states[-1] == "listening", STEP,
                    "its text answer, and listening")
        answered = s.user_messages()
        assert len(answered) <= len(texts) and answered[-1] == QUESTION, answered
        finals = s.of("agent")
        assert finals, "no text answer"
        _check_agent_transcript(finals[-1], s.agent_track)


@pytest.mark.parametrize(("listen", "refused", "answered"), [
    ("linked", "mallory", "user"),  # the agent is linked to "user"
    ("identities", "user", "mallory"),  # the agent listens to "mallory" only
    ("all", None, "mallory"),  # anyone
])
async def test_chat_is_taken_only_from_whom_the_agent_listens_to(
    livekit_server: LiveKitServer, models: Models, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    listen: str, refused: str | None, answered: str,
) -> None:
    caplog.set_level(logging.INFO, "edgeagent.room.conventions")
    identities = ("mallory",) if listen == "identities" else ()
    async with scene(livekit_server, models, tmp_path / "out.wav", listen=listen, identities=identities) as s:
        mallory = rtc.Room()
        try:
            await asyncio.wait_for(mallory.connect(livekit_server.url, _token(livekit_server, "mallory", s.name)),
                                   STEP)
            await until(lambda: "mallory" in s.agent_room.remote_participants, STEP, "mallory seen by the agent")
            rooms = {"user": s.user_room, "mallory": mallory}
            if refused is not None:
                await asyncio.wait_for(rooms[refused].local_participant.send_text("Say hello.", topic="lk.chat"),
                                       STEP)
                await until(lambda: any(f"lk.chat from {refused} refused" in r.getMessage() for r in caplog.records),
                            STEP, f"the refusal of {refused}'s message")
                await asyncio.sleep(1.0)
                assert s.user_messages() == [] and s.states[-1] == "listening", (s.user_messages(), s.states)
            await asyncio.wait_for(rooms[answered].local_participant.send_text(QUESTION, topic="lk.chat"), STEP)
            await until(lambda: s.user_messages() == [QUESTION], STEP, f"{answered}'s message taken")
            await until(lambda: bool(s.of("agent")) and s.states[-1] == "listening", REPLY,
                        f"the answer to {answered}, and listening")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(mallory.disconnect(), 10)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == (0 if refused is None else 1), refusals
    if refused is not None:
        assert refusals[0].startswith(f"lk.chat from {refused} refused: the agent listens to"), refusals
