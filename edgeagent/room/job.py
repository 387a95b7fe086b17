"""The agent in a LiveKit room: ``edgeagent join``, or ``edgeagent run`` with ``[livekit] url`` set.

The device joins as a participant (:class:`~edgeagent.room.connection.RoomLink`,
which reconnects on its own), hears the remote participants
(:class:`~edgeagent.room.audio.RoomInput`), speaks into the room
(:class:`~edgeagent.room.audio.RoomOutput`) and follows the conventions of
LiveKit Agents (:class:`~edgeagent.room.conventions.RoomConventions`, attached
again after every reconnect).

In a room nobody says a wake word: ``activation.mode = wake`` becomes ``always``
(push-to-talk stays). ``livekit.mode = room+local`` adds the local mic and speaker of
``[audio]`` (:mod:`edgeagent.room.local`): the session hears both, speaks on both,
remote voices play locally and, with ``publish_local_mic``, the room hears the board's
surroundings. When the local devices do not open, the device says so in one line and
runs in the room only.

Remote configuration: the changes kept in the state directory
(:class:`~edgeagent.control.store.ConfigStore`) apply over the config file, so they survive
a restart; the room's controllers read and change them with the ``edgeagent.config.*`` RPC
methods (:class:`~edgeagent.room.config_rpc.RoomControl`, registered at every join), and
:class:`~edgeagent.control.live.LiveApplier` puts each change into effect on the running
agent, or at its next idle moment when it needs a model load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent import terminal
from edgeagent.aio import exit_status, until_first, wait_for
from edgeagent.paths import config_file

if TYPE_CHECKING:
    from livekit import rtc

    from edgeagent.audio.io import AudioInput
    from edgeagent.control.live import LiveApplier
    from edgeagent.control.store import ConfigStore
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.room.audio import RoomInput, RoomOutput
    from edgeagent.room.config_rpc import RoomControl
    from edgeagent.room.connection import RoomLink
    from edgeagent.room.conventions import RoomConventions
    from edgeagent.room.local import LocalRoomInput, LocalRoomOutput
    from edgeagent.voice.session import AgentSession
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 15.0


async def _open_local(link: RoomLink, room_in: RoomInput, cfg: config_mod.Config
                      ) -> tuple[LocalRoomInput, LocalRoomOutput] | None:
    """room+local: the local mic and speaker opened; None (one line printed) when they do not open."""
    from edgeagent.audio.local_devices import DEVICE_OPEN_TIMEOUT_S
    from edgeagent.errors import EdgeAgentError
    from edgeagent.room.local import room_and_local

    inp, out = room_and_local(link, room_in, cfg.audio, cfg.livekit)
    try:
        await wait_for(out.start(), DEVICE_OPEN_TIMEOUT_S)
        await wait_for(inp.start(), DEVICE_OPEN_TIMEOUT_S)
    except (EdgeAgentError, asyncio.TimeoutError) as exc:
        print(f"edgeagent: the local mic or speaker did not open ({exc or 'timeout'}); joining the room only",
              file=sys.stderr)
        await inp.aclose_local()  # room_in carries on alone
        await out.aclose()
        return None
    return inp, out


async def _ends(link: RoomLink, room_in: RoomInput, cfg: config_mod.Config
               ) -> tuple[AudioInput, RoomOutput | LocalRoomOutput]:
    """The session's ears and voice: the room's, with the local mic and speaker added in
    room+local mode when they open."""
    from edgeagent.room.audio import RoomOutput

    if cfg.livekit.mode == "room+local":
        local = await _open_local(link, room_in, cfg)
        if local is not None:
            return local
    return room_in, RoomOutput(link)


def _follow_joins(link: RoomLink, session: AgentSession, room_in: RoomInput, applier: LiveApplier,
                  control: RoomControl | None, conventions: list[RoomConventions]) -> None:
    """Attach the config RPCs (``control``) and LiveKit Agents' conventions to every room
    ``link`` joins, and detach them when it goes. The conventions are made at the first join
    (with the remote changes made before it) and appended to ``conventions``; later joins
    attach the same object again."""
    from edgeagent.room.conventions import RoomConventions

    def on_connected(room: rtc.Room) -> None:
        if control is not None:
            control.attach(room)
        if conventions:
            conventions[0].attach(room)
            return
        live = applier.config.livekit  # remote changes made before the first join included
        conv = RoomConventions(room, session, agent_track_sid=lambda: link.agent_track_sid,
                               user_track_sid=lambda: room_in.track_sid_of(room_in.linked),
                               user_identity=lambda: room_in.linked,
                               listen=live.listen, identities=live.identities)
        conventions.append(conv)
        conv.attach()

    def on_disconnected(room: rtc.Room) -> None:
        if control is not None:
            control.detach(room)
        if conventions:
            conventions[0].detach()

    link.add_connected_hook(on_connected)
    link.add_disconnected_hook(on_disconnected)


async def run_room(models: Models, cfg: config_mod.Config, stop: asyncio.Event, *,
                   store: ConfigStore | None = None, life: Lifecycle | None = None,
                   adjust: Callable[[config_mod.Config], config_mod.Config] | None = None,
                   link: RoomLink | None = None) -> int:
    """Join the room and talk there until ``stop`` (0), until the link gives up (1) or, with
    ``rejoin=False``, until it has left the room for good (0).

    ``cfg`` is the file config; the remote changes of ``store`` (default: the one in the state
    directory) apply over it, and the room's controllers may change them while it runs.
    ``models`` should be loaded from ``store.config``. A dispatched job (:mod:`edgeagent.worker`)
    passes ``adjust`` (its room and settings, over the config in effect) and its own ``link``.
    """
    from edgeagent.control.live import LiveApplier, open_store
    from edgeagent.home_assistant.tools import home_assistant_tools
    from edgeagent.room.audio import RoomInput
    from edgeagent.room.config_rpc import RoomControl
    from edgeagent.room.connection import RoomLink
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.compose import session_for, without_wake_word

    store = store or open_store(cfg)
    cfg = store.config if store is not None else cfg
    cfg = without_wake_word(adjust(cfg) if adjust is not None else cfg, "in a room")
    link = link or RoomLink(cfg.livekit)
    room_in = RoomInput(link, listen=cfg.livekit.listen, identities=cfg.livekit.identities)
    inp, out = await _ends(link, room_in, cfg)
    # The room has no echo path to us; room+local cancels the local mic's echo itself.
    session = session_for(models, cfg, echo_path=False)
    out.volume = cfg.audio.output_volume
    conventions: list[RoomConventions] = []
    applier = LiveApplier(session, models, out, cfg, room_input=room_in, conventions=conventions, link=link,
                          in_room=True)
    control = RoomControl(store, cfg.control, applier) if store is not None else None

    _follow_joins(link, session, room_in, applier, control, conventions)
    try:
        await out.start()
        await link.start()
        await session.start(Agent(instructions=cfg.agent.instructions, tools=home_assistant_tools(cfg.home_assistant)),
                            input=inp, output=out)
        print(f"edgeagent: joining room {cfg.livekit.room or '(from the token)'} at {cfg.livekit.url} "
              f"as {link.identity} (Ctrl-C stops)", flush=True)
        if life is not None:  # READY=1, watchdog, GPIO, SIGHUP reloads
            await life.started(session, applier=applier)
        await until_first(link.failed, stop, link.ended)
        return exit_status(link.failed, stop, link.last_error)
    finally:
        # The link first: a shutdown that comes while it is rejoining (the room closed) must
        # not wait for that attempt, nor let the other parts wait on a room that is going.
        await wait_for(link.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(applier.aclose(), CLOSE_TIMEOUT_S)
        for conv in conventions:
            await wait_for(conv.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(session.aclose(), CLOSE_TIMEOUT_S)
        await inp.aclose()
        await out.aclose()


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
    terminal.add_log_options(p)
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
        print("edgeagent: no room to join: give --url (and --room with livekit.api_key/api_secret, or --token)",
              file=sys.stderr)
        return terminal.USAGE
    from edgeagent.room.sdk import then_close_sdk

    return asyncio.run(then_close_sdk(_serve(cfg)))


async def _serve(cfg: config_mod.Config) -> int:
    from edgeagent.control.live import open_store
    from edgeagent.voice.stages import Models

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        store = open_store(cfg)  # the models of the config in effect: remote changes included
        models = await Models.load(store.config if store is not None else cfg)
        try:
            return 0 if stop.is_set() else await run_room(models, cfg, stop, store=store)
        finally:
            await models.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
