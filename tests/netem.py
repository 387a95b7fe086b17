"""Packet loss and delay jitter on a test namespace's veth pair, in userspace: a stand-in for ``tc netem``.

This kernel has no ``sch_netem`` (nor ``gact``; see tests/test_room_blackout.py), but it has
NFQUEUE: an iptables rule hands each packet to a userspace program, which answers with a
verdict (accept or drop) whenever it likes. :class:`Impairment` puts the namespace's veth end
(both directions: the INPUT and OUTPUT chains, that interface only) on a queue, and runs this
file's handler inside the namespace (``ip netns exec``) to answer it: each packet is dropped with
probability ``loss`` (at once), else accepted after a delay drawn *uniformly* from
``delay_s ± jitter_s`` (netem's own distribution when none is named), each packet's release
kept on a timer heap, so that jitter reorders packets as netem does. As netem on both ends of a
link, each direction is impaired on its own: a round trip across the pair pays the delay twice.

The handler speaks the NFQUEUE netlink protocol over ``AF_NETLINK``/``NETLINK_NETFILTER``
with the stdlib only (linux/netfilter/nfnetlink.h and nfnetlink_queue.h): a nfnetlink
header after each netlink header, NFQNL_MSG_CONFIG to bind the queue (copy mode PACKET, 20
bytes: the IPv4 header, to count UDP), NFQNL_MSG_PACKET with NFQA_PACKET_HDR (the packet id) and
NFQA_PAYLOAD for each packet, NFQNL_MSG_VERDICT with NFQA_VERDICT_HDR {verdict, id} back.
Verdicts may come in any order (the kernel finds a packet by its id). It also echoes UDP datagrams on
the namespace's address: :class:`Impairment` probes through the pair with them and refuses to
start unless the round trip shows the added delay. On exit the rules go first, then the handler
(which accepts what it still holds) prints its counters, kept as :attr:`Impairment.stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netns import NetNs

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
IPPROTO_UDP = 17
NF_DROP, NF_ACCEPT = 0, 1
NF_INET_LOCAL_IN = 1  # the hook of a packet that came in on the veth end (else LOCAL_OUT: going out)
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")  # len, type


def _attr(kind: int, payload: bytes) -> bytes:
    size = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(size, kind) + payload + b"\0" * (-size % 4)


class NfQueue:
    """One bound NFQUEUE queue of this network namespace."""

    def __init__(self, num: int) -> None:
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 20, NFQNL_COPY_PACKET)))
        self.sock.setblocking(False)

    def _send(self, msg: int, attrs: bytes, flags: int) -> int:
        self.seq += 1
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, self.num) + attrs  # nfgenmsg: res_id = the queue
        head = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), NFNL_SUBSYS_QUEUE << 8 | msg, NLM_F_REQUEST | flags,
                              self.seq, 0)
        self.sock.send(head + body)
        return self.seq

    def _config(self, attrs: bytes) -> None:
        """A config message, its acknowledgement awaited (a refusal raises with the errno)."""
        seq = self._send(NFQNL_MSG_CONFIG, attrs, NLM_F_ACK)
        self.sock.settimeout(5)
        while True:
            data = self.sock.recv(65536)
            for kind, got, payload in _messages(data):
                if kind == NLMSG_ERROR and got == seq:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, f"NFQUEUE {self.num} config: {os.strerror(err)}")
                    return

    def unbind(self) -> None:
        self.sock.setblocking(True)
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET)))

    def packets(self) -> list[tuple[int, int, int]]:
        """(packet id, hook, IP protocol) of every packet waiting on the socket (none: empty)."""
        out: list[tuple[int, int, int]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            for kind, _, payload in _messages(data):
                if kind == NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET:
                    attrs = _attrs(payload[4:])  # after the nfgenmsg
                    packet_id, _, hook = struct.unpack_from("!IHB", attrs[NFQA_PACKET_HDR])
                    ip = attrs.get(NFQA_PAYLOAD, b"")
                    out.append((packet_id, hook, ip[9] if len(ip) > 9 else -1))

    def verdict(self, packet_id: int, verdict: int) -> None:
        self._send(NFQNL_MSG_VERDICT, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)), 0)


def _messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in one datagram."""
    out: list[tuple[int, int, bytes]] = []
    at = 0
    while at + NLMSG_HDR.size <= len(data):
        size, kind, _, seq, _ = NLMSG_HDR.unpack_from(data, at)
        out.append((kind, seq, data[at + NLMSG_HDR.size: at + size]))
        at += (size + 3) & ~3
    return out


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    at = 0
    while at + NLA_HDR.size <= len(data):
        size, kind = NLA_HDR.unpack_from(data, at)
        out[kind & 0x3FFF] = data[at + NLA_HDR.size: at + size]
        at += (size + 3) & ~3
    return out


@dataclass
class Stats:
    """What the handler did: packets seen (in: towards the namespace, out: from it), dropped, delayed."""

    seen: int = 0
    seen_in: int = 0
    seen_out: int = 0
    udp: int = 0  # of those seen: RTP/RTCP (livekit-server's media runs on UDP here), the probes
    dropped: int = 0
    delayed: int = 0
    hold_s: float = 0.0  # summed: from the packet's arrival at the handler to its accept verdict
    max_hold_s: float = 0.0
    overruns: int = 0  # ENOBUFS on the netlink socket: the kernel dropped packets the handler never saw

    @property
    def drop_fraction(self) -> float:
        return self.dropped / self.seen if self.seen else 0.0

    @property
    def mean_hold_s(self) -> float:
        return self.hold_s / self.delayed if self.delayed else 0.0

    def __str__(self) -> str:
        return (f"{self.seen} packets ({self.seen_in} in, {self.seen_out} out, {self.udp} UDP), {self.dropped} dropped "
                f"({100 * self.drop_fraction:.1f} %), {self.delayed} delayed by {1000 * self.mean_hold_s:.0f} ms "
                f"on average (max {1000 * self.max_hold_s:.0f} ms), {self.overruns} socket overruns")


def serve(num: int, loss: float, delay_s: float, jitter_s: float, seed: int, echo_host: str) -> None:
    """The handler: binds the queue, tells its echo port on stdout, runs until SIGTERM, prints the stats."""
    queue = NfQueue(num)
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind((echo_host, 0))
    echo.setblocking(False)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _: stopping.append(sig))
    print(json.dumps({"bound": num, "echo_port": echo.getsockname()[1]}), flush=True)
    rng, stats = random.Random(seed), Stats()
    held: list[tuple[float, int, float]] = []  # (release at, packet id, arrived at): a heap
    while not stopping:
        wait = min(0.2, max(0.0, held[0][0] - time.monotonic())) if held else 0.2
        ready, _, _ = select.select([queue.sock, echo], [], [], wait)
        if echo in ready:
            _echo(echo)
        if queue.sock in ready:
            _take(queue, stats, held, rng, (loss, delay_s, jitter_s))
        _release(queue, stats, held, time.monotonic())
    _release(queue, stats, held, float("inf"))
    queue.unbind()
    print(json.dumps(stats.__dict__), flush=True)


def _echo(sock: socket.socket) -> None:
    try:
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
    except BlockingIOError:
        return


def _take(queue: NfQueue, stats: Stats, held: list[tuple[float, int, float]], rng: random.Random,
          how: tuple[float, float, float]) -> None:
    loss, delay_s, jitter_s = how
    try:
        packets = queue.packets()
    except OSError as e:  # ENOBUFS: messages were lost; the socket goes on
        stats.overruns += 1
        if stats.overruns <= 5:  # (stderr is a pipe the test reads only at the end: never fill it)
            print(f"netem: {e}", file=sys.stderr, flush=True)
        return
    now = time.monotonic()
    for packet_id, hook, proto in packets:
        stats.seen += 1
        stats.udp += proto == IPPROTO_UDP
        if hook == NF_INET_LOCAL_IN:
            stats.seen_in += 1
        else:
            stats.seen_out += 1
        if rng.random() < loss:
            stats.dropped += 1
            queue.verdict(packet_id, NF_DROP)
        else:
            heapq.heappush(held, (now + max(0.0, rng.uniform(delay_s - jitter_s, delay_s + jitter_s)), packet_id, now))


def _release(queue: NfQueue, stats: Stats, held: list[tuple[float, int, float]], until: float) -> None:
    while held and held[0][0] <= until:
        _, packet_id, arrived = heapq.heappop(held)
        queue.verdict(packet_id, NF_ACCEPT)
        hold = time.monotonic() - arrived
        stats.delayed += 1
        stats.hold_s += hold
        stats.max_hold_s = max(stats.max_hold_s, hold)


# -- the test side ---------------------------------------------------------------------------------


def why_not() -> str | None:
    """Why this process cannot impair a namespace's link (None: it can)."""
    from netns import why_not as ns_why_not

    why = ns_why_not()
    if why is None and shutil.which("iptables") is None:
        why = "the iptables command is not installed: apt-get install iptables (scripts/setup --dev does)"
    return why


class Impairment:
    """Loss and delay jitter on ``ns``'s veth pair, both ways, while the ``with`` block runs (see above)."""

    def __init__(self, ns: NetNs, *, loss: float = 0.05, delay_s: float = 0.08, jitter_s: float = 0.04,
                 seed: int = 0) -> None:
        self.ns, self.loss, self.delay_s, self.jitter_s, self.seed = ns, loss, delay_s, jitter_s, seed
        self.queue = os.getpid() % 60000 + 1
        self.rules = [("INPUT", "-i"), ("OUTPUT", "-o")]
        self.added: list[tuple[str, str]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.echo_port = 0
        self.probe_rtt_s = 0.0  # the mean round trip of the probes at the start
        self.stats = Stats()

    def __enter__(self) -> Impairment:
        why = why_not()
        if why is not None:
            raise RuntimeError(f"cannot impair the link: {why}")
        try:
            self._start()
        except BaseException as e:
            self._stop(e)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._stop(exc)

    async def __aenter__(self) -> Impairment:
        """As ``with``, in a thread: the event loop runs on meanwhile (every step inside is bounded)."""
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await asyncio.to_thread(self.__exit__, kind, exc, tb)

    def _iptables(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ns.exec, "iptables", "-w", "10", *args], capture_output=True, text=True,
                              timeout=20, check=False)

    def _start(self) -> None:
        args = [str(self.queue), str(self.loss), str(self.delay_s), str(self.jitter_s), str(self.seed), self.ns.inner]
        self.proc = subprocess.Popen([*self.ns.exec, sys.executable, os.path.abspath(__file__), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            err = self.proc.communicate(timeout=10)[1]
            raise RuntimeError(f"the NFQUEUE handler did not bind queue {self.queue} within 15 s: {err.strip()}")
        self.echo_port = int(json.loads(line)["echo_port"])
        for chain, side in self.rules:
            out = self._iptables("-I", chain, side, self.ns.inner_if, "-j", "NFQUEUE", "--queue-num", str(self.queue))
            if out.returncode != 0:
                raise RuntimeError(f"iptables -I {chain} ... -j NFQUEUE in {self.ns.name}: {out.stderr.strip()}")
            self.added.append((chain, side))
        got, self.probe_rtt_s = self.probe()
        if got == 0 or (self.delay_s > 0 and self.probe_rtt_s < 1.5 * self.delay_s):
            raise RuntimeError(f"the impairment is not in effect: {got} of 20 probes came back, their mean "
                               f"round trip {1000 * self.probe_rtt_s:.1f} ms (2 x {1000 * self.delay_s:.0f} ms "
                               "added expected)")

    def probe(self, n: int = 20, wait_s: float = 2.0) -> tuple[int, float]:
        """UDP probes to the handler's echo port across the pair: (how many came back, their mean round trip)."""
        rtts: list[float] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((self.ns.inner, self.echo_port))
            sent: dict[int, float] = {}
            for i in range(n):
                sent[i] = time.monotonic()
                s.send(struct.pack("!I", i))
            deadline = time.monotonic() + wait_s
            while len(rtts) < n and (left := deadline - time.monotonic()) > 0:
                if select.select([s], [], [], left)[0]:
                    (i,) = struct.unpack("!I", s.recv(64)[:4])
                    rtts.append(time.monotonic() - sent.pop(i))
        return len(rtts), sum(rtts) / len(rtts) if rtts else 0.0

    def _stop(self, exc: BaseException | None) -> None:
        """The rules go, then the handler: it accepts what it holds and prints its counters. A failure
        here raises, unless ``exc`` is already on its way (then it goes to stderr, and ``exc`` on)."""
        failed = []
        for chain, side in reversed(self.added):
            done = self._iptables("-D", chain, side, self.ns.inner_if, "-j", "NFQUEUE", "--queue-num", str(self.queue))
            if done.returncode != 0:
                failed.append(f"iptables -D {chain}: {done.stderr.strip()}")
        self.added.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        if self.proc is not None:
            try:
                out, err = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate(timeout=10)
            lines = out.strip().splitlines()
            if self.proc.returncode == 0 and lines:
                self.stats = Stats(**json.loads(lines[-1]))
            else:
                failed.append(f"the NFQUEUE handler exited with {self.proc.returncode}: {err.strip()[-2000:]}")
            self.proc = None
        if failed and exc is None:
            raise RuntimeError("; ".join(failed))
        if failed and exc is not None:
            print(f"cleaning up the impairment after {exc!r}: " + "; ".join(failed), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="NFQUEUE handler of tests/netem.py (run inside the namespace)")
    for name, kind in (("queue", int), ("loss", float), ("delay_s", float), ("jitter_s", float), ("seed", int),
                       ("echo_host", str)):
        p.add_argument(name, type=kind)
    a: Any = p.parse_args(argv)
    os.nice(-10)  # the delays are only as exact as this process's timers: ahead of the test's models
    serve(a.queue, a.loss, a.delay_s, a.jitter_s, a.seed, a.echo_host)


if __name__ == "__main__":
    main()
