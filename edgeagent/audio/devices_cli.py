"""``edgeagent devices``: list the input and output devices PortAudio sees."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "devices",
        help="list sound input and output devices",
        description=(
            "List the sound devices PortAudio sees, with index, name, host API, channels "
            "and default rate; * marks the defaults. Pick one with its index or a part "
            "of its name."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeagent.audio.devices import DeviceInfo, Kind, list_devices

    devices = list_devices()

    def rows(kind: Kind) -> list[DeviceInfo]:
        return [d for d in devices if d.channels(kind)]

    if args.json:
        doc = {
            kind: [
                {
                    "index": d.index,
                    "name": d.name,
                    "hostapi": d.hostapi,
                    "channels": d.channels(kind),
                    "default_samplerate": d.default_samplerate,
                    "default": d.is_default(kind),
                }
                for d in rows(kind)
            ]
            for kind in ("input", "output")
        }
        print(json.dumps(doc, indent=2))
        return 0
    for kind in ("input", "output"):
        found = rows(kind)
        print(f"{kind.capitalize()} devices:")
        if not found:
            print("  (none: is the sound card, or PulseAudio/PipeWire, running?)")
        width = max((len(d.name) for d in found), default=4)
        for d in found:
            mark = "*" if d.is_default(kind) else " "
            print(
                f"  {mark} {d.index:>3}  {d.name:<{width}}  {d.hostapi:<10} "
                f"{d.channels(kind):>3} ch  {d.default_samplerate:>6} Hz"
            )
    print("* = default")
    return 0
