"""The board as Home Assistant's Wyoming satellite, with the test playing Home Assistant.

The test is Home Assistant's side, with the wyoming package's client, in the order Home
Assistant's satellite code uses: it finds the satellite over zeroconf (on the loopback
interface only), sends ``describe``, checks the ``satellite`` block of the ``info``, sends
``run-satellite``; a spoken "Hey Jarvis. Turn on the kitchen light." in the PulseAudio mic then
brings ``run-pipeline`` and the question's audio, which the real Whisper transcribes; the test
answers with ``transcript``, ``synthesize`` and the reply's audio, hears it on the speaker
monitor (looped back into the mic: echo cancellation keeps the reply from stopping itself), and
talks over it: the reply stops and what was said comes as the next question.
Also: malformed events are refused with an ``error`` and a log line, and the server keeps
serving; a connection dropped mid-event is survived and a new one accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import PulseDevices
from live import Recorder, bounded, loud_blocks, play, words
from speech import espeak, piper, save, with_silence
from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.satellite import RunSatellite
from wyoming.tts import Synthesize
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.local_devices import make_devices
from edgeagent.config import AudioConfig
from edgeagent.config.home_assistant import HomeAssistantConfig
from edgeagent.home_assistant.satellite import Satellite
from edgeagent.home_assistant.server import SERVICE_TYPE, SatelliteServer
from edgeagent.voice import AgentState, Models

log = logging.getLogger(__name__)
RATE = 16_000
NAME = "edgeagent-test"
REPLY = ("Turning on the kitchen light. It is now on at full brightness, and the other lights in the house "
         "stay as they were. Tell me if you want it dimmer, warmer or off again later tonight.")


def config() -> HomeAssistantConfig:
    return HomeAssistantConfig(satellite=True, port=0, name=NAME, area="Kitchen")


async def next_event(client: AsyncTcpClient, timeout: float = 20.0, skip: tuple[str, ...] = ("ping",)) -> Event:
    while True:
        event = await bounded(client.read_event(), "the satellite's next event", timeout)
        assert event is not None, "the satellite closed the connection"
        if event.type not in skip:
            return event


async def read_question(client: AsyncTcpClient, timeout: float) -> tuple[list[Event], AudioFrame]:
    """The events of one question, up to its audio-stop, and its audio."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not events or not AudioStop.is_type(events[-1].type):
        events.append(await next_event(client, max(0.1, deadline - time.monotonic())))
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks and all((c.rate, c.width, c.channels) == (RATE, 2, 1) for c in chunks), events[:5]
    return events, AudioFrame.from_bytes(b"".join(c.audio for c in chunks), RATE)


async def browse(port: int) -> tuple[str, int]:
    """Find the satellite as Home Assistant does, over zeroconf, on the loopback interface only."""
    zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    found: asyncio.Queue[str] = asyncio.Queue()
    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE],
                                  handlers=[lambda zeroconf, service_type, name, state_change: found.put_nowait(name)])
    try:
        name = await bounded(found.get(), "the zeroconf browse", 10)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await bounded(info.async_request(zc.zeroconf, 3000), "resolving the service", 10)
        assert info.parsed_addresses() == ["127.0.0.1"] and info.port == port, (info.parsed_addresses(), info.port)
        return name, info.port
    finally:
        await bounded(browser.async_cancel(), "closing the browser", 5)
        await bounded(zc.async_close(), "closing zeroconf", 5)


@contextlib.asynccontextmanager
async def satellite_on_devices(models: Models) -> AsyncIterator[tuple[Satellite, SatelliteServer]]:
    inp, out = make_devices(AudioConfig())
    await bounded(inp.start(), "opening the mic", 15)
    await bounded(out.start(), "opening the speaker", 15)
    sat = Satellite(vad=models.vad, wake=models.wake)
    server = SatelliteServer(sat, config(), wake_words=("hey_jarvis",))
    await sat.start(inp, out)
    try:
        await bounded(server.start(), "starting the server", 10)
        yield sat, server
    finally:
        await bounded(server.stop(), "stopping the server", 10)
        await bounded(sat.aclose(), "closing the satellite", 15)
        await bounded(out.aclose(), "closing the speaker", 5)
        await bounded(inp.aclose(), "closing the mic", 5)


async def answer(client: AsyncTcpClient, models: Models, heard: str) -> float:
    """Home Assistant's answer: transcript, synthesize, the reply's audio; returns its length (s)."""
    await client.write_event(Transcript(text=heard).event())
    await client.write_event(Synthesize(text=REPLY).event())
    audio = await bounded(models.tts.synthesize(REPLY), "synthesizing the reply", 60)
    await client.write_event(AudioStart(rate=audio.sample_rate, width=2, channels=1).event())
    step = audio.sample_rate // 10
    for chunk in audio.chunks(step):
        await client.write_event(AudioChunk(rate=audio.sample_rate, width=2, channels=1,
                                            audio=chunk.to_bytes()).event())
    await client.write_event(AudioStop().event())
    return audio.duration


@pytest.mark.pulse
async def test_home_assistant_runs_the_satellite(models: Models, pulse: PulseDevices, loopback: None,
                                                 tmp_path: Path) -> None:
    """The speaker is looped back into the mic: the reply's echo is cancelled, the user's voice stops it."""
    question = save(with_silence(AudioFrame.concat([piper("Hey Jarvis."), AudioFrame.silence(0.6, RATE),
                                                    piper("Turn on the kitchen light.")]), 0.5, 1.5),
                    tmp_path / "question.wav")
    barge_in = save(with_silence(espeak("Please stop talking now."), 0.0, 1.0), tmp_path / "barge_in.wav")
    async with satellite_on_devices(models) as (sat, server):
        states: list[AgentState] = []
        sat.on("agent_state_changed", lambda ev: states.append(ev.new_state))
        name, port = await browse(server.port)
        assert name == f"{NAME}.{SERVICE_TYPE}"
        client = AsyncTcpClient("127.0.0.1", port)
        await bounded(client.connect(), "connecting", 10)
        try:
            await client.write_event(Describe().event())
            info = Info.from_event(await next_event(client))
            assert info.satellite is not None, info
            assert (info.satellite.name, info.satellite.area, info.satellite.has_vad,
                    info.satellite.active_wake_words) == (NAME, "Kitchen", True, ["hey_jarvis"]), info.satellite
            await client.write_event(RunSatellite().event())

            speaking = asyncio.ensure_future(play(pulse.mic_sink, question))
            events, audio = await read_question(client, 30)
            await bounded(speaking, "playing the question", 30)
            kinds = [e.type for e in events if e.type != "audio-chunk"]
            assert kinds == ["detection", "run-pipeline", "audio-start", "audio-stop"], kinds
            assert events[0].data["name"] == "hey_jarvis"
            run = events[1].data
            assert (run["start_stage"], run["end_stage"], run.get("wake_word_name")) == ("asr", "tts", "hey_jarvis")
            heard = (await bounded(models.stt.recognize(audio), "transcribing the question", 60)).text
            log.info("the satellite streamed %.2f s; Whisper heard %r", audio.duration, heard)
            assert {"turn", "kitchen", "light"} <= words(heard), heard
            assert audio.duration < 5.0, f"{audio.duration:.1f} s streamed: the end of speech was not heard"

            rec = await Recorder.start(pulse.speaker_monitor)
            try:
                length = await answer(client, models, heard)
                t0 = time.monotonic()
                while AgentState.SPEAKING not in states:
                    assert time.monotonic() - t0 < 15, f"the reply did not play; states {states}"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(2.5)
                talk = asyncio.ensure_future(play(pulse.mic_sink, barge_in))
                events, audio = await read_question(client, 20)  # the next question, without a wake word
                await bounded(talk, "playing the barge-in", 30)
                await asyncio.sleep(0.5)
            finally:
                recorded = await rec.stop()
            kinds = [e.type for e in events if e.type != "audio-chunk"]
            assert kinds == ["run-pipeline", "audio-start", "audio-stop"], kinds  # and no played
            said = (await bounded(models.stt.recognize(audio), "transcribing the barge-in", 60)).text
            log.info("the barge-in streamed %.2f s; Whisper heard %r", audio.duration, said)
            assert {"stop", "talking"} & words(said), said
            loud = loud_blocks(recorded)
            played_s = (loud[-1] - loud[0] + 1) * 0.02 if loud else 0.0
            log.info("reply %.1f s long; %.1f s of it played before the barge-in stopped it", length, played_s)
            assert 2.0 < played_s < length - 2.0, (played_s, length)
            n = recorded.sample_rate // 50
            reply_heard = (await bounded(models.stt.recognize(recorded.slice(loud[0] * n, (loud[0] + 100) * n)),
                                         "transcribing the reply", 60)).text
            assert len(words(reply_heard) & words(REPLY)) >= 3, reply_heard
            # idle (before the test listened) → the question → its answer → the barge-in's question
            assert states[:4] == [AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING,
                                  AgentState.LISTENING], states
        finally:
            await bounded(client.disconnect(), "disconnecting", 5)


async def test_bad_input_is_refused_and_a_dropped_connection_survived(
        models: Models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgeagent.home_assistant")
    sat = Satellite(vad=models.vad, wake=models.wake)  # not started: the protocol alone
    server = SatelliteServer(sat, HomeAssistantConfig(port=0, zeroconf=False, name=NAME), wake_words=("hey_jarvis",))
    await bounded(server.start(), "starting the server", 10)
    try:
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", server.port), "connecting", 10)
        writer.write(b'{"type": "run-satellite"}\n')
        bad = [b"this is not json\n", b'{"type": 5}\n', b'["describe"]\n',
               b'{"type": "describe", "data_length": 7}\nnotjson',
               b'{"type": "audio-chunk", "data": {"rate": 16000}}\n',  # no width, no channels
               b'{"type": "transcript", "data": {}}\n']  # no text
        refused = []
        for line in bad:
            writer.write(line)
            event = await bounded(async_read_event(reader), f"the answer to {line!r}", 10)
            assert event is not None and event.type == "error" and event.data["code"] == "malformed-event", event
            refused.append(event.data["text"])
        log.info("refused: %s", refused)
        writer.write(b'{"type": "describe"}\n')  # still served on the same connection
        event = await bounded(async_read_event(reader), "the info", 10)
        assert event is not None and Info.is_type(event.type)
        assert Info.from_event(event).satellite is not None
        writer.write(b'{"type": "ping", "data": {"text": "x"}}\n')
        event = await bounded(async_read_event(reader), "the pong", 10)
        assert event is not None and (event.type, event.data.get("text")) == ("pong", "x")
        assert sat.connected
        writer.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
                     b'"payload_length": 3200}\n' + bytes(100))
        writer.close()  # dropped mid-event
        t0 = time.monotonic()
        while sat.connected:
            assert time.monotonic() - t0 < 5, "the dropped connection still holds the satellite"
            await asyncio.sleep(0.02)

        client = AsyncTcpClient("127.0.0.1", server.port)  # accepted again
        await bounded(client.connect(), "connecting again", 10)
        try:
            await client.write_event(Describe().event())
            assert Info.is_type((await next_event(client)).type)
            await client.write_event(RunSatellite().event())
            await client.write_event(Ping(text="again").event())
            assert (await next_event(client, skip=())).type == "pong"
            assert sat.connected
        finally:
            await bounded(client.disconnect(), "disconnecting", 5)
    finally:
        await bounded(server.stop(), "stopping the server", 10)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("refused a malformed event" in m for m in messages) == len(bad), messages
    assert any("dropped the connection" in m and "ended inside a audio-chunk event" in m for m in messages), messages


@pytest.mark.pulse
async def test_edgeagent_run_is_the_satellite_and_stops_on_sigterm(pulse: PulseDevices) -> None:
    """``edgeagent run`` with home_assistant.satellite = true: Home Assistant's describe and
    run-satellite are served on the configured port; SIGTERM ends it with 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}, "EDGEAGENT_CONFIG": os.devnull}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "run", "--set", "home_assistant.satellite=true",
        "--set", f"home_assistant.port={port}", "--set", "home_assistant.zeroconf=false",
        "--set", "home_assistant.name=edgeagent-run", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not any("Home Assistant satellite edgeagent-run on 127.0.0.1:" in line for line in lines):
            line = (await bounded(proc.stdout.readline(), "the satellite's ready line", 120)).decode()
            assert line, "edgeagent run exited:\n" + "".join(lines)
            lines.append(line)
        client = AsyncTcpClient("127.0.0.1", port)
        await bounded(client.connect(), "connecting", 10)
        try:
            await client.write_event(Describe().event())
            info = Info.from_event(await next_event(client))
            assert info.satellite is not None and info.satellite.name == "edgeagent-run", info
            await client.write_event(RunSatellite().event())
            await client.write_event(Ping(text="run").event())
            assert (await next_event(client, skip=())).type == "pong"
        finally:
            await bounded(client.disconnect(), "disconnecting", 5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = await bounded(proc.communicate(), "edgeagent run stopping", 30)
        out = "".join(lines) + rest.decode()
        assert proc.returncode == 0, out
        assert "stopping" in out, out
    finally:
        if proc.returncode is None:
            proc.kill()
            await bounded(proc.wait(), "killing edgeagent run", 10)
