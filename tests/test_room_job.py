"""`edgeagent join`, for real: the CLI joins the loopback livekit-server, and a participant written
with the livekit SDK chats with it and hears it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
from live import words
from livekit import api, rtc

if TYPE_CHECKING:
    from conftest import LiveKitServer


def _token(server: LiveKitServer, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    return api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants).to_jwt()


@contextlib.asynccontextmanager
async def joined(server: LiveKitServer, room_name: str) -> AsyncIterator[subprocess.Popen[str]]:
    env = dict(os.environ, EDGEAGENT__LIVEKIT__API_KEY=server.api_key,
               EDGEAGENT__LIVEKIT__API_SECRET=server.api_secret,
               PYTHONFAULTHANDLER="1")  # a hung exit shows its threads' stacks (SIGABRT below)
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for with a timeout
        [sys.executable, "-m", "edgeagent", "join", "--url", server.url, "--room", room_name,
         "--identity", "edgeagent-test"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _exited(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The output of ``proc`` once it has ended; a process that does not end in time is aborted,
    and its threads' stacks (faulthandler) go into the failure message."""
    try:
        return proc.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out = proc.communicate(timeout=10)[0]
        raise AssertionError(f"still running {timeout_s} s after SIGTERM:\n{out}") from None


def _stopped(proc: subprocess.Popen[str]) -> str:
    """The agent's output, for a failure message: it is stopped first."""
    proc.send_signal(signal.SIGTERM)
    return _exited(proc, 30)


async def test_join_answers_chat_by_voice_and_text(livekit_server: LiveKitServer) -> None:
    room_name = f"join-{uuid.uuid4().hex[:6]}"
    room = rtc.Room()
    states: list[str] = []
    texts: list[tuple[dict[str, str], str]] = []
    loud: list[float] = []
    readers: set[asyncio.Task[None]] = set()

    def on_attrs(changed: dict[str, str], p: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            states.append(changed["lk.agent.state"])

    async def read(reader: rtc.TextStreamReader) -> None:
        text = await reader.read_all()
        texts.append((dict(reader.info.attributes or {}), text))

    def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
        task = asyncio.ensure_future(read(reader))
        readers.add(task)
        task.add_done_callback(readers.discard)

    async def listen(track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=16_000, num_channels=1):
            samples = np.frombuffer(bytes(ev.frame.data), np.int16)
            if np.abs(samples).max(initial=0) > 1000:
                loud.append(time.monotonic())

    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            readers.add(asyncio.ensure_future(listen(track)))

    room.on("participant_attributes_changed", on_attrs)
    room.on("track_subscribed", on_track)
    room.register_text_stream_handler("lk.transcription", on_text)
    async with joined(livekit_server, room_name) as proc:
        await asyncio.wait_for(room.connect(livekit_server.url, _token(livekit_server, "alice", room_name)), 15)
        try:
            deadline = time.monotonic() + 180  # the CLI loads the models first
            while "listening" not in states:
                assert proc.poll() is None, proc.communicate()[0]
                for p in room.remote_participants.values():  # attributes set before we saw them
                    if not states and p.attributes.get("lk.agent.state"):
                        states.append(p.attributes["lk.agent.state"])
                assert time.monotonic() < deadline, f"the agent never listened: {states}"
                await asyncio.sleep(0.2)
            await asyncio.wait_for(room.local_participant.send_text("What is the capital of France?",
                                                                    topic="lk.chat"), 10)
            deadline = time.monotonic() + 60
            # the reply's final transcript, and the state back to listening after speaking: the
            # attribute updates and the text stream take different ways, and either may come first
            while not any(a.get("lk.transcription_final") == "true" and a.get("lk.transcribed_track_id")
                          for a, _ in texts) or "speaking" not in states or states[-1] != "listening":
                assert time.monotonic() < deadline, f"no answer: {states} {texts}\n{_stopped(proc)}"
                await asyncio.sleep(0.2)
        finally:
            for task in list(readers):
                task.cancel()
            await asyncio.wait_for(room.disconnect(), 10)
        proc.send_signal(signal.SIGTERM)
        out = _exited(proc, 30)
    assert proc.returncode == 0, out
    assert "joining room" in out, out
    answer = next(t for a, t in texts if a.get("lk.transcription_final") == "true")
    assert words(answer), texts
    assert states[states.index("listening"):][:4] == ["listening", "thinking", "speaking", "listening"], states
    assert loud, "the agent's voice never reached the room"
