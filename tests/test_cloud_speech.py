"""Cloud STT and TTS, and their failover, against our OpenAI-compatible speech server on 127.0.0.1.

No speech server from a package registry runs offline here with models a registry
ships, so the "cloud" is :mod:`edgeagent.cloud.speech_server` (aiohttp) serving the
packaged Whisper tiny.en and Piper voice behind ``/v1/audio/transcriptions`` and
``/v1/audio/speech``; faults come from :class:`cloud_servers.FaultProxy` in front of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from cloud_servers import FaultProxy

from edgeagent import registry
from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.audio.wav import read_wav
from edgeagent.cloud.http import CloudError
from edgeagent.cloud.openai_stt import OpenAISTT
from edgeagent.cloud.openai_tts import PCM_RATE, OpenAITTS
from edgeagent.cloud.speech_server import make_app, serve
from edgeagent.fallback.chain import Chain, FallbackEvent, Member
from edgeagent.fallback.stt import FallbackSTT
from edgeagent.fallback.tts import FallbackTTS
from edgeagent.local_job import SAMPLE_QUESTION
from edgeagent.stt.base import STT, SpeechEventType
from edgeagent.tts.base import TTS, SynthesizedAudio

TIMEOUT = 60.0
DEADLINE = 2.0
SLACK = 3.0


@pytest.fixture(scope="module")
def whisper() -> Iterator[STT]:
    stt: STT = registry.create("stt", "whisper", partials=False)
    asyncio.run(asyncio.wait_for(stt.warmup(), TIMEOUT))  # type: ignore[attr-defined]
    yield stt
    asyncio.run(stt.aclose())


@pytest.fixture(scope="module")
def piper() -> Iterator[TTS]:
    tts: TTS = registry.create("tts", "piper")
    yield tts
    asyncio.run(tts.aclose())


class Speech:
    """The speech server and a fault proxy in front of it, for one test."""

    def __init__(self, stt: STT, tts: TTS) -> None:
        self.app = make_app(stt, tts, api_key="sk-test")

    async def __aenter__(self) -> Speech:
        self.runner, port = await serve(self.app)
        self.direct = f"http://127.0.0.1:{port}/v1"
        self.proxy = FaultProxy(f"http://127.0.0.1:{port}")
        await self.proxy.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy.aclose()
        await self.runner.cleanup()


def words(text: str) -> set[str]:
    return set("".join(ch if ch.isalnum() or ch == " " else " " for ch in text.lower()).split())


def speak(tts: TTS, text: str) -> AsyncIterator[SynthesizedAudio]:
    return _bounded(speak_stream(tts.stream(), text))


# -- the providers ------------------------------------------------------------------------


async def test_cloud_stt_transcribes_the_sample_question(whisper: STT, piper: TTS) -> None:
    async with Speech(whisper, piper) as srv:
        stt = OpenAISTT(base_url=srv.direct, model="whisper-1", api_key="sk-test")
        try:
            event = await asyncio.wait_for(stt.recognize(read_wav(SAMPLE_QUESTION, 16_000)), TIMEOUT)
            assert event.type is SpeechEventType.FINAL
            assert {"capital", "france"} <= words(event.text), event.text
            # streamed: frames in, flush, FINAL out
            stream = stt.stream()
            for frame in read_wav(SAMPLE_QUESTION, 16_000).chunks(320):
                stream.push(frame)
            stream.flush()
            final = await asyncio.wait_for(anext(stream), TIMEOUT)
            await stream.aclose()
            assert {"capital", "france"} <= words(final.text), final.text
        finally:
            await stt.aclose()


async def test_cloud_stt_with_a_wrong_key_fails_clearly(whisper: STT, piper: TTS) -> None:
    async with Speech(whisper, piper) as srv:
        stt = OpenAISTT(base_url=srv.direct, api_key="sk-wrong")
        try:
            with pytest.raises(CloudError) as info:
                await asyncio.wait_for(stt.recognize(read_wav(SAMPLE_QUESTION, 16_000)), TIMEOUT)
            assert info.value.reason == "auth" and not info.value.retryable
        finally:
            await stt.aclose()


async def test_cloud_tts_streams_24k_speech(whisper: STT, piper: TTS) -> None:
    async with Speech(whisper, piper) as srv:
        tts = OpenAITTS(base_url=srv.direct, api_key="sk-test")
        try:
            chunks = [a async for a in speak(tts, "The capital of France is Paris. It is a large city.")]
            audio = np.concatenate([c.frame.samples for c in chunks])
            assert all(c.frame.sample_rate == PCM_RATE for c in chunks)
            assert len(chunks) > 2 and chunks[-1].is_final
            assert 1.0 < len(audio) / PCM_RATE < 10.0
            assert np.abs(audio.astype(np.float32)).max() > 1000, "speech, not silence"
            # and it is the words we sent: Whisper hears them
            heard = await whisper.recognize(resample(AudioFrame.concat([c.frame for c in chunks]), 16_000))
            assert {"capital", "paris", "large", "city"} <= words(heard.text), heard.text
        finally:
            await tts.aclose()


# -- failover -----------------------------------------------------------------------------


def tts_chain(cloud: OpenAITTS, local: TTS) -> tuple[FallbackTTS, list[FallbackEvent]]:
    chain = Chain("tts", [Member(local, 30.0, cloud=False), Member(cloud, DEADLINE, cloud=True)],
                  policy="cloud-first", probe_interval_s=0.3)
    events: list[FallbackEvent] = []
    chain.on_event(events.append)
    return FallbackTTS(chain), events


@pytest.mark.parametrize(("mode", "reason"), [("stall", "stalled"), ("500", "server"), ("429", "rate-limited"),
                                              ("down", "unreachable")])
async def test_tts_failover_to_piper_and_back(whisper: STT, piper: TTS, mode: str, reason: str) -> None:
    async with Speech(whisper, piper) as srv:
        cloud = OpenAITTS(base_url=srv.proxy.base_url, api_key="sk-test")
        tts, events = tts_chain(cloud, piper)
        try:
            stream = tts.stream()
            chunks = [a async for a in _bounded(speak_stream(stream, "Hello there."))]
            assert chunks[0].frame.sample_rate == PCM_RATE and stream.served_by == cloud.label

            if mode == "down":
                await srv.proxy.down()
            else:
                srv.proxy.mode = mode
            t0 = time.monotonic()
            stream = tts.stream()
            chunks, first_at = [], None
            async for a in _bounded(speak_stream(stream, "The capital of France is Paris.")):
                chunks.append(a)
                first_at = first_at or (time.monotonic() if a.frame.num_samples else None)
            first = next(c for c in chunks if c.frame.num_samples)
            assert first.frame.sample_rate == piper.sample_rate, "the local voice spoke"
            assert stream.served_by == "piper"
            assert events[-1].action == "switched" and events[-1].reason == reason, events[-1]
            assert chunks[-1].is_final and sum(c.frame.num_samples for c in chunks) > piper.sample_rate
            assert first_at is not None and first_at - t0 < DEADLINE + SLACK  # deadline + local first audio

            recovered = asyncio.Event()
            tts.chain.on_event(lambda e: recovered.set() if e.action == "recovered" else None)
            if mode == "down":
                await srv.proxy.up()
            srv.proxy.mode = "pass"
            await asyncio.wait_for(recovered.wait(), 20)
            stream = tts.stream()
            chunks = [a async for a in _bounded(speak_stream(stream, "Hello again."))]
            assert stream.served_by == cloud.label and chunks[0].frame.sample_rate == PCM_RATE
        finally:
            for m in tts.chain.members:
                if m.probe_task is not None:
                    m.probe_task.cancel()
            await cloud.aclose()


async def test_stt_failover_to_local_whisper(whisper: STT, piper: TTS) -> None:
    async with Speech(whisper, piper) as srv:
        cloud = OpenAISTT(base_url=srv.proxy.base_url, api_key="sk-test")
        chain = Chain("stt", [Member(whisper, 30.0, cloud=False), Member(cloud, DEADLINE, cloud=True)],
                      policy="cloud-first", probe_interval_s=60)
        events: list[FallbackEvent] = []
        chain.on_event(events.append)
        stt = FallbackSTT(chain)
        try:
            srv.proxy.mode = "stall"
            stream = stt.stream()
            for frame in read_wav(SAMPLE_QUESTION, 16_000).chunks(320):
                stream.push(frame)
            stream.flush()
            final = await asyncio.wait_for(anext(stream), TIMEOUT)
            await stream.aclose()
            assert final.type is SpeechEventType.FINAL
            assert {"capital", "france"} <= words(final.text), final.text
            assert stream.served_by == "whisper" and stt.last_served == "whisper"
            assert events[-1].reason == "stalled" and events[-1].from_provider == cloud.label
        finally:
            for m in chain.members:
                if m.probe_task is not None:
                    m.probe_task.cancel()
            await cloud.aclose()


async def speak_stream(stream: object, text: str) -> AsyncIterator[SynthesizedAudio]:
    s = stream
    try:
        s.push(text)  # type: ignore[attr-defined]
        s.flush()  # type: ignore[attr-defined]
        async for audio in s:  # type: ignore[attr-defined]
            yield audio
            if audio.is_final:
                break
    finally:
        await s.aclose()  # type: ignore[attr-defined]


async def _bounded(it: AsyncIterator[SynthesizedAudio]) -> AsyncIterator[SynthesizedAudio]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            item = await asyncio.wait_for(anext(it), max(0.1, deadline - time.monotonic()))
        except StopAsyncIteration:
            return
        yield item
