"""``edgeagent run``: load the config, check models and sound devices, run the agent.

The agent is the minimal :class:`~edgeagent.voice.loop.VoiceLoop` on the default
local models, the configured microphone and speaker. SIGINT and SIGTERM stop it
cleanly (streams, devices and models closed; exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent.errors import EdgeAgentError
from edgeagent.paths import config_file

if TYPE_CHECKING:
    from edgeagent.audio.device import DeviceInput, DeviceOutput
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

#: Seconds a sound device may take to open (PulseAudio can be slow to answer).
DEVICE_OPEN_TIMEOUT_S = 15.0


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the voice agent on the local mic and speaker", description=__doc__
    )
    p.add_argument("--config", type=Path, default=None, help="config file (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--check", action="store_true", help="only check config, models and devices, then exit")
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
    from edgeagent.audio.device import DeviceInput, DeviceOutput
    from edgeagent.audio.frame import RECOGNITION_RATE

    inp = DeviceInput(audio.input_device, rate=RECOGNITION_RATE, frame_ms=audio.frame_ms)
    out = DeviceOutput(audio.output_device, buffer_ms=audio.output_buffer_ms)
    return inp, out


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
        await asyncio.wait_for(device.start(), DEVICE_OPEN_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise EdgeAgentError(
            f"the device did not open within {DEVICE_OPEN_TIMEOUT_S:.0f} s; check `edgeagent devices`"
        ) from None


async def serve(cfg: config_mod.Config) -> int:
    """Run the agent until SIGINT/SIGTERM (0) or until the microphone stops (1)."""
    from edgeagent.voice.stages import Models

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        log.info("loading models")
        models = await Models.load()  # a signal meanwhile stops right after
        try:
            if stop.is_set():
                return 0
            return await _talk(models, cfg.audio, stop)
        finally:
            await models.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _talk(models: Models, audio: config_mod.AudioConfig, stop: asyncio.Event) -> int:
    """The agent on the configured devices until ``stop`` is set (0) or the mic ends (1)."""
    from edgeagent.voice.loop import VoiceLoop

    inp, out = make_devices(audio)
    try:
        await _open(inp)
        await _open(out)
        agent = asyncio.ensure_future(VoiceLoop(models, inp, out).run())
        stopper = asyncio.ensure_future(stop.wait())
        print('edgeagent: listening; say "hey jarvis" and a question (Ctrl-C stops)', flush=True)
        await asyncio.wait({agent, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not agent.done():
            log.info("stopping")
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            return 0
        agent.result()  # raises the error that ended it
        log.error("the microphone stopped delivering audio")
        return 1
    finally:
        await out.aclose()
        await inp.aclose()


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config or config_file(), overrides=args.set)
    logging.getLogger().setLevel(cfg.log_level.upper())
    problems = preflight(cfg)
    if args.check:
        problems += asyncio.run(check_devices(cfg.audio))
    for p in problems:
        print(f"edgeagent: {p}")
    if problems:
        return 1
    if args.check:
        print("edgeagent: config, models and sound devices are ready")
        return 0
    return asyncio.run(serve(cfg))
