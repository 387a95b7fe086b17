"""The judged set through the product's own path (``scripts/bench-accuracy --session``).

The rest of the accuracy bench models the session offline: the wake model's scores and the
words check on decoded stretches. Here each call and non-call is a WAV file read at real-time
pace into a session of the default models and config, made as ``edgeagent run --input`` makes
it (:func:`edgeagent.voice.compose.session_for`, no echo path). A call counts when its wake-up
was accepted and its question heard (a committed user turn); a non-call counts as answered
when any user turn was committed. This is what a user meets, so the true accepts target is
judged on it when it runs; ordinary speech (false accepts per hour) stays offline: 30 minutes
of it would take 30 minutes here.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeagent.aio import wait_for
from edgeagent.audio.wav import WavFileInput, WavFileOutput, write_wav
from edgeagent.bench.accuracy_set import HELD_OUT, VOICES, Item, calls, non_calls
from edgeagent.config import Config
from edgeagent.config.voice import AgentConfig
from edgeagent.voice.agent import Agent
from edgeagent.voice.compose import session_for
from edgeagent.voice.events import ConversationItemAddedEvent
from edgeagent.voice.stages import Models

TAIL_S = 3.0
"""Time after an item's audio for its turn to end and be committed (max_delay_s is 2 s)."""


@dataclass
class SessionFigures:
    true_accepts: float = 0.0
    """Calls whose wake-up was accepted and whose question was heard, of all voices."""
    held_out_true_accepts: float = 0.0
    near_answered: int = 0
    other_answered: int = 0
    missed: list[str] = field(default_factory=list)
    """The calls not accepted (key: what was heard)."""
    answered: list[str] = field(default_factory=list)
    """The non-calls answered (key: the turn heard)."""


async def _heard(models: Models, cfg: Config, item: Item, tmp: Path) -> tuple[int, list[str]]:
    """(wake-ups accepted, the committed user turns) of one item."""
    wav = tmp / f"{item.key}.wav"
    write_wav(wav, item.audio)
    inp = WavFileInput(wav, realtime=True)
    out = WavFileOutput(tmp / "reply.wav", models.tts.sample_rate)
    session = session_for(models, cfg, echo_path=False)
    turns: list[str] = []

    def on_item(ev: ConversationItemAddedEvent) -> None:
        if ev.item.role == "user":
            turns.append(ev.item.content)

    session.on("conversation_item_added", on_item)
    await wait_for(out.start(), 10)
    try:
        await wait_for(session.start(Agent(instructions=AgentConfig().instructions), input=inp, output=out), 30)
        await asyncio.sleep(item.audio.duration + TAIL_S)
        return session.wake_stats.accepted, turns
    finally:
        await wait_for(session.aclose(), 15)
        await wait_for(inp.aclose(), 5)
        await wait_for(out.aclose(), 5)


async def measure(models: Models) -> SessionFigures:
    """Every item of the judged set through a session of ``models`` and the default config."""
    cfg, figures = Config(), SessionFigures()
    accepted = {False: [0, 0], True: [0, 0]}  # held out: [accepted, calls]
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-session-") as d:
        for item in [i for v in VOICES for i in (*calls(v), *non_calls(v))]:
            woke, turns = await _heard(models, cfg, item, Path(d))
            if item.kind == "call":
                ok = woke > 0 and bool(turns)
                accepted[item.voice == HELD_OUT][0] += ok
                accepted[item.voice == HELD_OUT][1] += 1
                if not ok:
                    figures.missed.append(f"{item.key}: {turns or 'no turn'} (wake-ups accepted: {woke})")
            elif turns:
                figures.near_answered += item.kind == "near"
                figures.other_answered += item.kind != "near"
                figures.answered.append(f"{item.key}: {turns}")
            print(f"  session {item.key}: wake-ups accepted {woke}, turns {turns}", flush=True)
    done = accepted[False][0] + accepted[True][0]
    figures.true_accepts = done / max(1, accepted[False][1] + accepted[True][1])
    figures.held_out_true_accepts = accepted[True][0] / max(1, accepted[True][1])
    return figures
