"""livekit-server killed and restarted under a device in ``livekit.mode = room+local``.

The device is :func:`edgeagent.room.job.run_room` in this process, on a private
livekit-server of its own (:func:`edgeagent.bench.server.start_server`), with the local
mic and speaker of ``[audio]`` (the PulseAudio null sinks). A remote participant asks a
question and hears the answer; the server is then killed (SIGKILL: no leave, no room
close). While it is down, a question spoken into the local mic must be answered on the
local speaker. The server is restarted (same ports and keys): a participant who joins
then must see the agent with its voice track within 15 s of the restart, ask, and hear
the answer. That outage is short, so the SDK gets the connection back itself; a second
test (the link alone, no models) keeps the server down until the SDK has given up and
the link's own backoff is at its cap, and wants the link back within 15 s too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live import Recorder, bounded, play, words
from livekit import rtc
from speech import piper, save, with_silence
from test_room_local import AGENT, RATE, Peer, agent_finals, device_in_room, loud_times, wait_until

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.wav import read_wav
from edgeagent.bench.server import Server
from edgeagent.config.room import LiveKitConfig
from edgeagent.room.connection import RoomLink
from edgeagent.voice import Models

if TYPE_CHECKING:
    from conftest import PulseDevices

pytestmark = [pytest.mark.livekit, pytest.mark.pulse, pytest.mark.reliability]
BACK_WITHIN_S = 15.0  # from the restart to the agent seen again, with its voice, by a new participant
LOCAL_TAIL_S = 1.5  # silence after the local question (the reply starts in it)


@pytest.fixture
def server(own_server: Server) -> Server:
    """A livekit-server of this test's own (conftest.py)."""
    return own_server


@pytest.fixture(scope="module")
def local_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("room_restart")
    return save(with_silence(piper("What is the capital of Italy?"), 0.5, LOCAL_TAIL_S), d / "question.wav")


async def logged(caplog: pytest.LogCaptureFixture, check: Callable[[str], bool], after: int, timeout: float,
                 what: str) -> int:
    """The index of the first log record from index ``after`` whose message ``check`` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        for i, record in enumerate(caplog.records[after:], after):
            if check(record.getMessage()):
                return i
        if time.monotonic() > deadline:
            pytest.fail(f"no log line for {what} within {timeout:.0f} s; "
                        f"seen: {[r.getMessage() for r in caplog.records[after:]][-20:]}")
        await asyncio.sleep(0.1)


def agent_with_voice(peer: Peer) -> bool:
    """``peer`` sees the agent and is subscribed to its voice."""
    return AGENT in peer.room.remote_participants and "agent-voice" in peer.heard


async def ask(peer: Peer, text: str, task: asyncio.Task[int], caplog: pytest.LogCaptureFixture) -> None:
    """``peer`` asks ``text`` (a question about a capital): the agent hears it, answers, and ``peer``
    hears the answer on the agent's track and reads its final transcript. (What the small LLM
    answers is not checked: it once said Lyon for the capital of France.)"""
    mark, t0 = len(caplog.records), time.monotonic()
    t_said = await bounded(peer.say(with_silence(piper(text, RATE), 0.3, 0.0)), f"{peer.identity}'s question")
    heard = await logged(caplog, lambda m: m.startswith("user: ") and "capital" in words(m), mark, 30,
                         f"{peer.identity}'s question heard")
    said = await logged(caplog, lambda m: m.startswith("agent: "), heard, 60, f"the reply to {peer.identity}")
    reply = words(caplog.records[said].getMessage().removeprefix("agent: "))
    await wait_until(lambda: peer.loud_s("agent-voice", t_said) > 0.5, 20,
                     f"the reply on the agent's track at {peer.identity}", task, peer)
    await wait_until(lambda: any(words(t) == reply for t in agent_finals(peer, t0)), 20,
                     f"the reply's final transcript at {peer.identity}", task, peer)


def timeline(caplog: pytest.LogCaptureFixture, after: int, t_kill: float) -> list[str]:
    """The device's room-link log lines since the kill, with seconds since the kill."""
    return [f"{r.created - t_kill:+6.2f} s  {r.getMessage()}" for r in caplog.records[after:]
            if r.name == "edgeagent.room.connection"]


async def test_server_killed_and_restarted_mid_session(
    models: Models, server: Server, pulse: PulseDevices, local_wav: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "edgeagent")
    room = f"restart-{uuid.uuid4().hex[:8]}"
    alice, bob = Peer("alice"), Peer("bob")
    rec = await bounded(Recorder.start(pulse.speaker_monitor), "recorder start")
    try:
        async with device_in_room(models, server, room, publish_local_mic=False) as task:
            # 1. A remote participant asks; the agent answers in the room.
            await alice.join(server, room)  # a Server has the url, api_key and api_secret join needs
            await wait_until(lambda: agent_with_voice(alice), 30, "the agent's voice track", task, alice)
            await bounded(alice.say(AudioFrame.silence(1.0, RATE)), "silence", 10)  # links alice
            await ask(alice, "What is the capital of France?", task, caplog)

            # 2. The server dies. The local mic and speaker carry on.
            at_kill, t_kill = len(caplog.records), time.time()
            await asyncio.to_thread(server.kill)
            await logged(caplog, lambda m: m.startswith("room: connection lost") or m.startswith("room: disconnected"),
                         at_kill, 10, "the room lost")
            t_play = time.monotonic()
            await bounded(play(pulse.mic_sink, local_wav), "the local question", 30)
            t_asked = t_play + read_wav(local_wav).duration - LOCAL_TAIL_S  # the end of the words
            heard = await logged(caplog, lambda m: m.startswith("user: ") and "capital" in words(m), at_kill, 30,
                                 "the local question understood")
            await logged(caplog, lambda m: m.startswith("agent: "), heard, 60, "the reply to the local question")
            t_local_done = time.monotonic()
            assert not server.running, "the server came back by itself"
            await bounded(alice.leave(), "alice leaving a dead server", 30)

            # 3. The server comes back (same ports, same keys): the agent rejoins within 15 s.
            at_restart, t_restart, wall_restart = len(caplog.records), time.monotonic(), time.time()
            await bounded(asyncio.to_thread(server.restart), "livekit-server restart", 40)
            await bob.join(server, room)
            await wait_until(lambda: agent_with_voice(bob), BACK_WITHIN_S + 15, "the agent back in the room",
                             task, bob)
            back_s = time.monotonic() - t_restart
            lines = timeline(caplog, at_kill, t_kill)
            print(f"outage {wall_restart - t_kill:.1f} s; agent seen by bob {back_s:.1f} s after the restart; "
                  "room link since the kill:\n  " + "\n  ".join(lines))
            assert back_s <= BACK_WITHIN_S, f"the agent came back {back_s:.1f} s after the restart: {lines}"
            assert any(m.startswith(("room: connection back", "room: joined"))
                       for m in (r.getMessage() for r in caplog.records[at_restart:])), lines

            # 4. ... and answers again.
            await bounded(bob.say(AudioFrame.silence(1.0, RATE)), "silence", 10)
            await ask(bob, "What is the capital of Germany?", task, caplog)
    finally:
        t_end = time.monotonic()
        audio = await bounded(rec.stop(), "recorder stop", 15)
        await bounded(bob.leave(), "bob leaving", 30)
        await bounded(alice.leave(), "alice leaving", 30)
    heard_at = loud_times(audio, t_end)  # while the server was down, the agent is all the speaker plays
    local_reply_s = sum(1 for t in heard_at if t_asked <= t < t_local_done + 0.5) * 0.02
    assert local_reply_s > 0.5, \
        f"the reply to the local question was not played on the local speaker ({local_reply_s:.2f} s loud)"


async def test_link_rejoins_within_15_s_after_an_outage_the_sdk_gave_up_on(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A long outage: the SDK stops resuming (``disconnected``, after ~25-40 s), the link retries on
    its own until its backoff is at the cap; the server comes back during a longest wait."""
    caplog.set_level(logging.INFO, "edgeagent.room")
    room = f"outage-{uuid.uuid4().hex[:8]}"
    link = RoomLink(LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret, room=room,
                                  identity=AGENT))
    source = rtc.AudioSource(RATE, 1)
    link.set_agent_audio(source)
    bob = Peer("bob")
    try:
        await link.start()
        assert await link.wait_connected(20), link.last_error
        mark, t_kill = len(caplog.records), time.time()
        await asyncio.to_thread(server.kill)
        await logged(caplog, lambda m: m.startswith("room: disconnected"), mark, 90, "the SDK giving up")
        # "attempt 8" waits backoff(6) = min(max_backoff_s, 0.5 * 2**6): the cap.
        await logged(caplog, lambda m: m.startswith("room: next attempt in") and m.endswith("(attempt 8)"), mark, 60,
                     "the link retrying at its longest backoff")
        at_restart, t_restart = len(caplog.records), time.monotonic()
        await bounded(asyncio.to_thread(server.restart), "livekit-server restart", 40)
        assert await link.wait_connected(BACK_WITHIN_S + 15), link.last_error
        joined_s = time.monotonic() - t_restart
        await bob.join(server, room)
        deadline = time.monotonic() + 15
        while not (AGENT in bob.room.remote_participants and "agent-voice" in bob.heard):
            assert time.monotonic() < deadline, "bob does not see the agent's voice track"
            await asyncio.sleep(0.05)
        lines = timeline(caplog, mark, t_kill)
        print(f"link joined again {joined_s:.1f} s after the restart; since the kill:\n  " + "\n  ".join(lines))
        assert joined_s <= BACK_WITHIN_S, lines
        assert link.joins == 2 and any(m.startswith("room: joined") for m in
                                       (r.getMessage() for r in caplog.records[at_restart:])), lines
    finally:
        await bounded(bob.leave(), "bob leaving", 30)
        await bounded(link.aclose(), "the link closing", 30)
        await bounded(source.aclose(), "the source closing", 10)
