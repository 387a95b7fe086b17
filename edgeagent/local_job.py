"""``run_local``: the agent on this machine's microphone and speaker, or on WAV files.

    code = await run_local(models, cfg, stop, input_wav=None, output_wav=None, fast=False, fallback=True)

What ``edgeagent run`` does once the models are loaded and neither a room, a worker, the web
console nor the Home Assistant satellite is configured (see :mod:`edgeagent.runner` for the
command), and what the worker's local agent runs between jobs (:mod:`edgeagent.worker.local`).
The devices are opened first; with ``fallback`` a device that does not open makes it answer
the bundled sample question into a reply WAV instead. The session is a pipeline
``AgentSession``, or a ``RealtimeSession`` when ``[cloud].realtime_url`` is set; a
``LiveApplier`` puts a reloaded config file (SIGHUP) into effect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgeagent import config as config_mod
from edgeagent import terminal
from edgeagent.aio import wait_for
from edgeagent.audio.local_devices import make_input, make_output, open_device
from edgeagent.errors import EdgeAgentError
from edgeagent.paths import cache_dir

if TYPE_CHECKING:
    from edgeagent.audio.io import AudioInput, AudioOutput
    from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
    from edgeagent.audio.wav import WavFileInput
    from edgeagent.config.voice import ActivationConfig
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.realtime.session import RealtimeSession
    from edgeagent.voice.session import AgentSession
    from edgeagent.voice.stages import Models

log = logging.getLogger("edgeagent.runner")  # the `run` command's log, as before this module was split off

#: The question the agent answers when there is no sound device (package data).
SAMPLE_QUESTION = Path(__file__).resolve().parent / "data" / "sample_question.wav"
#: Silence fed after a WAV input, so that its last turn ends as it would live.
WAV_TAIL_S = 1.0
#: A WAV run fails if the agent has not finished this long after the input was fed (the
#: default of ``edgeagent run --timeout``).
WAV_GRACE_S = 180.0
#: Seconds the session may take to close.
CLOSE_TIMEOUT_S = 30.0


def reply_path() -> Path:
    """Where the no-device fallback writes its reply: ./edgeagent-reply.wav, else the cache."""
    if os.access(Path.cwd(), os.W_OK):
        return Path.cwd() / "edgeagent-reply.wav"
    cache_dir().mkdir(parents=True, exist_ok=True)
    return cache_dir() / "reply.wav"


def fallback_line(why: str, reply: Path) -> str:
    log.info("no usable sound device: %s", why)
    return (f"edgeagent: no audio device found; answering the bundled sample question instead "
            f"({SAMPLE_QUESTION}) -> {reply}")


def open_wav(path: Path, frame_ms: float, *, realtime: bool, tail_s: float = WAV_TAIL_S) -> WavFileInput:
    """``path`` as a microphone, followed by ``tail_s`` of silence (same pacing and timestamps).

    Checks the file now (raises :class:`AudioError` naming the problem) and reads it as it is
    played, so a long file costs no more memory than a short one.
    """
    from edgeagent.audio.wav import WavFileInput

    return WavFileInput(path, frame_ms=frame_ms, realtime=realtime, tail_s=tail_s)


async def run_local(models: Models, cfg: config_mod.Config, stop: asyncio.Event, input_wav: Path | None,
                    output_wav: Path | None, *, fast: bool, fallback: bool, life: Lifecycle | None = None,
                    timeout_s: float = WAV_GRACE_S) -> int:
    """Open both ends (devices first, falling back to the sample question) and converse.

    ``timeout_s``: with a WAV input, how long after it was fed the agent may take to finish."""
    from edgeagent.audio.playback import BufferedOutput
    from edgeagent.audio.wav import WavFileOutput

    dev_in: DeviceInput | None = None
    dev_out: DeviceOutput | None = None
    try:
        if input_wav is None:
            dev_in = make_input(cfg.audio)
            await open_device(dev_in)
        if output_wav is None:
            dev_out = make_output(cfg.audio)
            await open_device(dev_out)
    except EdgeAgentError as exc:
        for device in (dev_in, dev_out):
            if device is not None:
                await device.aclose()
        if not fallback:
            raise
        dev_in = dev_out = None
        input_wav, output_wav = SAMPLE_QUESTION, reply_path()
        print(fallback_line(str(exc), output_wav), flush=True)
    wav_in = None if input_wav is None else open_wav(input_wav, cfg.audio.frame_ms, realtime=not fast)
    inp: AudioInput | None = wav_in or dev_in
    out: AudioOutput | None = dev_out
    if output_wav is not None:
        out = WavFileOutput(output_wav, models.tts.sample_rate)
    assert inp is not None and out is not None
    if isinstance(out, BufferedOutput):
        out.volume = cfg.audio.output_volume
    try:
        code = await _converse(models, cfg, stop, inp, out, files=wav_in is not None or output_wav is not None,
                               life=life, grace_s=timeout_s)
    finally:
        await inp.aclose()
        await out.aclose()  # a WavFileOutput appears under its name only now
    if code == 0 and wav_in is not None:
        if output_wav is not None:
            print(f"edgeagent: reply written to {output_wav}", flush=True)
    elif code == 0 and not stop.is_set():
        print("edgeagent: the microphone stopped delivering audio", file=sys.stderr)
        return 1
    return code


async def _converse(models: Models, cfg: config_mod.Config, stop: asyncio.Event, inp: AudioInput,
                    out: AudioOutput, *, files: bool, life: Lifecycle | None = None,
                    grace_s: float = WAV_GRACE_S) -> int:
    """The session until the input is done (0), ``stop`` is set (0), or it fails (1)."""
    from edgeagent.audio.wav import WavFileInput
    from edgeagent.control.live import LiveApplier
    from edgeagent.home_assistant.tools import home_assistant_tools
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.compose import session_for

    wav_in = inp if isinstance(inp, WavFileInput) else None
    session: AgentSession | RealtimeSession
    if cfg.cloud.realtime_url:  # a realtime speech-to-speech model, the pipeline behind it
        from edgeagent.realtime.session import from_config

        session = from_config(models, cfg, files=files)
    else:
        session = session_for(models, cfg, echo_path=not files)
    printer = terminal.Transcript()
    printer.attach(session)
    applier = LiveApplier(session, models, out, cfg)  # a reloaded config file (SIGHUP) goes live
    try:
        tools = home_assistant_tools(cfg.home_assistant)  # [home_assistant] url and token: its devices
        await session.start(Agent(instructions=cfg.agent.instructions, tools=tools), input=inp, output=out)
        if wav_in is None:
            print(f"edgeagent: listening; {_prompt(cfg.activation)} (Ctrl-C stops)", flush=True)
        if life is not None:
            await life.started(session, applier=applier)
        limit = None if wav_in is None else (wav_in.duration if wav_in.realtime else 0.0) + grace_s
        done = asyncio.ensure_future(session.wait_until_done())
        stopper = asyncio.ensure_future(stop.wait())
        if wav_in is not None and not wav_in.realtime:  # --fast: the grace counts once the file is fed
            fed = asyncio.ensure_future(wav_in.fed.wait())
            await asyncio.wait({done, stopper, fed}, return_when=asyncio.FIRST_COMPLETED)
            fed.cancel()
        finished, _ = await asyncio.wait({done, stopper}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if done not in finished:
            done.cancel()
            await asyncio.gather(done, return_exceptions=True)
            if stopper in finished:
                log.info("stopping")
                return 0
            print(f"edgeagent: the agent did not finish within {limit:.0f} s (--timeout {grace_s:g} after the "
                  "input; a slow machine may need more)", file=sys.stderr)
            return 1
        done.result()
    finally:
        await wait_for(applier.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(session.aclose(), CLOSE_TIMEOUT_S)
    if printer.fatal is not None:
        return 1
    if wav_in is not None and printer.user_turns == 0:
        why = ""
        if cfg.activation.mode == "wake":
            why = (" (activation.mode is wake: does it start with the wake word? "
                   "--set activation.mode=always answers without one)")
        print(f"edgeagent: heard no question in {wav_in.path}{why}", file=sys.stderr)
    return 0


def _prompt(activation: ActivationConfig) -> str:
    words = " or ".join(f'"{w.replace("_", " ")}"' for w in activation.wake_words)
    return f"say {words} and a question" if activation.mode == "wake" else "speak"
