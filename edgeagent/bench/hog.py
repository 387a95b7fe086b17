"""A CPU hog for ``scripts/bench --hog``: one busy process per core, at the lowest priority (nice 19).

The agent should hardly notice it: the scheduler gives a nice-19 process a small share
of a core that a nice-0 one wants. :class:`CpuHog` starts the processes and always stops
them (a ``with`` block, also on an error or Ctrl-C); each one also ends by itself
when the process that started it is gone, so a killed bench leaves no hog behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from types import TracebackType

NICE = 19
# Busy in pure Python; every million rounds (a few ms) a look at whether its parent still lives.
_LOOP = "import os\nwhile os.getppid() == {parent}:\n    for _ in range(1_000_000):\n        pass\n"


class CpuHog:
    """``processes`` (default: one per core) busy loops at nice 19 while inside ``with``."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or os.cpu_count() or 1
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        nice = shutil.which("nice")
        if nice is None:
            raise FileNotFoundError("nice (coreutils) is not installed")
        code = _LOOP.format(parent=os.getpid())
        try:
            for _ in range(self.processes):
                self.procs.append(subprocess.Popen([nice, "-n", str(NICE), sys.executable, "-c", code],
                                                   stdin=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every process (SIGKILL) and reap it."""
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def describe(self) -> str:
        return f"{self.processes} busy process(es) at nice {NICE} (one per core)"

    def __enter__(self) -> CpuHog:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
