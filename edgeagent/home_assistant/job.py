"""``edgeagent run`` with ``home_assistant.satellite = true``: the board as Home Assistant's satellite.

Opens the configured microphone and speaker, runs a :class:`~edgeagent.home_assistant.satellite.Satellite`
on them with the loaded VAD and wake word, and serves it to Home Assistant
(:class:`~edgeagent.home_assistant.server.SatelliteServer`, advertised over zeroconf) until
``stop`` (0) or the microphone ends (1). Under systemd the states go to ``STATUS=`` and the LED
as a local session's do (:mod:`edgeagent.device.lifecycle`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent.aio import wait_for

if TYPE_CHECKING:
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)


async def run_satellite(models: Models, cfg: config_mod.Config, stop: asyncio.Event, *,
                        life: Lifecycle | None = None) -> int:
    from edgeagent.audio.local_devices import make_input, make_output, open_device
    from edgeagent.audio.playback import BufferedOutput
    from edgeagent.home_assistant.satellite import Satellite
    from edgeagent.home_assistant.server import SatelliteServer, satellite_name
    from edgeagent.local_job import CLOSE_TIMEOUT_S
    from edgeagent.voice.stages import wake_for

    ha = cfg.home_assistant
    inp, out = make_input(cfg.audio), make_output(cfg.audio)
    try:
        await open_device(inp)
        await open_device(out)
        if isinstance(out, BufferedOutput):
            out.volume = cfg.audio.output_volume
        sat = Satellite(vad=models.vad, wake=wake_for(models, cfg.activation), activation=cfg.activation,
                        interruption=cfg.interruption, echo_cancellation=cfg.audio.echo_cancellation,
                        noise_suppression=cfg.audio.noise_suppression, listen_s=ha.listen_s, answer_s=ha.answer_s)
        server = SatelliteServer(sat, ha, wake_words=cfg.activation.wake_words)
        await sat.start(inp, out)
        try:
            await server.start()
            print(f"edgeagent: Home Assistant satellite {satellite_name(ha)} on {ha.host}:{server.port}; "
                  "add it in Home Assistant (Wyoming Protocol) (Ctrl-C stops)", flush=True)
            if life is not None:
                session: Any = sat  # the LED, STATUS= and buttons follow its states as a session's
                await life.started(session)
            done = asyncio.ensure_future(sat.wait_until_done())
            stopper = asyncio.ensure_future(stop.wait())
            finished, _ = await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (done, stopper):
                task.cancel()
            if stopper in finished:
                log.info("stopping")
                return 0
            print("edgeagent: the microphone stopped delivering audio", flush=True)
            return 1
        finally:
            await wait_for(server.stop(), CLOSE_TIMEOUT_S)
            await wait_for(sat.aclose(), CLOSE_TIMEOUT_S)
    finally:
        await inp.aclose()
        await out.aclose()
