"""A wake word model slower than real time (an overloaded board; qemu in scripts/check-arm64, where
it fired 2 minutes late): its event comes after the VAD has reported all of the question. The
question is heard anyway, as if the wake word had come in time (``SpeechSpan.rewind``)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.wav import WavFileInput, WavFileOutput
from edgeagent.config import Config
from edgeagent.local_job import SAMPLE_QUESTION
from edgeagent.stage import StageStream
from edgeagent.vad.base import VADEvent, VADEventType
from edgeagent.voice import Models, UserInputTranscribedEvent
from edgeagent.voice.agent import Agent
from edgeagent.voice.compose import session_for
from edgeagent.voice.wake_check import SpeechSpan
from edgeagent.wake.base import WakeEvent, WakeWord


class _HeldStream:
    """The wrapped stream's events, all held until its input has ended."""

    def __init__(self, inner: StageStream[AudioFrame, WakeEvent]) -> None:
        self._inner = inner

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def push(self, frame: AudioFrame) -> None:
        self._inner.push(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def caught_up(self, limit: int) -> None:
        await self._inner.caught_up(limit)  # the model keeps up; only its events come late

    async def _held(self) -> AsyncIterator[WakeEvent]:
        for event in [event async for event in self._inner]:
            yield event

    def __aiter__(self) -> AsyncIterator[WakeEvent]:
        return self._held()

    async def aclose(self) -> None:
        await self._inner.aclose()


class LateWake(WakeWord):
    provider = "late"

    def __init__(self, inner: WakeWord) -> None:
        super().__init__()
        self._inner = inner

    @property
    def words(self) -> tuple[str, ...]:
        return self._inner.words

    def stream(self) -> Any:
        return _HeldStream(self._inner.stream())


async def test_a_wake_word_heard_after_the_whole_question_still_gets_it_answered(
    models: Models, tmp_path: Path
) -> None:
    late = dataclasses.replace(models, wake=LateWake(models.wake))
    session = session_for(late, Config(), echo_path=False)  # wake mode, the default
    finals: list[str] = []
    session.on("user_input_transcribed",
               lambda e: finals.append(e.transcript) if isinstance(e, UserInputTranscribedEvent) and e.is_final
               else None)
    out = WavFileOutput(tmp_path / "reply.wav", models.tts.sample_rate)
    inp = WavFileInput(SAMPLE_QUESTION, frame_ms=20, realtime=False, tail_s=1.0)
    try:
        await session.start(Agent(instructions="Answer in one short sentence."), input=inp, output=out)
        await session.wait_until_done()
    finally:
        await session.aclose()
        await inp.aclose()
        await out.aclose()
    assert finals and "capital" in finals[0].lower() and "france" in finals[0].lower(), finals
    assert session.wake_stats.fired == 1


def _vad(kind: VADEventType, at: float, speaking: bool) -> VADEvent:
    return VADEvent(kind, at, 0.9 if speaking else 0.1, speaking, speech_duration=0.3 if speaking else 0.0,
                    silence_duration=0.0 if speaking else 0.6)


def test_rewind_gives_back_the_later_events_and_the_state_before_them() -> None:
    span = SpeechSpan()
    events = [_vad(VADEventType.START_OF_SPEECH, 1.0, True), _vad(VADEventType.INFERENCE, 1.5, True),
              _vad(VADEventType.END_OF_SPEECH, 3.0, False), _vad(VADEventType.START_OF_SPEECH, 4.0, True)]
    for ev in events:
        span.on_vad(ev)
    assert span.rewind(9.0) == []  # the VAD is not ahead
    assert span.rewind(1.5) == events[2:]
    assert (span.began, span.ended, span.speaking) == (0.7, float("inf"), True)  # as at 1.5 s
    for ev in events[2:]:
        span.on_vad(ev)
    assert (span.began, span.ended, span.speaking) == (3.7, float("inf"), True)
