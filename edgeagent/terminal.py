"""What the commands show in a terminal: exit codes, the log options, each turn once.

stdout carries what a command produces (``run``: the transcript, ``user: ...``,
``agent: ...`` and ``metrics: ...`` per turn, and its progress lines); stderr carries the
log and every error. The session logs each turn too (for the journal, and for ``join``
and ``web``, which print no transcript); those records carry ``transcript`` (see
:data:`edgeagent.voice.events.TRANSCRIPT`), and ``run`` drops them from the stderr log so
that a terminal shows each line once. Under systemd the log goes to the journal with its
fields (``TURN_ID``, ``E2E_LATENCY_MS``...); when stdout is the journal too (a service's
default ``StandardOutput=journal``), ``run`` prints no transcript: the journal holds each
turn once, as the log record.

Stdlib only: imported by the parser.
"""

from __future__ import annotations

import argparse
import logging
import sys

#: The exit status of every command.
OK, FAILED, USAGE, NOT_INSTALLED, INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = f"""exit status:
  {OK}    done (also: the agent stopped with Ctrl-C, SIGTERM or a stop word)
  {FAILED}    failed at run time: a sound device, a model, the network, a file
  {USAGE}    usage: a wrong command line or config setting; nothing was started
  {NOT_INSTALLED}    `edgeagent service status`: the service is not installed
  {INTERRUPTED}  interrupted (Ctrl-C) before the agent had started"""

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``--log-level`` for a command that reads the config (its ``log_level``)."""
    group = parser.add_argument_group("log output (stderr, or the journal under systemd)")
    # SUPPRESS: a value given before the command (edgeagent -v run) is not reset by the subparser.
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="log debug messages too (--log-level debug)")
    group.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                       help="the least severe messages logged (default: the config's log_level, info)")
    parser.set_defaults(log_options=True)
    if parser.epilog is None:  # the commands that run something: their help shows the exit codes
        parser.epilog = EXIT_CODES


def log_level_override(args: argparse.Namespace) -> str | None:
    """``log_level=...`` as a config override when ``--log-level`` or ``-v`` was given."""
    if not getattr(args, "log_options", False):
        return None
    level = getattr(args, "log_level", None) or ("debug" if getattr(args, "verbose", 0) else None)
    return f"log_level={level}" if level else None


class HideTranscript(logging.Filter):
    """Drops the log records that repeat a line the transcript on stdout shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "transcript", False)


def hide_transcript_in_log() -> None:
    """On every handler of the root logger (stderr in a terminal): the turns are on stdout."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, HideTranscript) for f in handler.filters):
            handler.addFilter(HideTranscript())


def stdout_is_journal() -> bool:
    """Whether stdout is the journal stream systemd connected (a service's default); False
    for a stdout without a file descriptor (embedded, captured)."""
    from edgeagent.device.journal import stream_is_journal

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # None, or io.UnsupportedOperation
        return False
    return stream_is_journal(fd)
