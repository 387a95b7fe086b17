"""A network namespace joined to this one by a veth pair, made (and removed) by a test; needs root.

``NetNs.make()`` creates ``ea<N>`` (N: this process's id, so two suites at once do not
collide) with the veth pair ``eah<N>`` (here, ``OUTER``) and ``ean<N>`` (there, ``INNER``)
on a /30 of 10.213.0.0/16. :meth:`NetNs.down` takes this side's end down: nothing passes
either way, and connecting to ``INNER`` fails at once ("network is unreachable") as on a
board whose Wi-Fi dropped. :meth:`NetNs.exec` is the prefix that runs a program inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def why_not() -> str | None:
    """Why this process cannot make a namespace (None: it can)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed: apt-get install iproute2"
    if os.geteuid() != 0:
        return ("making a network namespace and a veth pair needs root (uid 0; this is uid "
                f"{os.geteuid()}): run scripts/test as root, as CI does")
    return None


@dataclass(frozen=True)
class NetNs:
    name: str
    outer_if: str
    inner_if: str
    outer: str
    inner: str

    @classmethod
    def make(cls) -> NetNs:
        n = os.getpid()
        a = n % 16384  # the /30 of 10.213.0.0/16 this process takes
        net = f"10.213.{a // 64}.{a % 64 * 4}"
        head, last = net.rsplit(".", 1)
        ns = cls(f"ea{n}", f"eah{n}", f"ean{n}", f"{head}.{int(last) + 1}", f"{head}.{int(last) + 2}")
        _ip("netns", "add", ns.name)
        try:
            _ip("link", "add", ns.outer_if, "type", "veth", "peer", "name", ns.inner_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.outer}/30", "dev", ns.outer_if)
            _ip("link", "set", ns.outer_if, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.inner}/30", "dev", ns.inner_if)
            _ip("-n", ns.name, "link", "set", ns.inner_if, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
        except RuntimeError:
            ns.remove()
            raise
        return ns

    @property
    def exec(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def down(self) -> None:
        _ip("link", "set", self.outer_if, "down")

    def up(self) -> None:
        _ip("link", "set", self.outer_if, "up")

    def remove(self) -> None:
        """The namespace goes, and the veth pair with it."""
        subprocess.run(["ip", "link", "del", self.outer_if], capture_output=True, timeout=10, check=False)
        _ip("netns", "del", self.name)


def made(why: str | None, what: str) -> Iterator[NetNs]:
    """A namespace for a fixture to yield, removed after; ``why`` (not None): ``what`` fails saying so."""
    if why is not None:
        pytest.fail(f"{what} cannot run: {why}")
    ns = NetNs.make()
    try:
        yield ns
    finally:
        ns.remove()
