"""``edgeagent config example | show``: the commented template, and the config in effect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeagent.paths import config_file


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("config", help="show the config or a commented template")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    ex = csub.add_parser("example", help="print a commented config file with every field at its default")
    ex.set_defaults(func=_example)
    show = csub.add_parser("show", help="print the config in effect (file, env and --set applied) as JSON")
    show.add_argument("--config", type=Path, default=None, help="config file (default: the usual place)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=_show)


def _example(args: argparse.Namespace) -> int:
    from edgeagent.config_doc import example_toml

    print(example_toml(), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from edgeagent import config

    path = args.config or config_file()
    cfg = config.load(path, overrides=args.set)
    print(json.dumps({"file": str(path), "exists": path.exists(), "config": config.to_dict(cfg)}, indent=2))
    return 0
