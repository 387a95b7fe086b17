"""``edgeagent devices``: list the input and output devices PortAudio sees; ``--test`` tries them.

``--test`` records a few seconds from the microphone with a live level meter (stderr),
plays them back on the speaker and says which device, rate and channel count each end
opened at (:mod:`edgeagent.audio.soundcheck`); exit 1 when an end did not work.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "devices",
        help="list sound input and output devices",
        description=(
            "List the sound devices PortAudio sees, with index, name, host API, channels "
            "and default rate; * marks the defaults. Pick one with its index or a part "
            "of its name. --test records 3 s from the microphone (speak!) and plays it back."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--test", action="store_true", help="record from the microphone, play it back, report")
    p.add_argument("--input", metavar="DEV", help="--test: the microphone (default: audio.input_device)")
    p.add_argument("--output", metavar="DEV", help="--test: the speaker (default: audio.output_device)")
    p.add_argument("--seconds", type=float, default=3.0, metavar="S", help="--test: how long to record (default 3)")
    p.add_argument("--config", type=Path, default=None, help="config file (for the default devices)")
    p.set_defaults(func=run)


def meter_line(level: float, width: int = 30) -> str:
    """A level bar from -60 to 0 dBFS."""
    fill = 0 if not math.isfinite(level) else max(0, min(width, round((level + 60) / 60 * width)))
    shown = f"{level:6.1f}" if math.isfinite(level) else "  -inf"
    return f"[{'#' * fill}{'.' * (width - fill)}] {shown} dBFS"


def test_devices(args: argparse.Namespace) -> int:
    import asyncio

    from edgeagent import config
    from edgeagent.audio.soundcheck import sound_check
    from edgeagent.paths import config_file

    if not 0.5 <= args.seconds <= 60:
        print("edgeagent: --seconds must be between 0.5 and 60", file=sys.stderr)
        return 2
    audio = config.load(args.config or config_file()).audio
    tty = sys.stderr.isatty()

    def meter(level: float) -> None:
        print(("\r" if tty else "") + "level " + meter_line(level), end="" if tty else "\n", file=sys.stderr,
              flush=True)

    print(f"edgeagent: recording {args.seconds:g} s: speak now", file=sys.stderr, flush=True)
    report = asyncio.run(sound_check(args.input if args.input is not None else audio.input_device,
                                     args.output if args.output is not None else audio.output_device,
                                     seconds=args.seconds, meter=meter, output_buffer_ms=audio.output_buffer_ms))
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for name, end in (("microphone", report.input), ("speaker", report.output)):
            opened = (f"{end.index}: {end.device!r} ({end.hostapi}) at {end.rate} Hz x{end.channels}"
                      if end.rate else "did not open")
            print(f"{name:<10}  {opened}; {end.seconds:.1f} s {'recorded' if name == 'microphone' else 'played'}")
        if report.peak_dbfs is not None:
            print(f"level       RMS {report.rms_dbfs} dBFS, peak {report.peak_dbfs} dBFS")
    for problem in report.problems:
        print(f"edgeagent: {problem}", file=sys.stderr)
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:
    from edgeagent.audio.soundcards import DeviceInfo, Kind, list_devices

    if args.test:
        return test_devices(args)

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
