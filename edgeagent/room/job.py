"""The agent in a LiveKit room: ``edgeagent join``, or ``edgeagent run`` with ``[livekit] url`` set.

The device joins as a participant (:class:`~edgeagent.room.connection.RoomLink`,
which reconnects on its own), hears the remote participants
(:class:`~edgeagent.room.audio.RoomInput`), speaks into the room
(:class:`~edgeagent.room.audio.RoomOutput`) and follows the conventions of
LiveKit Agents (:class:`~edgeagent.room.conventions.RoomConventions`, attached
again after every reconnect).

In a room nobody says a wake word: ``activation.mode = wake`` becomes ``always``
(push-to-talk stays). ``livekit.mode = room+local`` (the local mic and speaker too)
is not implemented yet: the device says so and runs in the room only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent.paths import config_file

if TYPE_CHECKING:
    from livekit import rtc

    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 15.0


def room_config(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` as it runs in a room: no wake word."""
    if cfg.activation.mode == "wake":
        log.info("in a room: activation.mode wake -> always (nobody says the wake word there)")
        cfg = dataclasses.replace(cfg, activation=dataclasses.replace(cfg.activation, mode="always"))
    if cfg.livekit.mode != "room":
        print(f"edgeagent: livekit.mode = {cfg.livekit.mode} is not implemented yet; joining the room only",
              flush=True)
    return cfg


async def run_room(models: Models, cfg: config_mod.Config, stop: asyncio.Event) -> int:
    """Join the room and talk there until ``stop`` (0), or until the link gives up (1)."""
    from edgeagent.room.audio import RoomInput, RoomOutput
    from edgeagent.room.connection import RoomLink
    from edgeagent.room.conventions import RoomConventions
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.session import AgentSession

    cfg = room_config(cfg)
    link = RoomLink(cfg.livekit)
    out = RoomOutput(link)
    inp = RoomInput(link, listen=cfg.livekit.listen, identities=cfg.livekit.identities)
    session = AgentSession(
        vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
        activation=cfg.activation, turn=cfg.turn, interruption=cfg.interruption,
        echo_cancellation=False, ignore_own_playback=False,  # the room has no echo path to us
    )
    conventions: list[RoomConventions] = []

    def on_connected(room: rtc.Room) -> None:
        if conventions:
            conventions[0].attach(room)
            return
        conv = RoomConventions(room, session, agent_track_sid=lambda: link.agent_track_sid,
                               user_track_sid=lambda: inp.track_sid_of(inp.linked),
                               user_identity=lambda: inp.linked)
        conventions.append(conv)
        conv.attach()

    def on_disconnected(room: rtc.Room) -> None:
        if conventions:
            conventions[0].detach()

    link.add_connected_hook(on_connected)
    link.add_disconnected_hook(on_disconnected)
    try:
        await out.start()
        await link.start()
        await session.start(Agent(instructions=cfg.agent.instructions), input=inp, output=out)
        print(f"edgeagent: joining room {cfg.livekit.room or '(from the token)'} at {cfg.livekit.url} "
              f"as {link.identity} (Ctrl-C stops)", flush=True)
        failed = asyncio.ensure_future(link.failed.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({failed, stopper}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stopper.cancel()
        if link.failed.is_set() and not stop.is_set():
            print(f"edgeagent: {link.last_error}", flush=True)
            return 1
        return 0
    finally:
        for conv in conventions:
            await asyncio.wait_for(conv.aclose(), CLOSE_TIMEOUT_S)
        await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT_S)
        await inp.aclose()
        await out.aclose()
        await asyncio.wait_for(link.aclose(), CLOSE_TIMEOUT_S)


# -- `edgeagent join` ----------------------------------------------------------------------


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "join", help="join a LiveKit room and talk there", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="LiveKit server URL, ws:// or wss:// (livekit.url)")
    p.add_argument("--room", help="room name (livekit.room)")
    p.add_argument("--identity", help="participant identity (livekit.identity)")
    p.add_argument("--token", help="an access token, instead of api_key/api_secret (livekit.token)")
    p.add_argument("--config", type=Path, default=None, help="config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for key in ("url", "room", "identity", "token"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"livekit.{key}={value}")
    cfg = config_mod.load(args.config or config_file(), overrides=overrides)
    logging.getLogger().setLevel(cfg.log_level.upper())
    if not cfg.livekit.enabled:
        print("edgeagent: no room to join: give --url (and --room with livekit.api_key/api_secret, or --token)")
        return 1
    return asyncio.run(_serve(cfg))


async def _serve(cfg: config_mod.Config) -> int:
    from edgeagent.voice.stages import Models

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        models = await Models.load(cfg)
        try:
            return 0 if stop.is_set() else await run_room(models, cfg, stop)
        finally:
            await models.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
