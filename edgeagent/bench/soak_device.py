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


def diag() -> dict[str, Any]:
    """What RSS is made of, for ``EDGEAGENT_SOAK_DIAG=1`` runs: glibc's heap (``mallinfo2``: in use,
    free but kept, mmapped), Python's own allocator and tracemalloc (when started), the threads by
    name and the gc-tracked objects by type (the 12 most)."""
    import collections
    import ctypes
    import gc
    import tracemalloc

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    mi = libc.mallinfo2()
    mb = 1 << 20
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    out: dict[str, Any] = {
        "malloc_in_use_mb": round(mi.uordblks / mb, 1), "malloc_free_mb": round(mi.fordblks / mb, 1),
        "malloc_mmap_mb": round(mi.hblkhd / mb, 1), "malloc_arena_mb": round(mi.arena / mb, 1),
        "py_blocks": sys.getallocatedblocks(), "gc_objects": sum(types.values()),
        "types": dict(types.most_common(12)), "threads": sorted(t.name for t in threading.enumerate())}
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    out.update({k: int(status[k].split()[0]) // 1024 for k in ("RssAnon", "RssFile")})
    out["maps_mb"] = _rss_by_mapping()
    out["largest"] = _largest_containers()
    if tracemalloc.is_tracing():
        out["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / mb, 1)
    return out


def _largest_containers() -> list[str]:
    """The 8 largest lists, deques, dicts and sets the gc tracks or that a tracked object holds
    (a dict of plain values is not tracked itself): "type len first-item": a container that
    grows from sample to sample holds what leaks."""
    import collections
    import gc

    kinds = (list, dict, set, collections.deque)
    seen: dict[int, Any] = {}
    for o in gc.get_objects():
        for x in (o, *gc.get_referents(o)):
            if isinstance(x, kinds) and len(x) >= 256:
                seen[id(x)] = x
    top = sorted(seen.values(), key=len, reverse=True)[:8]
    return [f"{type(x).__name__} {len(x)} {_first(x)}" for x in top]


def _first(x: Any) -> str:
    item = next(iter(x.items() if isinstance(x, dict) else x), None)
    return repr(item)[:60]


_dumps = [0]


def _dump_traces() -> None:
    """With ``PYTHONTRACEMALLOC`` set and ``EDGEAGENT_SOAK_DIAG=DIR``, every 5th sample (after the
    sample went out, so the soak's wait for it is not held up) dumps a tracemalloc snapshot to
    ``DIR/traces-N.tm``; ``python -m edgeagent.bench.soak_traces DIR`` compares them. It holds the
    device's loop for a few seconds: a diagnosis run's latencies mean nothing."""
    import tracemalloc

    where = os.environ.get("EDGEAGENT_SOAK_DIAG", "")
    if not tracemalloc.is_tracing() or not os.path.isdir(where):
        return
    n = _dumps[0]
    _dumps[0] += 1
    if n % 5 == 0:
        tracemalloc.take_snapshot().dump(os.path.join(where, f"traces-{n // 5:03d}.tm"))


def _rss_by_mapping() -> dict[str, int]:
    """Resident MB by mapped file (anonymous memory under ``[anon]``), the 10 largest."""
    rss: dict[str, int] = {}
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not line.startswith(("Rss", "Size")):
            name = Path(head[5]).name if len(head) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            rss[name] = rss.get(name, 0) + int(head[1])
    return {k: v // 1024 for k, v in sorted(rss.items(), key=lambda kv: -kv[1])[:10]}


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
            sample = proc_sample()
            if os.environ.get("EDGEAGENT_SOAK_DIAG"):
                print("soak diag " + json.dumps({"rss_mb": sample["rss_mb"], **diag()}), file=sys.stderr,
                      flush=True)
            emit(ev="sample", **sample)
            _dump_traces()
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
