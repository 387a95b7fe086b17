"""Remote configuration of the device, the core without any LiveKit code.

- :mod:`edgeagent.control.keys`: what may be changed remotely (allow-list, ranges,
  secrets, which changes need a reload) and the schema controllers are given.
- :mod:`edgeagent.control.patch`: parsing a request and checking and applying a JSON
  merge patch, pure functions; every problem is a structured
  :class:`~edgeagent.control.errors.ControlError`.
- :mod:`edgeagent.control.store`: :class:`~edgeagent.control.store.ConfigStore`, the
  revisioned overlay of remote changes, written atomically with a last-known-good.
- :mod:`edgeagent.control.atomic`: temp file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

from edgeagent.control.errors import ControlError, Problem
from edgeagent.control.keys import NEEDS_RELOAD, SECRETS, SETTABLE, redact, schema
from edgeagent.control.patch import PROTOCOL_VERSION, Change, apply_patch, parse_payload, parse_set_request
from edgeagent.control.store import ConfigStore

__all__ = [
    "NEEDS_RELOAD", "PROTOCOL_VERSION", "SECRETS", "SETTABLE",
    "Change", "ConfigStore", "ControlError", "Problem",
    "apply_patch", "parse_payload", "parse_set_request", "redact", "schema",
]
