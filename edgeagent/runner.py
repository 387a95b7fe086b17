"""``edgeagent run``: load the config, check models and sound devices, run the agent."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from edgeagent import config as config_mod
from edgeagent.errors import EdgeAgentError
from edgeagent.paths import config_file

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the voice agent on the local mic and speaker", description=__doc__
    )
    p.add_argument("--config", type=Path, default=None, help="config file (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--check", action="store_true", help="only check config, models and devices, then exit")
    p.set_defaults(func=main)


def preflight(cfg: config_mod.Config) -> list[str]:
    """Problems that stop the agent from starting: missing models, unusable devices."""
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


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config or config_file(), overrides=args.set)
    logging.getLogger().setLevel(cfg.log_level.upper())
    problems = preflight(cfg)
    for p in problems:
        print(f"edgeagent: {p}")
    if problems:
        return 1
    if args.check:
        print("edgeagent: config, models and sound devices are ready")
        return 0
    raise EdgeAgentError(
        "the voice session (AgentSession) is not built yet; `edgeagent run --check` checks readiness"
    )
