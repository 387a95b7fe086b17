"""``edgeagent run``: the voice agent on the local mic and speaker, or on WAV files.

    edgeagent run                                # the default mic and speaker (Ctrl-C stops)
    edgeagent run --input-device 2 --output-device usb
    edgeagent run --input q.wav --output r.wav   # headless: a WAV in, the reply WAV out
    edgeagent run --check                        # only check config, models and devices,
                                                 # and name the board (/proc/device-tree/model)

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
run ends once every reply has been written, and fails (exit status 1) if that has
not happened --timeout seconds (default 180) after the input was fed: raise it on
a machine much slower than a Pi (scripts/check-arm64 gives 1800 under emulation). --fast feeds it as fast as the agent
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
from typing import Any

from edgeagent import config as config_mod
from edgeagent import terminal
from edgeagent.audio.local_devices import check_devices, missing_devices
from edgeagent.errors import AudioError, EdgeAgentError
from edgeagent.local_job import SAMPLE_QUESTION, WAV_GRACE_S, fallback_line, open_wav, reply_path, run_local
from edgeagent.paths import config_file

log = logging.getLogger(__name__)


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
    p.add_argument("--timeout", type=_seconds, default=WAV_GRACE_S, metavar="SECONDS",
                   help="with --input or the sample question: fail (exit 1) if the agent has not finished "
                   f"this long after the input was fed (default {WAV_GRACE_S:.0f}; a slow board or "
                   "emulation may need more)")
    terminal.add_log_options(p)
    p.set_defaults(func=main)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def preflight(cfg: config_mod.Config) -> list[str]:
    """Problems that stop the agent from starting: missing models."""
    from edgeagent.model_files import manifest as model_manifest

    problems: list[str] = []
    root = Path(cfg.models.dir) if cfg.models.dir else None
    manifest = model_manifest.load_manifest()
    for model in manifest.select():
        try:
            model_manifest.model_path(model.name, root=root, manifest=manifest)
        except EdgeAgentError as exc:
            problems.append(str(exc))
    return problems


# -- the session ---------------------------------------------------------------------


async def serve(cfg: config_mod.Config, *, input_wav: Path | None = None, output_wav: Path | None = None,
                fast: bool = False, fallback: bool = False,
                reload: Callable[[], config_mod.Config] | None = None, timeout_s: float = WAV_GRACE_S) -> int:
    """Run the agent: on the devices until SIGINT/SIGTERM (0) or the mic ends (1); with
    ``input_wav`` until every reply is out (0). ``fallback``: when the default devices do
    not open, answer the sample question into a reply WAV instead; ``timeout_s``: how long
    after a WAV input was fed the agent may take to finish. ``reload`` reads the
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
            return await run_local(models, effective, stop, input_wav, output_wav, fast=fast,
                                   fallback=fallback, life=life, timeout_s=timeout_s)
        finally:
            await life.finished()
            await models.aclose()
    finally:
        life.remove_signals()
        life.close()


def _unwritable(path: Path) -> str | None:
    parent = path.parent
    if path.is_dir():
        return "it is a directory"
    if not parent.is_dir():
        return f"no such directory {parent}"
    return None if os.access(parent, os.W_OK) else f"the directory {parent} is not writable"


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
        from edgeagent.device.board import board_line

        print(f"edgeagent: {board_line()}", flush=True)  # /proc/device-tree/model on a Pi or a Jetson
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
                                            fallback=fallback, reload=lambda: load_config(args),
                                            timeout_s=args.timeout)))
