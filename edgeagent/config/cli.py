"""``edgeagent config example | show`` (the commented template, the config in effect) and the
remote controller ``edgeagent config get | set | schema | watch`` (:mod:`edgeagent.room.config_client`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeagent.paths import config_file

REMOTE_OUTPUT = """output:
  stdout carries JSON only: the device's answer (watch: one change per line), or, when the
  device refused the call, its structured error ({"code": ..., "message": ..., "problems": [...]}).
  stderr carries the one-line messages meant for a person. So `edgeagent config get ... | jq`
  always reads JSON, and the exit status says which it was.

exit status:
  0  done
  1  refused or failed (the device said no, the room or the device could not be reached,
     or stdout was closed before everything was written to it)
  2  a usage error (no --url, no way to get a token)"""


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("config", help="show the config or a commented template")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    ex = csub.add_parser("example", help="print a commented config file with every field at its default")
    ex.set_defaults(func=_example)
    show = csub.add_parser("show", help="print the config in effect (file, env and --set applied) as JSON")
    show.add_argument("--config", type=Path, default=None, help="config file (default: the usual place)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=_show)
    for name, help_text in (("get", "read a device's config over its LiveKit room"),
                            ("set", "change a device's config over its LiveKit room: KEY=VALUE..."),
                            ("schema", "print what a device lets you change, with docs and limits"),
                            ("watch", "print every config change made in the room until Ctrl-C")):
        cp = csub.add_parser(name, help=help_text, description=help_text, epilog=REMOTE_OUTPUT,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "set":
            cp.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                            help="a dotted key and a JSON value (or plain text): tts.speed=1.2")
            cp.add_argument("--base-revision", type=int, default=None,
                            help="the revision your change is based on (default: the one read just before)")
        _room_args(cp)
        cp.set_defaults(func=_remote, action=name)


def _room_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="LiveKit server URL (default: livekit.url)")
    p.add_argument("--room", help="the device's room (default: livekit.room)")
    p.add_argument("--device", help="the device's identity (default: livekit.identity, else the room's one agent)")
    p.add_argument("--identity", help="your identity (default: edgeagent-controller-<host>)")
    p.add_argument("--token", help="an access token for you (else minted from the API key and secret)")
    p.add_argument("--api-key", help="default: livekit.api_key")
    p.add_argument("--api-secret", help="default: livekit.api_secret")
    p.add_argument("--config", type=Path, default=None, help="config file to take the defaults from")


def _remote(args: argparse.Namespace) -> int:
    import asyncio

    from edgeagent import config
    from edgeagent.errors import EdgeAgentError
    from edgeagent.room.config_client import ControllerError, controller_token, default_controller_identity

    lk = config.load(args.config or config_file()).livekit
    url, room = args.url or lk.url, args.room or lk.room
    identity = args.identity or default_controller_identity()
    key, secret = args.api_key or lk.api_key, args.api_secret or lk.api_secret
    if not url:
        print("edgeagent config: give --url (or livekit.url in the config)", file=sys.stderr)
        return 2
    if not args.token and not (room and key and secret):
        print("edgeagent config: give --token, or --room with an API key and secret (or livekit.* in the config)",
              file=sys.stderr)
        return 2
    token = args.token or controller_token(str(key), str(secret), str(room), identity)
    device = args.device or lk.identity
    try:
        from edgeagent.room.sdk import then_close_sdk

        return asyncio.run(then_close_sdk(_run_remote(args, url, token, device)))
    except ControllerError as exc:
        print(f"edgeagent config {args.action}: {exc}", file=sys.stderr)
        if exc.error:
            _emit(exc.error)
        return 1
    except EdgeAgentError as exc:
        print(f"edgeagent config {args.action}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def _run_remote(args: argparse.Namespace, url: str, token: str, device: str | None) -> int:
    """One controller session; the room is left when it ends (the caller then closes the SDK:
    :func:`edgeagent.room.sdk.then_close_sdk`)."""
    from edgeagent.room.config_client import Controller, parse_assignments

    patch = parse_assignments(args.assignments) if args.action == "set" else None
    async with Controller(url, token, device) as ctl:
        if args.action == "get":
            _emit(await ctl.get())
        elif args.action == "schema":
            _emit(await ctl.schema())
        elif args.action == "set":
            assert patch is not None
            _emit(await ctl.set(patch, args.base_revision))
        else:
            print(f"watching {ctl.device}'s config changes (Ctrl-C stops)", file=sys.stderr, flush=True)
            while True:
                _emit(await ctl.notices.get(), indent=None)
    return 0


def _emit(value: Any, indent: int | None = 2) -> None:
    """One JSON document on stdout, flushed now: a closed stdout fails here, inside the
    command (BrokenPipeError, which :func:`edgeagent.cli.main` turns into exit 1)."""
    print(json.dumps(value, indent=indent), flush=True)


def _example(args: argparse.Namespace) -> int:
    from edgeagent.config.doc import example_toml

    print(example_toml(), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from edgeagent import config

    path = args.config or config_file()
    cfg = config.load(path, overrides=args.set)
    print(json.dumps({"file": str(path), "exists": path.exists(), "config": config.to_dict(cfg)}, indent=2))
    return 0
