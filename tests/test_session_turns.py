"""Turn taking with every real model on the virtual mic and speaker (PulseAudio null sinks):
a question with a pause in the middle gets one answer to the whole question, and the reply
begun preemptively for the fragment is dropped without a trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PulseDevices
from live import Live, Recorder, loud_blocks, play, words
from speech import piper, save, with_silence

from edgeagent.audio.frame import AudioFrame
from edgeagent.config.voice import ActivationConfig, TurnConfig
from edgeagent.voice import (
    AgentState,
    ConversationItemAddedEvent,
    MetricsCollectedEvent,
    Models,
    TurnMetrics,
    UserInputTranscribedEvent,
)

pytestmark = pytest.mark.pulse
RATE = 16_000
LEAD_S = 0.5
PAUSE_S = 1.5
"""Long enough for the fragment's transcript, its turn decision and its preemptive reply's first
audio to come while the user is still silent (each well under a second here)."""


async def test_a_question_with_a_pause_gets_one_answer_and_the_fragments_reply_is_never_heard(
    models: Models, pulse: PulseDevices, tmp_path: Path
) -> None:
    fragment, rest = piper("What is the capital of"), piper("France?")
    audio = with_silence(AudioFrame.concat([fragment, AudioFrame.silence(PAUSE_S, RATE), rest]), LEAD_S, 1.0)
    wav = save(audio, tmp_path / "paused_question.wav")
    rest_starts = LEAD_S + fragment.duration + PAUSE_S  # into the recording, give or take its start
    live = Live(models, activation=ActivationConfig(mode="always"), turn=TurnConfig(max_delay_s=3.0))
    async with live.running():
        rec = await Recorder.start(pulse.speaker_monitor)
        try:
            await play(pulse.mic_sink, wav)
            metrics = await live.wait_for(MetricsCollectedEvent, 60, lambda e: isinstance(e.metrics, TurnMetrics))
            await live.wait_state(AgentState.LISTENING, 10, live.events.index(metrics))
        finally:
            recorded = await rec.stop()
    finals = [e for e in live.of(UserInputTranscribedEvent) if e.is_final]
    assert len(finals) == 1 and {"capital", "france"} <= words(finals[0].transcript), finals
    items = [e.item for e in live.of(ConversationItemAddedEvent)]
    assert [m.role for m in items] == ["user", "assistant"], items  # nothing of the fragment's reply
    m = metrics.metrics
    assert isinstance(m, TurnMetrics)
    assert m.preempt_misses >= 1, m  # a reply to the fragment was begun, then dropped
    dropped = live.session._turn_taking.preemption.last_dropped if live.session._turn_taking else None
    assert dropped is not None and dropped.times.tts_first_audio is not None  # it had audio ready
    assert not dropped.audible and dropped.handle.spoken_text == ""
    assert m.eot_probability is not None and m.end_of_turn_delay is not None
    speaking = [i for i, s in enumerate(live.states()) if s is AgentState.SPEAKING]
    assert len(speaking) == 1, live.states()  # one reply: the room saw one (it follows the state)
    loud = loud_blocks(recorded)
    assert loud, "the agent said nothing"
    first_sound = loud[0] * 0.02
    assert first_sound > rest_starts, (first_sound, rest_starts)  # nothing was heard in the pause
