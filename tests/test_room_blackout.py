"""A 30 s network blackout between the device and livekit-server (issue 18 item 3, the part that runs here).

livekit-server runs in a network namespace of this test's own (:mod:`netns`), reached from
the device through a veth pair; the device is :func:`edgeagent.room.job.run_room` in
``room+local`` mode in this process, with the PulseAudio null sinks as its mic and speaker.
A question is asked on the local mic; as its reply reaches the room participant, this
side of the veth pair goes down for 30 s (``ip link set ... down``: no packet either way,
as a board whose Wi-Fi drops). The reply ends on the local speaker, and a second local
question must be answered there. (A long reply makes the blackout longer than 30 s: it
lasts until the second answer has ended, and its length is printed.) When the
link is back, a participant who joins must see the agent with its voice track within
15 s, and the device must then stay in the room without a second join of its identity
(no duplicate-identity fight).

The loss/jitter half of item 3 (5 % loss, 80 ms +- 40 ms, WER of the reply heard in the room
within 10 points of a clean run) is tests/test_room_netem.py. Not with ``tc qdisc add dev ...
root netem loss 5% delay 80ms 40ms``: this kernel (6.18, no /lib/modules to load one from) lacks
the ``sch_netem`` qdisc ("Error: Specified qdisc kind is unknown"), and the ``gact`` action (its
``random netrand drop 5``) and the ``matchall`` classifier too; ``tbf`` is there, but it only
limits the rate. That test drops and delays the veth's packets in userspace instead, from an
NFQUEUE iptables rule (tests/netem.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live import Recorder, bounded, play, words
from netns import NetNs, made, why_not
from speech import piper, save, with_silence
from test_room_local import Peer, device_in_room, loud_times, wait_until
from test_room_restart import BACK_WITHIN_S, agent_with_voice, logged, timeline

from edgeagent.audio.wav import read_wav
from edgeagent.bench.server import Server, start_server
from edgeagent.voice import Models

if TYPE_CHECKING:
    from conftest import PulseDevices

pytestmark = [pytest.mark.livekit, pytest.mark.pulse, pytest.mark.reliability]
ROOT = Path(__file__).resolve().parents[1]
BLACKOUT_S = 30.0
TAIL_S = 1.5
STAY_S = 5.0  # after the rejoin, the device stays in the room this long without another join


@pytest.fixture
def netns() -> Iterator[NetNs]:
    yield from made(why_not(), "the blackout test")


@pytest.fixture
def server(netns: NetNs, tmp_path: Path) -> Iterator[Server]:
    """livekit-server inside the namespace, on its end of the veth pair."""
    srv = start_server(ROOT, tmp_path / "livekit", host=netns.inner, prefix=netns.exec)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("room_blackout")
    return (save(with_silence(piper("What is the capital of Italy?"), 0.5, TAIL_S), d / "italy.wav"),
            save(with_silence(piper("What is the capital of Spain?"), 0.5, TAIL_S), d / "spain.wav"))


async def ask_locally(pulse: PulseDevices, wav: Path, caplog: pytest.LogCaptureFixture) -> tuple[float, int]:
    """Say ``wav`` into the local mic: (when its words ended, the index of the "user:" line for it)."""
    mark = len(caplog.records)
    t0 = time.monotonic()
    await bounded(play(pulse.mic_sink, wav), "the local question", 30)
    heard = await logged(caplog, lambda m: m.startswith("user: ") and "capital" in words(m), mark, 30,
                         "the local question understood")
    return t0 + read_wav(wav).duration - TAIL_S, heard


async def test_a_30_s_blackout_mid_reply(
    models: Models, netns: NetNs, server: Server, pulse: PulseDevices, questions: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "edgeagent")
    room = f"blackout-{uuid.uuid4().hex[:8]}"
    alice, bob = Peer("alice"), Peer("bob")
    rec = await bounded(Recorder.start(pulse.speaker_monitor), "recorder start")
    try:
        async with device_in_room(models, server, room, publish_local_mic=False) as task:
            await alice.join(server, room)  # across the veth pair, as the device
            await wait_until(lambda: agent_with_voice(alice), 30, "the agent's voice track", task, alice)

            # 1. A local question; the link goes down as its reply reaches the room.
            t_asked, heard = await ask_locally(pulse, questions[0], caplog)
            await wait_until(lambda: alice.loud_s("agent-voice", t_asked) > 0.2, 20, "the reply in the room",
                             task, alice)
            at_down, t_down, wall_down = len(caplog.records), time.monotonic(), time.time()
            netns.down()

            # 2. Blacked out: the first reply ends on the local speaker, and a second local question is
            #    answered there. (Not asked over the first reply: in one full-suite run a question said
            #    over it went unheard, no barge-in, no turn, although the mic has no echo path; likely
            #    the echo canceller at double talk, not looked into. A long reply makes the blackout
            #    longer than 30 s; its length is printed.)
            await logged(caplog, lambda m: m.startswith("agent: "), heard, 60, "the first reply's end")
            t_asked2, heard2 = await ask_locally(pulse, questions[1], caplog)
            await logged(caplog, lambda m: m.startswith("agent: "), heard2, 60, "the reply to the second question")
            t_local_done = time.monotonic()
            await asyncio.sleep(max(0.0, BLACKOUT_S - (time.monotonic() - t_down)))

            # 3. The link is back: a participant who joins sees the agent and its voice within 15 s.
            at_up, t_up = len(caplog.records), time.monotonic()
            netns.up()
            await bob.join(server, room)
            await wait_until(lambda: agent_with_voice(bob), BACK_WITHIN_S + 15, "the agent back in the room",
                             task, bob)
            back_s = time.monotonic() - t_up
            await asyncio.sleep(STAY_S)
            lines = timeline(caplog, at_down, wall_down)
            print(f"blackout {t_up - t_down:.1f} s; agent seen by bob {back_s:.1f} s after the link came back; "
                  "room link since the blackout began:\n  " + "\n  ".join(lines))
            assert back_s <= BACK_WITHIN_S, f"the agent came back {back_s:.1f} s after the link: {lines}"
            after_up = [r.getMessage() for r in caplog.records[at_up:] if r.name == "edgeagent.room.connection"]
            back = [m for m in after_up if m.startswith(("room: joined", "room: connection back"))]
            assert len(back) == 1, f"the device came back {len(back)} times (a fight over its identity?): {lines}"
            assert not any("DUPLICATE" in m.upper() for m in after_up), lines
            assert not task.done(), "run_room ended"
    finally:
        t_end = time.monotonic()
        audio = await bounded(rec.stop(), "recorder stop", 15)
        await bounded(bob.leave(), "bob leaving", 30)
        await bounded(alice.leave(), "alice leaving", 30)
    heard_at = loud_times(audio, t_end)
    second_reply_s = sum(1 for t in heard_at if t_asked2 <= t < t_local_done + 0.5) * 0.02
    assert second_reply_s > 0.5, \
        f"the reply to the question asked in the blackout was not played locally ({second_reply_s:.2f} s loud)"
