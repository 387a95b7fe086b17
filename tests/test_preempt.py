"""Preemptive replies and degenerate text, reply by reply: a scripted LLM (scripted_stages.py: it
replays a given script at a given pace, so these tests are deterministic) speaking through the real Piper
voice into a real-time WAV speaker. The same paths with every real model, on the virtual
mic and speaker, are in test_session_turns.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from scripted_stages import ScriptedLLM

from edgeagent.audio.wav import WavFileOutput, read_wav
from edgeagent.llm.chat import ChatContext, ToolCall
from edgeagent.llm.tools import FunctionTool
from edgeagent.tts.base import TTS
from edgeagent.voice.reply import Reply
from edgeagent.voice.speech import SpeechHandle


class Host:
    """What a reply needs from its session; it records tool runs and first audio."""

    def __init__(self) -> None:
        self.tool_runs: list[str] = []
        self.first_audio: list[float] = []

    def llm_context(self) -> ChatContext:
        ctx = ChatContext()
        ctx.add("system", "You are a test.")
        return ctx

    def current_tools(self) -> Sequence[FunctionTool]:
        return ()

    async def run_tools(self, calls: Sequence[ToolCall], text: str, handle: SpeechHandle) -> None:
        self.tool_runs.extend(c.name for c in calls)

    def on_first_audio(self, handle: SpeechHandle) -> None:
        self.first_audio.append(time.monotonic())


@pytest.fixture(scope="module")
def piper() -> Iterator[TTS]:
    from edgeagent.tts.piper import PiperTTS

    tts = PiperTTS()
    yield tts
    asyncio.run(asyncio.wait_for(tts.aclose(), 30))


def loud_seconds(path: Path) -> float:
    audio = read_wav(path)
    blocks = audio.chunks(audio.sample_rate // 50)
    return 0.02 * sum(1 for b in blocks if b.rms_dbfs() > -40.0)


async def test_a_held_reply_is_never_heard_runs_no_tool_and_drops_without_a_trace(piper: TTS, tmp_path: Path) -> None:
    out = WavFileOutput(tmp_path / "speaker.wav", realtime=True)
    await asyncio.wait_for(out.start(), 5)
    host = Host()
    call = ToolCall(id="c1", name="set_light", arguments="{}")
    llm = ScriptedLLM(["The light ", "is on now. ", "Anything else?", call])
    held = Reply(SpeechHandle(), host, llm, piper, out, ctx=host.llm_context(), user_text="Turn the light on")
    held.begin()
    deadline = time.monotonic() + 20
    while held.times.tts_first_audio is None or llm.closed_at is None:  # all of it generated, audio ready
        assert time.monotonic() < deadline, "the held reply never produced audio"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert held.handle.text == "The light is on now. Anything else?"
    assert not held.audible and host.first_audio == [] and host.tool_runs == []  # held: nothing out
    held.drop()
    await asyncio.sleep(0.2)
    assert host.tool_runs == [] and not held.audible
    await asyncio.wait_for(out.aclose(), 5)
    assert loud_seconds(out.path) == 0.0  # not a sample of it reached the speaker


async def test_a_released_reply_plays_what_it_held_and_runs_its_tools(piper: TTS, tmp_path: Path) -> None:
    out = WavFileOutput(tmp_path / "speaker.wav", realtime=True)
    await asyncio.wait_for(out.start(), 5)
    host = Host()
    call = ToolCall(id="c1", name="set_light", arguments="{}")
    llm = ScriptedLLM(["Sure, ", "switching it on.", call])
    reply = Reply(SpeechHandle(), host, llm, piper, out, ctx=host.llm_context(), user_text="Turn the light on")
    reply.begin()
    deadline = time.monotonic() + 20
    while reply.times.tts_first_audio is None:
        assert time.monotonic() < deadline, "the held reply never produced audio"
        await asyncio.sleep(0.02)
    assert host.tool_runs == []
    llm.pieces = ["Done."]  # the round after the tool call
    released = time.monotonic()
    await asyncio.wait_for(reply.run(), 30)
    assert host.tool_runs == ["set_light"]
    assert host.first_audio and host.first_audio[0] - released < 0.5  # it was ready: heard at once
    await asyncio.wait_for(out.aclose(), 5)
    assert loud_seconds(out.path) > 0.5


async def test_a_degenerate_reply_starts_speaking_within_a_second_and_is_cut(piper: TTS, tmp_path: Path) -> None:
    # A loaded board: 8 tokens a second, and SmolLM2 looping on a number with no clause end.
    out = WavFileOutput(tmp_path / "speaker.wav", realtime=True)
    await asyncio.wait_for(out.start(), 5)
    host = Host()
    script = ["There", " are", " 7", ",", "987", *[",987"] * 60]
    llm = ScriptedLLM(script, every_s=0.125)
    reply = Reply(SpeechHandle(), host, llm, piper, out, ctx=host.llm_context(), user_text="How many?")
    await asyncio.wait_for(reply.run(), 30)
    first_text = llm.sent[0][0]
    loop_began = llm.sent[4][0]  # "987": from here on the text only repeats
    assert reply.times.first_out is not None and reply.times.first_out - first_text < 1.0
    assert llm.closed_at is not None and llm.closed_at - loop_began < 1.0  # cut within 1 s of LLM time
    assert len(llm.sent) < 15
    assert "987,987,987,987" not in reply.handle.text
    await asyncio.wait_for(out.aclose(), 5)
    assert 0.2 < loud_seconds(out.path) < 4.0


async def test_a_starting_reply_holds_the_voice_model_back_until_its_first_audio(
        piper: TTS, tmp_path: Path) -> None:
    from edgeagent.urgency import REPLY_START

    out = WavFileOutput(tmp_path / "speaker.wav", realtime=True)
    await asyncio.wait_for(out.start(), 5)
    host = Host()
    llm = ScriptedLLM(["It is ", "sunny today."], every_s=0.1)
    reply = Reply(SpeechHandle(), host, llm, piper, out, ctx=host.llm_context(), user_text="Weather?")
    assert not REPLY_START.held
    reply.begin()
    await asyncio.sleep(0.05)
    assert REPLY_START.held and reply.times.tts_first_audio is None  # the LLM has not written yet
    deadline = time.monotonic() + 20
    while reply.times.tts_first_audio is None:
        assert time.monotonic() < deadline, "the reply never produced audio"
        await asyncio.sleep(0.01)
    assert not REPLY_START.held  # its first audio is ready: the hold is over, the reply is not
    dropped = Reply(SpeechHandle(), host, ScriptedLLM(["Never ", "heard."], every_s=0.5), piper, out,
                    ctx=host.llm_context(), user_text="Weather?")
    dropped.begin()
    await asyncio.sleep(0.05)
    assert REPLY_START.held
    dropped.drop()  # dropped before any audio: the hold goes with it
    await asyncio.sleep(0.05)
    assert not REPLY_START.held
    reply.drop()
    await asyncio.wait_for(out.aclose(), 5)
