"""Where a soak's Python memory grew: ``python -m edgeagent.bench.soak_traces DIR [N]``.

Compares the tracemalloc snapshots that an ``EDGEAGENT_SOAK_DIAG=DIR`` soak run with
``PYTHONTRACEMALLOC=1`` dumped (see :mod:`edgeagent.bench.soak_device`): the middle
snapshot (past the warm-up) against the last, and prints the N (default 25) tracebacks
whose live allocations grew most, in KiB and in blocks.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    dumps = sorted(Path(args[0]).glob("traces-*.tm"))
    if len(dumps) < 3:
        print(f"{args[0]}: {len(dumps)} snapshot(s); need 3 (warm-up, start, end)", file=sys.stderr)
        return 1
    top = int(args[1]) if len(args) > 1 else 25
    first = tracemalloc.Snapshot.load(str(dumps[len(dumps) // 2]))
    last = tracemalloc.Snapshot.load(str(dumps[-1]))
    print(f"{dumps[len(dumps) // 2].name} -> {dumps[-1].name}")
    for stat in last.compare_to(first, "traceback")[:top]:
        print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-8:]:
            print("    " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
