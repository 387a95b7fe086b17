"""sd_notify: telling the service manager what the agent is doing (``$NOTIFY_SOCKET``).

    notifier = Notifier.from_env()         # None when not started by systemd (no NOTIFY_SOCKET)
    notifier.send(READY=1, STATUS="listening")

Messages are newline-separated ``KEY=VALUE`` assignments in one datagram (sd_notify(3)):
``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``, ``WATCHDOG=1``. With
systemd-python installed, :func:`systemd.daemon.notify` sends them (libsystemd's own
code); without it (a Jetson image without the libsystemd headers to build it) the
datagram is sent here: an ``AF_UNIX``/``SOCK_DGRAM`` socket to the path in
``NOTIFY_SOCKET``, or to the abstract-namespace name when it starts with ``@``.

Sending never raises: the service manager may be gone at shutdown, and a failed
notification must not stop the agent (it is logged once).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("auto", "systemd", "socket")


def format_message(fields: Mapping[str, Any]) -> str:
    """``{"READY": 1, "STATUS": "idle"}`` → ``"READY=1\\nSTATUS=idle"``; newlines in values become spaces."""
    lines = []
    for key, value in fields.items():
        if not key or not key.replace("_", "").isalnum() or not key.isupper():
            raise ValueError(f"not a notification field name: {key!r}")
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines)


def socket_address(value: str) -> str | bytes:
    """The address of ``$NOTIFY_SOCKET``: a path, or an abstract name (``@name`` → ``b"\\0name"``)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if not value.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET={value!r}: expected an absolute path or @name")
    return value


class Notifier:
    """Sends notifications to one socket; see the module docs.

    ``backend``: ``systemd`` (systemd-python; it reads ``NOTIFY_SOCKET`` itself),
    ``socket`` (the datagram sent here) or ``auto`` (systemd-python when importable).
    """

    def __init__(self, address: str, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        self.address = address
        self._target = socket_address(address)
        self._daemon: Any = None
        if backend in ("auto", "systemd"):
            try:
                self._daemon = importlib.import_module("systemd.daemon")
            except ImportError:
                if backend == "systemd":
                    raise
        self.backend = "systemd" if self._daemon is not None else "socket"
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, backend: str = "auto") -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when it is not set (not under systemd)."""
        value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        if not value:
            return None
        try:
            return cls(value, backend)
        except ValueError as exc:
            log.warning("sd_notify is off: %s", exc)
            return None

    def send(self, **fields: Any) -> bool:
        """Send one message; True when it went out."""
        message = format_message(fields)
        try:
            if self._daemon is not None and os.environ.get("NOTIFY_SOCKET") == self.address:
                ok = bool(self._daemon.notify(message))
                if not ok:
                    raise OSError("sd_notify() returned false")
            else:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode(), self._target)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed (%s); further failures are not logged", self.address, exc)
                self._failed = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def reloading(self, monotonic_usec: int) -> bool:
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec, STATUS="reloading the config file")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StatusThrottle:
    """``STATUS=`` through ``notifier`` at most once every ``interval_s``: a change within that time
    waits for its end, and only the latest one is sent then; a text already shown is not sent again.
    Call it on the event loop."""

    def __init__(self, notifier: Notifier, interval_s: float) -> None:
        self.notifier, self.interval_s = notifier, interval_s
        self._sent: str | None = None
        self._last = float("-inf")
        self._pending: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def status(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._pending = text
            return
        if text == self._sent:
            return
        wait = self._last + self.interval_s - loop.time()
        if wait <= 0:
            self._send(text, loop.time())
            return
        self._pending = text
        self._timer = loop.call_later(wait, self._flush)

    def _send(self, text: str, now: float) -> None:
        self._sent, self._last = text, now
        self.notifier.status(text)

    def _flush(self) -> None:
        self._timer = None
        text, self._pending = self._pending, None
        if text is not None and text != self._sent:
            self._send(text, asyncio.get_running_loop().time())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
