"""A private loopback livekit-server for benchmarks and tests that need one of their own.

:func:`start_server` builds (or reuses) the pinned binary with
``scripts/install-livekit-server`` and starts it on 127.0.0.1 with free ports and a
fresh secret, as ``scripts/test`` starts the shared one.
:meth:`Server.kill` ends it abruptly (SIGKILL: a crash or a power cut of the server),
:meth:`Server.restart` starts it again on the same ports with the same keys, so clients
that knew the old one can come back.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgeagent.errors import EdgeAgentError

START_TIMEOUT_S = 30.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    api_key: str
    api_secret: str
    process: subprocess.Popen[bytes] | None = None
    binary: Path | None = None
    config: Path | None = None
    log_path: Path | None = None
    prefix: tuple[str, ...] = ()
    """What the binary is started under (e.g. ``ip netns exec NAME``: a network namespace)."""

    def token(self, identity: str, room: str) -> str:
        """A join token for ``identity`` in ``room`` (a test participant's: room_join only)."""
        from livekit import api

        return (api.AccessToken(self.api_key, self.api_secret).with_identity(identity)
                .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s); nothing when it is not running."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def kill(self) -> None:
        """SIGKILL: the server goes without closing anything (no leave, no room close)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> None:
        """Start it again on the same ports with the same keys (after :meth:`kill` or :meth:`stop`)."""
        if self.binary is None or self.config is None or self.log_path is None:
            raise EdgeAgentError("this server was not started here: it cannot be restarted")
        self.stop()
        self.process = _launch(self.binary, self.config, self.log_path, self.prefix)
        _wait_up(self)


def _launch(binary: Path, conf: Path, log_path: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen([*prefix, str(binary), "--config", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _wait_up(server: Server) -> None:
    assert server.process is not None
    http = "http" + server.url.removeprefix("ws")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise EdgeAgentError(f"livekit-server exited at start (log: {server.log_path})")
        with contextlib.suppress(OSError), opener.open(f"{http}/", timeout=1) as r:
            if r.read().strip() == b"OK":
                return
        time.sleep(0.1)
    server.stop()
    raise EdgeAgentError(f"livekit-server did not answer within {START_TIMEOUT_S:.0f} s (log: {server.log_path})")


def start_server(root: Path, workdir: Path, *, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()) -> Server:
    """livekit-server on 127.0.0.1 (free ports, a fresh secret, config and log in ``workdir``);
    EdgeAgentError if it cannot be built or does not come up.

    ``host`` and ``prefix``: listen on that address instead, started under ``prefix``, e.g.
    ``ip netns exec NAME`` and the namespace's end of a veth pair (its ports are then free
    whatever this namespace uses)."""
    try:
        binary = subprocess.run([str(root / "scripts" / "install-livekit-server")], capture_output=True,
                                text=True, check=True, timeout=900).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        raise EdgeAgentError(f"cannot get livekit-server (scripts/install-livekit-server): {exc}") from exc
    port, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    secret = os.urandom(32).hex()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "livekit.yaml"
    conf.write_text(
        f"port: {port}\nbind_addresses: [{host}]\nkeys: {{devkey: {secret}}}\n"
        f"rtc:\n  udp_port: {udp}\n  tcp_port: 0\n  node_ip: {host}\n  use_external_ip: false\n"
        f"  enable_loopback_candidate: true\n  ips: {{includes: [{host}/32]}}\n"
        f'  stun_servers: ["{host}:3478"]\nlogging: {{level: info}}\n')
    conf.chmod(0o600)
    log_path = workdir / "livekit-server.log"
    server = Server(f"ws://{host}:{port}", "devkey", secret, _launch(Path(binary), conf, log_path, prefix),
                    Path(binary), conf, log_path, prefix)
    _wait_up(server)
    return server
