"""A participant of a room that a worker is dispatched into (tests/test_worker_*.py): asks in lk.chat,
reads the agent's transcript and hears its voice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
from livekit import api, rtc

if TYPE_CHECKING:
    from conftest import LiveKitServer


class User:
    """A participant of the room: asks in lk.chat, reads the agent's transcript and hears its voice."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.finals: list[str] = []
        self.loud = 0
        self.states: list[str] = []  # the agent's lk.agent.state, each change as it reached us
        self.tasks: set[asyncio.Task[None]] = set()
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            if (reader.info.attributes or {}).get("lk.transcription_final") == "true" and \
                    (reader.info.attributes or {}).get("lk.transcribed_track_id"):
                self.finals.append(text)
        self._spawn(read())

    def _on_attributes(self, changed: dict[str, str], p: rtc.Participant) -> None:
        if "lk.agent.state" in changed and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.states.append(changed["lk.agent.state"])

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        async def listen() -> None:
            async for ev in rtc.AudioStream(track, sample_rate=16_000, num_channels=1):
                if np.abs(np.frombuffer(bytes(ev.frame.data), np.int16)).max(initial=0) > 1000:
                    self.loud += 1
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(listen())

    def agent(self) -> rtc.RemoteParticipant | None:
        return next((p for p in self.room.remote_participants.values()
                     if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT), None)

    async def listening(self, timeout: float = 30) -> rtc.RemoteParticipant:
        """The agent, once it listens in the room."""
        deadline = time.monotonic() + timeout
        while (a := self.agent()) is None or a.attributes.get("lk.agent.state") != "listening":
            assert time.monotonic() < deadline, "the dispatched agent never listened in the room"
            await asyncio.sleep(0.05)
        return a

    async def ask(self, question: str) -> str:
        """Wait for the agent to listen, ask, and return its answer once it was heard and is over."""
        await self.listening()
        finals, loud, states = len(self.finals), self.loud, len(self.states)
        await asyncio.wait_for(self.room.local_participant.send_text(question, topic="lk.chat"), 10)
        deadline = time.monotonic() + 60
        # Over when the agent's words and voice came and its state went away from listening and back.
        # The state must be seen to change: the attribute travels apart from the transcript and
        # the audio, and can reach us after them (seen in CI: the answer's text and voice came
        # while "thinking" had not reached us yet, so "listening" was still the state we knew).
        while len(self.finals) == finals or self.loud == loud or not self._answered(states):
            assert time.monotonic() < deadline, \
                f"no answer: {self.finals[finals:]}, loud {self.loud - loud}, states {self.states[states:]}"
            await asyncio.sleep(0.05)
        return self.finals[finals]

    def _answered(self, since: int) -> bool:
        """Did the agent's state leave listening after ``since`` and come back to it?"""
        seen = self.states[since:]
        return bool(seen) and seen[-1] == "listening" and any(s != "listening" for s in seen)

    async def leave(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.wait_for(self.room.disconnect(), 10)


def user_token(server: LiveKitServer, room: str, identity: str, dispatch: str | None = None) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
    token = api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants)
    if dispatch is not None:
        token = token.with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=dispatch)]))
    return token.to_jwt()


@contextlib.asynccontextmanager
async def user_in(server: LiveKitServer, room: str, dispatch: str | None = None) -> AsyncIterator[User]:
    user = User()
    await asyncio.wait_for(user.room.connect(server.url, user_token(server, room, "alice", dispatch)), 15)
    try:
        yield user
    finally:
        await user.leave()


async def until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)
