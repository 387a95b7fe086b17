"""Logging to the systemd journal, with structured fields, when systemd runs the agent.

    setup_logging(cfg)          # once, after the config is loaded; again after a reload
    log.info("turn done", extra={"TURN_ID": "ab12", "E2E_LATENCY_MS": 640})

:class:`JournalHandler` sends each record as one journal entry: ``MESSAGE``, ``PRIORITY``
(syslog level), ``SYSLOG_IDENTIFIER=edgeagent``, ``LOGGER``, ``CODE_FILE``/``CODE_LINE``/
``CODE_FUNC``, plus every upper-case ``extra`` of the record (``STATE``, ``TURN_ID``,
``E2E_LATENCY_MS``...), so ``journalctl -u edgeagent STATE=speaking`` or ``-o json`` finds them.
It uses systemd-python's :func:`systemd.journal.send` when that is installed and the socket
is the standard one, else the native protocol itself (systemd.journal-native(7)): fields as
``KEY=value\\n``, or ``KEY\\n`` + 64-bit little-endian length + value + ``\\n`` when the value
has a newline, in one datagram to ``/run/systemd/journal/socket``; an entry too big for a
datagram goes in a sealed memfd passed with ``SCM_RIGHTS``. The socket is
``logging.journal_socket`` (a test listens on its own).

``logging.target = auto`` logs to the journal when systemd started the agent with its
stderr on the journal (``JOURNAL_STREAM`` names stderr's device and inode), or as a
service (``INVOCATION_ID``) with the journal socket present; otherwise to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import IO, Any

from edgeagent.config import Config
from edgeagent.config.device import LoggingConfig

IDENTIFIER = "edgeagent"
DEFAULT_SOCKET = LoggingConfig().journal_socket
_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]*")
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (3 err, 4 warning, 6 info, 7 debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode(fields: Mapping[str, Any]) -> bytes:
    """One journal entry in the native protocol (see the module docs)."""
    out = bytearray()
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        name = key.encode("ascii")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


def record_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """The journal fields of ``record`` (``message`` is its formatted text)."""
    fields: dict[str, Any] = {
        "MESSAGE": message,
        "PRIORITY": priority(record.levelno),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
    }
    if record.threadName and record.threadName != "MainThread":
        fields["THREAD_NAME"] = record.threadName
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and _FIELD.fullmatch(key) and value is not None:
            fields[key] = value
    return fields


class JournalHandler(logging.Handler):
    """A logging handler that writes to the journal; see the module docs."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, use_systemd_python: bool | None = None,
                 fallback: IO[str] | None = None) -> None:
        super().__init__()
        self.socket_path = socket_path
        self._send: Any = None
        if use_systemd_python is None:
            use_systemd_python = socket_path == DEFAULT_SOCKET
        if use_systemd_python:
            with contextlib.suppress(ImportError):
                self._send = importlib.import_module("systemd.journal").send
        self.backend = "systemd" if self._send is not None else "socket"
        self._sock: socket.socket | None = None
        self._fallback = fallback
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            fields = record_fields(record, message)
            if self._send is not None:
                text = fields.pop("MESSAGE")
                # journal.send formats CODE_LINE with %d; every other value goes as text.
                self._send(text, **{k: v if k == "CODE_LINE" else str(v) for k, v in fields.items()})
            else:
                self._send_native(encode(fields))
        except OSError as exc:
            self._fail(record, exc)
        except Exception:
            self.handleError(record)

    def _send_native(self, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(data, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        """An entry too big for one datagram: in a sealed memfd, passed with SCM_RIGHTS."""
        assert self._sock is not None
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0,
                               self.socket_path)
        finally:
            os.close(fd)

    def _fail(self, record: logging.LogRecord, exc: OSError) -> None:
        stream = self._fallback or sys.stderr
        if not self._failed:
            self._failed = True
            stream.write(f"edgeagent: cannot log to the journal at {self.socket_path} ({exc}); "
                         "logging to stderr instead\n")
        with contextlib.suppress(Exception):
            stream.write(logging.Formatter(FORMAT).format(record) + "\n")
            stream.flush()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


def journal_wanted(cfg: LoggingConfig, env: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """Should the logs go to the journal? (``logging.target``; see the module docs for ``auto``)."""
    if cfg.target != "auto":
        return cfg.target == "journal"
    env = os.environ if env is None else env
    if stream_is_journal(stderr_fd, env):
        return True
    return bool(env.get("INVOCATION_ID")) and os.path.exists(cfg.journal_socket)


def stream_is_journal(fd: int, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``fd`` is the stream systemd connected to the journal (``JOURNAL_STREAM`` = device:inode)."""
    stream = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(cfg: Config, env: Mapping[str, str] | None = None) -> logging.Handler | None:
    """The root logger at ``cfg.log_level``, writing to the journal when :func:`journal_wanted`.

    Returns the journal handler put in place (None: the stderr handler stays). Called
    again (a reload), it changes the level; the target stays as it was.
    """
    root = logging.getLogger()
    root.setLevel(cfg.log_level.upper())
    current = next((h for h in root.handlers if isinstance(h, JournalHandler)), None)
    if current is not None or not journal_wanted(cfg.logging, env):
        return current
    handler = JournalHandler(cfg.logging.journal_socket)
    handler.setFormatter(logging.Formatter("%(message)s"))  # the journal has the time, level and logger
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)
    return handler
