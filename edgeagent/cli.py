"""The ``edgeagent`` command: parsing only; each subcommand lives in its own module.

Every subcommand module has ``register(subparsers)``, which adds its parser and
sets ``func`` to a handler ``(args) -> exit code``. Modules are imported here
explicitly (no plugin magic) and must stay cheap to import.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edgeagent import __version__
from edgeagent.errors import EdgeAgentError

SUBCOMMAND_MODULES = (
    "edgeagent.runner",
    "edgeagent.models_cli",
    "edgeagent.audio.devices_cli",
    "edgeagent.config_cli",
    "edgeagent.room.job",
    "edgeagent.device.service",
    "edgeagent.web.job",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="edgeagent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except EdgeAgentError as exc:
        print(f"edgeagent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
