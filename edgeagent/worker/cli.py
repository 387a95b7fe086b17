"""``edgeagent worker``: ``edgeagent run`` as a LiveKit agent worker (``livekit.mode`` worker or
worker+local), with its options as flags; the worker itself is :mod:`edgeagent.worker.run`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeagent import runner, terminal
from edgeagent.worker import run as worker_run


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", help="be a LiveKit agent worker: join the rooms applications dispatch this device into",
        description=worker_run.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="LiveKit server URL (livekit.url)")
    p.add_argument("--agent-name", help="the agent name applications dispatch (livekit.agent_name)")
    p.add_argument("--identity", help="participant identity in the rooms (livekit.identity)")
    p.add_argument("--local", action="store_true",
                   help="the local mic and speaker work too, between jobs and during one (mode worker+local)")
    p.add_argument("--config", type=Path, default=None, help="config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    terminal.add_log_options(p)
    p.set_defaults(func=main)


def run_defaults() -> argparse.Namespace:
    """The options of ``edgeagent run`` with nothing given: their defaults, from its own parser."""
    parser = argparse.ArgumentParser()
    runner.register(parser.add_subparsers())
    return parser.parse_args(["run"])


def main(args: argparse.Namespace) -> int:
    overrides = [*args.set, f"livekit.mode={'worker+local' if args.local else 'worker'}"]
    for key, value in (("url", args.url), ("agent_name", args.agent_name), ("identity", args.identity)):
        if value is not None:
            overrides.append(f"livekit.{key}={value}")
    ns = run_defaults()  # every option of `edgeagent run` as its parser gives it, so none is missed
    ns.config, ns.set = args.config, overrides
    if not runner.load_config(ns).livekit.url:
        print("edgeagent: a worker needs a server: give --url (and livekit.api_key/api_secret)", file=sys.stderr)
        return terminal.USAGE
    return runner.main(ns)
