"""The ``edgeagent service`` command line: its options, and exit statuses for install, uninstall and status.

What each action does is :mod:`edgeagent.device.service` (whose docstring is the command's help).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeagent.device import service


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "service", help="install, remove or inspect edgeagent as a systemd service", description=service.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="service_command", metavar="ACTION")

    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=usage)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        a.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                       help="install under this root instead of / (an image, a test)")
        return a

    a = add("install", "create the user and directories, the config template and the models; install and "
                       "enable the unit")
    a.add_argument("--exe", type=Path, default=None, help="the edgeagent command the service runs "
                                                           "(default: the one running now)")
    a.add_argument("--models-from", type=Path, default=None, metavar="DIR",
                   help="copy the models from here when they are there (default: fetch them)")
    a.add_argument("--no-models", action="store_true", help="do not install the models")
    a.add_argument("--no-enable", action="store_true", help="install the unit but do not enable it")
    a.add_argument("--start", action="store_true", help="start the service now (systemd running, root /)")
    a.set_defaults(func=_install)
    a = add("uninstall", "disable and remove the unit; keep config and models unless --purge")
    a.add_argument("--purge", action="store_true", help="also remove the config, the models and the state")
    a.set_defaults(func=_uninstall)
    a = add("status", "show what is installed and whether it runs (exit 3 when not installed)")
    a.set_defaults(func=_status)


def _install(args: argparse.Namespace) -> int:
    service.install(service.Layout(args.root.resolve()), args.exe or service.default_exe(),
                    models_from=args.models_from, pull_models=not args.no_models, enable=not args.no_enable,
                    start=args.start)
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    service.uninstall(service.Layout(args.root.resolve()), purge=args.purge)
    return 0


def _status(args: argparse.Namespace) -> int:
    installed, lines = service.status(service.Layout(args.root.resolve()))
    print("\n".join(lines))
    return 0 if installed else 3
