"""The soak's device: ``edgeagent join`` in a process of its own, that the soak can look into.

``python -m edgeagent.bench.soak_device --set KEY=VALUE...`` runs exactly what ``edgeagent
join`` runs (the config in effect with the remote changes of the state directory, the
default models, :func:`edgeagent.room.job.run_room`), and besides:

- on stdout, one JSON object per line: ``{"ev": "log", ...}`` for each of the device's
  ``user:``, ``agent:``, ``lk.chat from``, ``turn metrics`` and ``room:`` log lines and each
  warning or error (``wall``: the record's time, ``fields``: the turn metrics in ms),
  and a sample on request;
- on stdin, commands: ``sample`` -> ``{"ev": "sample", "rss_mb", "fds", "threads", "tasks",
  "cpu_s"}`` (the process as /proc sees it, and the asyncio tasks of its loop); ``stop`` ->
  the device stops as on SIGTERM, and the process exits with run_room's status.

The full log goes to stderr as ``edgeagent join`` writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for

PREFIXES = ("user: ", "agent: ", "lk.chat from ", "lk.chat: ", "turn metrics", "room: ")


class EventLines(logging.Handler):
    """The device's log lines that the soak follows, as JSON lines on stdout."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock_out = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno < logging.WARNING and not msg.startswith(PREFIXES):
            return
        fields = {k: v for k, v in record.__dict__.items() if k.isupper() and isinstance(v, int | float | str)}
        emit(ev="log", wall=record.created, level=record.levelname, name=record.name, msg=msg, fields=fields)


_out_lock = threading.Lock()


def emit(**event: Any) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def proc_sample() -> dict[str, Any]:
    """RSS, open descriptors and threads from /proc/self, CPU seconds (user + system) so far,
    and the running loop's asyncio tasks."""
    text = Path("/proc/self/status").read_text()
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    times = os.times()
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024.0, "threads": int(status["Threads"]),
            "fds": len(os.listdir("/proc/self/fd")), "tasks": len(asyncio.all_tasks()),
            "cpu_s": times.user + times.system}


async def commands(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = line.decode().strip()
        if cmd == "sample":
            emit(ev="sample", **proc_sample())
        elif cmd == "stop":
            break
    stop.set()  # "stop", or the soak went away


async def serve(overrides: list[str]) -> int:
    from edgeagent import config as config_mod
    from edgeagent.control.live import open_store
    from edgeagent.paths import config_file
    from edgeagent.room.job import run_room
    from edgeagent.voice.stages import Models

    cfg = config_mod.load(config_file(), overrides=overrides)
    stop = asyncio.Event()
    reading = asyncio.ensure_future(commands(stop))
    store = open_store(cfg)
    models = await Models.load(store.config if store is not None else cfg)
    try:
        return await run_room(models, cfg, stop, store=store)
    finally:
        reading.cancel()
        await wait_for(models.aclose(), 30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeagent.bench.soak_device", description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("edgeagent").addHandler(EventLines())
    from edgeagent.room.sdk import then_close_sdk

    return asyncio.run(then_close_sdk(serve(args.set)))


if __name__ == "__main__":
    raise SystemExit(main())
