"""The ``edgeagent`` command: parsing only; each subcommand lives in its own module.

Every subcommand module has ``register(subparsers)``, which adds its parser and
sets ``func`` to a handler ``(args) -> exit code``. Modules are imported here
explicitly (no plugin magic) and must stay cheap to import.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence

from edgeagent import __version__, terminal
from edgeagent.errors import ConfigError, EdgeAgentError

DESCRIPTION = """\
An on-device voice agent: a wake word, speech recognition, a local language model
and a voice, all on this machine (a Raspberry Pi or any Linux computer).

  edgeagent models pull    fetch the default models (once)
  edgeagent run            talk to it through the microphone and speaker
  edgeagent COMMAND -h     what a command does and its options
"""

SUBCOMMAND_MODULES = (
    "edgeagent.runner",
    "edgeagent.model_files.cli",
    "edgeagent.audio.devices_cli",
    "edgeagent.config.cli",
    "edgeagent.room.job",
    "edgeagent.worker.cli",
    "edgeagent.device.service_cli",
    "edgeagent.web.job",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="edgeagent", description=DESCRIPTION, epilog=terminal.EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if override := terminal.log_level_override(args):  # run, join, web: the config's log_level
        args.set.append(override)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return terminal.USAGE
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit: a closed stdout is then an error like any other
        return code
    except ConfigError as exc:  # a wrong setting (file, --set, EDGEAGENT__...): nothing was started
        print(f"edgeagent: error: {exc}", file=sys.stderr)
        return terminal.USAGE
    except EdgeAgentError as exc:
        print(f"edgeagent: error: {exc}", file=sys.stderr)
        return terminal.FAILED
    except KeyboardInterrupt:
        return terminal.INTERRUPTED
    except BrokenPipeError:
        if not stdout_closed():
            raise
        # What is still buffered cannot be written: point stdout at /dev/null so that the
        # interpreter's own flush at exit does not fail again (and turn exit 1 into 120).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        print("edgeagent: error: standard output was closed before everything was written to it",
              file=sys.stderr)
        return 1


def stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False
