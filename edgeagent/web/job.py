"""The agent in a browser on the LAN: ``edgeagent web``, or ``edgeagent run`` with ``[web] enabled``.

The board serves its console (``web.host:port``, 127.0.0.1 by default) and talks to the
browser over a direct WebRTC connection (aiortc, no server between): the browser's mic
is the agent's ears (:class:`~edgeagent.web.audio.WebInput`), its speaker the agent's
voice (:class:`~edgeagent.web.audio.WebOutput`). The console shows the agent's state,
both sides' transcripts and each turn's latency, takes typed text, and reads and changes
the config with the remote-config protocol (the changes persist in the state directory,
as those made over a room, and are put into effect by
:class:`~edgeagent.control.live.LiveApplier`).

Access: a browser must pair first with the code printed on the first run (or
``web.password``); one browser at a time unless ``web.max_clients`` says more. As in a
room, nobody says a wake word to a browser: ``activation.mode = wake`` runs as ``always``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent import terminal
from edgeagent.aio import wait_for
from edgeagent.paths import config_file, state_dir

if TYPE_CHECKING:
    from edgeagent.config.web import WebConfig
    from edgeagent.control.store import ConfigStore
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.voice.stages import Models
    from edgeagent.web.pairing import Pairing
    from edgeagent.web.peer import Peers
    from edgeagent.web.server import ConsoleServer

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 15.0


def _console_server(web_cfg: WebConfig, peers: Peers, pairing: Pairing, state: Path) -> tuple[ConsoleServer, str]:
    """The console's HTTP server (HTTPS where ``web.tls`` asks for it, with a self-signed
    certificate kept in ``state``), and what the start-up line says about that certificate."""
    from edgeagent.web.server import ConsoleServer
    from edgeagent.web.tls import server_context, wants_tls

    ssl_context, tls_note = None, ""
    if wants_tls(web_cfg.tls, web_cfg.host):
        ssl_context, print_ = server_context(state, web_cfg.host)
        tls_note = f"; self-signed certificate SHA-256 {print_}"
    return ConsoleServer(web_cfg, peers, pairing, ssl_context=ssl_context), tls_note


async def run_web(models: Models, cfg: config_mod.Config, stop: asyncio.Event, *,
                  store: ConfigStore | None = None, state: Path | None = None,
                  started: asyncio.Future[str] | None = None, life: Lifecycle | None = None) -> int:
    """Serve the console and talk to the browser until ``stop`` (0); 1 when the address
    cannot be bound. ``cfg`` is the file config, the remote changes of ``store`` apply over
    it; ``state`` holds the pairing code (default: the state directory). ``started`` gets
    the console's URL once it listens."""
    from edgeagent.control.live import LiveApplier, open_store
    from edgeagent.home_assistant.tools import home_assistant_tools
    from edgeagent.voice.agent import Agent
    from edgeagent.voice.compose import session_for, without_wake_word
    from edgeagent.web.audio import WebInput, WebOutput
    from edgeagent.web.channel import ChannelHub
    from edgeagent.web.feed import SessionFeed
    from edgeagent.web.pairing import Pairing
    from edgeagent.web.peer import Peers

    store = store or open_store(cfg)
    effective = without_wake_word(store.config if store is not None else cfg, "with a browser")
    web_cfg = cfg.web  # [web] is not settable remotely: the file's is the one in effect
    pairing = Pairing.open(web_cfg.password, state or state_dir())
    inp, out = WebInput(), WebOutput(buffer_ms=effective.audio.output_buffer_ms)
    session = session_for(models, effective, echo_path=False)  # the browser cancels its own echo
    out.volume = effective.audio.output_volume
    applier = LiveApplier(session, models, out, effective, in_room=True)
    hub: ChannelHub | None = None
    feed = SessionFeed(session, lambda message: hub.broadcast(message) if hub is not None else None,
                       max_chat_bytes=web_cfg.max_chat_bytes)
    hub = ChannelHub(feed, effective, store, applier)
    peers = Peers(web_cfg, inp, out, on_channel=hub.add, on_closed=hub.remove)
    server, tls_note = _console_server(web_cfg, peers, pairing, state or state_dir())
    try:
        await out.start()
        tools = home_assistant_tools(effective.home_assistant)
        await session.start(Agent(instructions=effective.agent.instructions, tools=tools), input=inp, output=out)
        feed.start()
        try:
            url = await server.start()
        except OSError as exc:
            print(f"edgeagent: the web console cannot listen on {web_cfg.host}:{web_cfg.port}: {exc}",
                  file=sys.stderr)
            return 1
        if started is not None and not started.done():
            started.set_result(url)
        print(f"edgeagent: web console at {url} (pair with the code from {pairing.source}{tls_note}; "
              "Ctrl-C stops)", flush=True)
        if life is not None:  # READY=1, watchdog, GPIO, SIGHUP reloads (as in a room)
            await life.started(session, applier=applier)
        await stop.wait()
        return 0
    finally:
        await wait_for(server.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(peers.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(applier.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(feed.aclose(), CLOSE_TIMEOUT_S)
        await wait_for(session.aclose(), CLOSE_TIMEOUT_S)
        await inp.aclose()
        await out.aclose()


# -- `edgeagent web` -----------------------------------------------------------------------


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "web", help="serve the web console and talk to a browser over WebRTC", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to listen on (web.host; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (web.port)")
    p.add_argument("--config", type=Path, default=None, help="config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    terminal.add_log_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    overrides = ["web.enabled=true", *args.set]
    if args.host is not None:
        overrides.append(f"web.host={args.host}")
    if args.port is not None:
        overrides.append(f"web.port={args.port}")
    cfg = config_mod.load(args.config or config_file(), overrides=overrides)
    logging.getLogger().setLevel(cfg.log_level.upper())
    return asyncio.run(serve(cfg))


async def serve(cfg: config_mod.Config) -> int:
    """Load the models and run :func:`run_web` until SIGINT/SIGTERM."""
    from edgeagent.control.live import open_store
    from edgeagent.voice.stages import Models

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        store = open_store(cfg)
        models = await Models.load(store.config if store is not None else cfg)
        try:
            return 0 if stop.is_set() else await run_web(models, cfg, stop, store=store)
        finally:
            await models.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
