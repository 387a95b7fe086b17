"""``edgeagent run``: the voice agent on the local mic and speaker, or on WAV files.

    edgeagent run                                # the default mic and speaker (Ctrl-C stops)
    edgeagent run --input-device 2 --output-device usb
    edgeagent run --input q.wav --output r.wav   # headless: a WAV in, the reply WAV out
    edgeagent run --check                        # only check config, models and devices

The agent is an AgentSession (edgeagent.voice.session) on the stages of the config
([vad] [stt] [llm] [tts], [activation], [turn], [interruption]). It prints
"user: ..." and "agent: ..." for every turn and one "metrics: ..." line per turn
(times in ms) on stdout; the log and errors go to stderr, without those lines again.
SIGINT and SIGTERM stop it cleanly (exit status 0); SIGHUP reads the config file again.
Under systemd it tells the service manager when it is ready and what it is doing,
pings the watchdog and logs to the journal; ``[gpio]`` drives a status LED and
buttons (:mod:`edgeagent.device`).

A WAV input is played at real-time pace, as a microphone would deliver it, and is
followed by a second of silence so that its last turn ends as it would live; the
run ends once every reply has been written. --fast feeds it as fast as the agent
takes it: the same transcript and reply, but the latency metrics then measure
nothing real. With a WAV at either end there is no echo path: echo cancellation
is off and the agent hears all of the input, also while it speaks.

With no sound device at all, a plain `edgeagent run` says so in one line and
answers the bundled sample question (edgeagent/data/sample_question.wav: "Hey
Jarvis. What is the capital of France?") into ./edgeagent-reply.wav instead.

The config in effect is the config file with the remote changes a room's controllers made
(kept in the state directory, see :mod:`edgeagent.control.store`), so they hold for local
use too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent import terminal
from edgeagent.aio import wait_for
from edgeagent.errors import AudioError, EdgeAgentError
from edgeagent.paths import cache_dir, config_file

if TYPE_CHECKING:
    from edgeagent.audio.device import DeviceInput, DeviceOutput
    from edgeagent.audio.io import AudioInput, AudioOutput
    from edgeagent.audio.wav import WavFileInput
    from edgeagent.config_voice import ActivationConfig
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.realtime.session import RealtimeSession
    from edgeagent.voice.session import AgentSession
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

#: Seconds a sound device may take to open (PulseAudio can be slow to answer).
DEVICE_OPEN_TIMEOUT_S = 15.0
#: The question the agent answers when there is no sound device (package data).
SAMPLE_QUESTION = Path(__file__).resolve().parent / "data" / "sample_question.wav"
#: Silence fed after a WAV input, so that its last turn ends as it would live.
WAV_TAIL_S = 1.0
#: A WAV run fails if the agent has not finished this long after the input was fed.
WAV_GRACE_S = 180.0
#: Seconds the session may take to close.
CLOSE_TIMEOUT_S = 30.0


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the voice agent (local mic and speaker, or WAV files)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=None, help="config file (default: $EDGEAGENT_CONFIG, else "
                   "~/.config/edgeagent/config.toml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--check", action="store_true", help="only check config, models and devices, then exit")
    p.add_argument("--input", type=Path, metavar="WAV", help="listen to this audio file instead of the microphone")
    p.add_argument("--output", type=Path, metavar="WAV", help="write the agent's speech to this WAV file")
    p.add_argument("--input-device", metavar="DEV", help="microphone: index or part of a name (audio.input_device)")
    p.add_argument("--output-device", metavar="DEV", help="speaker: index or part of a name (audio.output_device)")
    p.add_argument("--fast", action="store_true", help="feed --input as fast as the agent takes it")
    terminal.add_log_options(p)
    p.set_defaults(func=main)


def preflight(cfg: config_mod.Config) -> list[str]:
    """Problems that stop the agent from starting: missing models."""
    from edgeagent import models

    problems: list[str] = []
    root = Path(cfg.models.dir) if cfg.models.dir else None
    manifest = models.load_manifest()
    for model in manifest.select():
        try:
            models.model_path(model.name, root=root, manifest=manifest)
        except EdgeAgentError as exc:
            problems.append(str(exc))
    return problems


def make_devices(audio: config_mod.AudioConfig) -> tuple[DeviceInput, DeviceOutput]:
    """The configured microphone (16 kHz frames) and speaker, not yet opened."""
    return make_input(audio), make_output(audio)


def make_input(audio: config_mod.AudioConfig) -> DeviceInput:
    from edgeagent.audio.device import DeviceInput
    from edgeagent.audio.frame import RECOGNITION_RATE

    return DeviceInput(audio.input_device, rate=RECOGNITION_RATE, frame_ms=audio.frame_ms)


def make_output(audio: config_mod.AudioConfig) -> DeviceOutput:
    from edgeagent.audio.device import DeviceOutput

    return DeviceOutput(audio.output_device, buffer_ms=audio.output_buffer_ms)


async def check_devices(audio: config_mod.AudioConfig) -> list[str]:
    """Open and close the microphone and the speaker; one line per problem."""
    problems: list[str] = []
    inp, out = make_devices(audio)
    for what, device in (("microphone", inp), ("speaker", out)):
        try:
            await _open(device)
        except EdgeAgentError as exc:
            problems.append(f"{what}: {exc}")
        finally:
            await device.aclose()
    return problems


async def _open(device: DeviceInput | DeviceOutput) -> None:
    try:
        await wait_for(device.start(), DEVICE_OPEN_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise EdgeAgentError(
            f"the device did not open within {DEVICE_OPEN_TIMEOUT_S:.0f} s; check `edgeagent devices`"
        ) from None


def missing_devices() -> str | None:
    """Why no sound device can be used at all; None when PortAudio lists an input and an output."""
    from edgeagent.audio.devices import list_devices

    try:
        devices = list_devices()
    except AudioError as exc:
        return str(exc)
    lacking = [kind for kind in ("input", "output") if not any(d.channels(kind) for d in devices)]
    return f"PortAudio lists no {' and no '.join(lacking)} device" if lacking else None


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


# -- the session ---------------------------------------------------------------------


async def serve(cfg: config_mod.Config, *, input_wav: Path | None = None, output_wav: Path | None = None,
                fast: bool = False, fallback: bool = False,
                reload: Callable[[], config_mod.Config] | None = None) -> int:
    """Run the agent: on the devices until SIGINT/SIGTERM (0) or the mic ends (1); with
    ``input_wav`` until every reply is out (0). ``fallback``: when the default devices do
    not open, answer the sample question into a reply WAV instead. ``reload`` reads the
    config file again on SIGHUP. Under systemd it notifies and pings the watchdog, and
    ``[gpio]`` drives the status LED and buttons (:mod:`edgeagent.device.lifecycle`)."""
    from edgeagent.control.live import open_store
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.voice.stages import Models

    stop = asyncio.Event()
    life = Lifecycle(cfg, reload=reload)
    life.install_signals(stop)
    try:
        store = open_store(cfg)
        effective = store.config if store is not None else cfg  # with the remote changes
        life.config, life.store = effective, store
        log.info("loading models")
        life.loading()
        models = await Models.load(effective)  # a signal meanwhile stops right after
        try:
            if stop.is_set():
                return 0
            if effective.home_assistant.satellite and input_wav is None and output_wav is None:
                from edgeagent.home_assistant.job import run_satellite

                return await run_satellite(models, effective, stop, life=life)
            if effective.livekit.worker and input_wav is None and output_wav is None:
                from edgeagent.worker.run import run_worker

                return await run_worker(models, cfg, stop, store=store, life=life)
            if effective.livekit.enabled and input_wav is None and output_wav is None:
                from edgeagent.room.job import run_room

                if effective.web.enabled:
                    log.warning("[web] enabled with [livekit] url set: joining the room; no web console")

                return await run_room(models, cfg, stop, store=store, life=life)
            if effective.web.enabled and input_wav is None and output_wav is None:
                from edgeagent.web.job import run_web

                return await run_web(models, cfg, stop, store=store, life=life)
            return await _talk(models, effective, stop, input_wav, output_wav, fast=fast, fallback=fallback,
                               life=life)
        finally:
            await life.finished()
            await models.aclose()
    finally:
        life.remove_signals()
        life.close()


async def _talk(models: Models, cfg: config_mod.Config, stop: asyncio.Event, input_wav: Path | None,
                output_wav: Path | None, *, fast: bool, fallback: bool, life: Lifecycle | None = None) -> int:
    """Open both ends (devices first, falling back to the sample question) and converse."""
    from edgeagent.audio.playback import BufferedOutput
    from edgeagent.audio.wav import WavFileOutput

    dev_in: DeviceInput | None = None
    dev_out: DeviceOutput | None = None
    try:
        if input_wav is None:
            dev_in = make_input(cfg.audio)
            await _open(dev_in)
        if output_wav is None:
            dev_out = make_output(cfg.audio)
            await _open(dev_out)
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
                               life=life)
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
                    out: AudioOutput, *, files: bool, life: Lifecycle | None = None) -> int:
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
        limit = None if wav_in is None else (wav_in.duration if wav_in.realtime else 0.0) + WAV_GRACE_S
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
            print(f"edgeagent: the agent did not finish within {limit:.0f} s", file=sys.stderr)
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


def _unwritable(path: Path) -> str | None:
    parent = path.parent
    if path.is_dir():
        return "it is a directory"
    if not parent.is_dir():
        return f"no such directory {parent}"
    return None if os.access(parent, os.W_OK) else f"the directory {parent} is not writable"


def _prompt(activation: ActivationConfig) -> str:
    words = " or ".join(f'"{w.replace("_", " ")}"' for w in activation.wake_words)
    return f"say {words} and a question" if activation.mode == "wake" else "speak"


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The config file with the env and command-line overrides (again on SIGHUP)."""
    cfg = config_mod.load(args.config or config_file(), overrides=args.set)
    devices = {k: v for k, v in (("input_device", args.input_device), ("output_device", args.output_device))
               if v is not None}
    if devices:
        cfg = dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, **devices))
    return cfg


def main(args: argparse.Namespace) -> int:
    from edgeagent.device.journal import setup_logging

    cfg = load_config(args)
    if setup_logging(cfg) is None:  # the journal under systemd, else stderr; log_level
        terminal.hide_transcript_in_log()  # stderr: the turns are on stdout
    problems = preflight(cfg)
    if args.check:
        problems += asyncio.run(check_devices(cfg.audio))
    for p in problems:
        print(f"edgeagent: {p}", file=sys.stderr)
    if problems:
        return 1
    if args.check:
        print("edgeagent: config, models and sound devices are ready")
        return 0
    input_wav: Path | None = args.input
    output_wav: Path | None = args.output
    if input_wav is not None:
        try:  # read it now: a bad file is one line, not a traceback after the models load
            open_wav(input_wav, cfg.audio.frame_ms, realtime=False, tail_s=0.0)
        except AudioError as exc:
            print(f"edgeagent: {exc}", file=sys.stderr)
            return 1
    if output_wav is not None and (why := _unwritable(output_wav)):
        print(f"edgeagent: cannot write {output_wav}: {why}", file=sys.stderr)
        return 1
    # Plain `run` falls back to the sample question where there is no sound device at all;
    # with a device named (config or flags) or a file given, a device problem is an error.
    fallback = (input_wav is None and output_wav is None and not cfg.livekit.enabled and not cfg.web.enabled
                and not (cfg.audio.input_device or cfg.audio.output_device))
    if fallback and (why := missing_devices()) is not None:
        input_wav, output_wav = SAMPLE_QUESTION, reply_path()
        print(fallback_line(why, output_wav), flush=True)
        fallback = False
    from edgeagent.room.sdk import then_close_sdk

    return asyncio.run(then_close_sdk(serve(cfg, input_wav=input_wav, output_wav=output_wav, fast=args.fast,
                                            fallback=fallback, reload=lambda: load_config(args))))
