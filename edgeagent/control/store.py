"""The durable remote config: the file config plus an overlay of remote changes, with revisions.

The user's TOML file is never rewritten (it keeps its comments). Remote changes
live in ``remote-config.json`` in the state directory
(:func:`edgeagent.paths.state_dir`)::

    {"version": 1, "revision": 7, "patch": {"tts": {"speed": 1.2}, "llm": {"model": null}}}

``patch`` is a JSON merge patch relative to the file config (``null``: the
default, whatever the file says). Every write is atomic
(:mod:`edgeagent.control.atomic`) with mode 0600, as it may hold secrets. After
a change was applied, the same document is also written to
``remote-config.good.json``, the last-known-good. At start an overlay that
cannot be used (edited by hand, or no longer fitting an edited config file) is
moved aside to ``remote-config.rejected.json`` and the last-known-good is used
instead, else the file config alone, with one log line saying which.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from edgeagent.config import Config, to_dict
from edgeagent.control.atomic import remove_durably, remove_strays, write_atomic
from edgeagent.control.errors import ControlError
from edgeagent.control.patch import Change, build, check_patch, compose, diff, redact
from edgeagent.paths import state_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
OVERLAY_NAME = "remote-config.json"

ApplyHook = Callable[[Config, list[Change]], Awaitable[None] | None]
"""Puts a new config into effect; raising rolls the change back."""


class _Unusable(Exception):
    """An overlay document that cannot be used; the message says why."""

    def __init__(self, reason: str, revision: int | None = None) -> None:
        super().__init__(reason)
        self.revision = revision


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode(revision: int, patch: Mapping[str, Any]) -> bytes:
    """The overlay document, as written to disk."""
    doc = {"version": FORMAT_VERSION, "revision": revision, "patch": patch}
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def decode(base: Config, data: bytes) -> tuple[int, dict[str, Any], Config]:
    """``(revision, checked patch, effective config)`` of an overlay document; raises _Unusable."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Unusable(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"version", "revision", "patch"}:
        raise _Unusable("expected an object with version, revision and patch")
    revision = doc["revision"]
    if type(revision) is not int or revision < 0:
        raise _Unusable(f"bad revision {revision!r}")
    if doc["version"] != FORMAT_VERSION or type(doc["version"]) is not int:
        raise _Unusable(f"unknown format version {doc['version']!r}", revision)
    try:
        # Secrets are accepted here: they were allowed when they were written, and
        # control.allow_secrets guards remote calls, not this 0600 file.
        patch = check_patch(base, doc["patch"], allow_secrets=True)
        effective = build(base, patch)
    except ControlError as exc:
        raise _Unusable(str(exc), revision) from None
    return revision, patch, effective


_WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeagent-config")


async def _write(path: Path, data: bytes) -> None:
    """:func:`write_atomic` off the event loop (an fsync on an SD card can take 100 ms).

    Cancelled, it still waits for the write to end before raising, so that the
    caller knows what is on disk.
    """
    job = _WRITER.submit(write_atomic, path, data)
    try:
        await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        concurrent.futures.wait([job])  # a few ms at most: the write is already under way
        raise


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class ConfigStore:
    """The config in effect (file config + remote overlay), its revision, and durable changes.

    Build it with :meth:`open`. One store per device process; :meth:`set` calls are
    serialised, so two controllers that both start from revision N cannot both win.
    """

    def __init__(self, base: Config, path: Path, revision: int, overlay: dict[str, Any],
                 effective: Config, *, on_disk: bool, good_revision: int | None) -> None:
        self._base = base
        self.path = path
        self._revision = revision
        self._overlay = overlay
        self._config = effective
        self._on_disk = on_disk
        self._good_revision = good_revision
        self._lock = asyncio.Lock()

    @property
    def good_path(self) -> Path:
        """The last-known-good overlay, next to the overlay."""
        return self.path.with_name(self.path.name.removesuffix(".json") + ".good.json")

    @property
    def rejected_path(self) -> Path:
        """Where an unusable overlay is moved at start, for a person to look at."""
        return self.path.with_name(self.path.name.removesuffix(".json") + ".rejected.json")

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, base: Config, path: Path | None = None) -> ConfigStore:
        """Load the overlay at ``path`` (default: ``<state dir>/remote-config.json``) over ``base``.

        Stray temp files from a crash are removed. An unusable overlay falls back to
        the last-known-good, then to ``base`` alone, with one warning in the log.
        """
        path = path or state_dir() / OVERLAY_NAME
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = cls(base, path, 0, {}, base, on_disk=False, good_revision=None)
        for stray in remove_strays(path) + remove_strays(store.good_path):
            log.info("removed %s, left by an interrupted write", stray)
        good = _read(store.good_path)
        good_state: tuple[int, dict[str, Any], Config] | None = None
        good_problem = "there is none"
        if good is not None:
            try:
                good_state = decode(base, good)
                store._good_revision = good_state[0]
            except _Unusable as exc:
                good_problem = f"unusable too ({exc})"
        data = _read(path)
        if data is None:
            return store
        try:
            revision, overlay, effective = decode(base, data)
        except _Unusable as exc:
            store._fall_back(exc, good_state, good_problem)
            return store
        store._revision, store._overlay, store._config, store._on_disk = revision, overlay, effective, True
        return store

    def _fall_back(self, bad: _Unusable, good: tuple[int, dict[str, Any], Config] | None,
                   good_problem: str) -> None:
        os.replace(self.path, self.rejected_path)
        with contextlib.suppress(OSError):
            os.chmod(self.rejected_path, 0o600)
        # A new revision: what is in effect now is neither what controllers saw last.
        revision = max(bad.revision or 0, good[0] if good else 0) + 1
        overlay, effective = (good[1], good[2]) if good else ({}, self._base)
        write_atomic(self.path, encode(revision, overlay))
        self._revision, self._overlay, self._config, self._on_disk = revision, overlay, effective, True
        if good:
            self._good_revision = revision
            write_atomic(self.good_path, encode(revision, overlay))
            using = f"the last-known-good {self.good_path.name} (revision {good[0]}, now {revision})"
        else:
            using = f"the config file alone (last-known-good: {good_problem})"
        log.warning("remote config %s is unusable (%s): using %s; the rejected file is %s",
                    self.path, bad, using, self.rejected_path)

    # -- reading ---------------------------------------------------------------------------

    @property
    def base(self) -> Config:
        """The file config (TOML, env and --set), without the remote changes."""
        return self._base

    @property
    def config(self) -> Config:
        """The config in effect: the file config with the remote changes."""
        return self._config

    @property
    def revision(self) -> int:
        """Increments with every accepted change; 0 before the first."""
        return self._revision

    @property
    def overlay(self) -> dict[str, Any]:
        """The remote changes as a merge patch over the file config (holds secrets: never send it)."""
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self._overlay.items()}

    @property
    def unconfirmed(self) -> bool:
        """True when the overlay in effect was written but its apply hook never returned (a
        crash in between): the last-known-good may be the safer choice."""
        return self._on_disk and self._good_revision != self._revision

    def get(self) -> dict[str, Any]:
        """``{"revision": N, "config": {...}}`` with every set secret shown as ``***``."""
        return {"revision": self._revision, "config": redact(to_dict(self._config))}

    # -- changing --------------------------------------------------------------------------

    async def set(self, patch: Any, base_revision: int | None,
                  apply: ApplyHook | None = None) -> tuple[int, list[Change]]:
        """Check ``patch``, write it durably, put it into effect; ``(new revision, changes)``.

        ``base_revision`` is the revision the caller's change is based on; if the config
        moved on since, :class:`ControlError` ``stale_revision`` (with the current
        revision) is raised and nothing changes. None skips that check (a local tool's
        "last writer wins"). ``apply(new_config, changes)`` puts the change into effect;
        if it raises, the old overlay is restored on disk and in memory and
        :class:`ControlError` ``apply_failed`` is raised. A patch that changes nothing
        returns the current revision and no changes, and writes nothing.
        """
        async with self._lock:
            if base_revision is not None and base_revision != self._revision:
                raise ControlError.one(
                    "base_revision", "stale_revision",
                    f"the config is at revision {self._revision}, not {base_revision}: "
                    "get it again and redo the change", revision=self._revision)
            checked = check_patch(self._config, patch, allow_secrets=self._base.control.allow_secrets)
            overlay = compose(self._overlay, checked)
            effective = build(self._base, overlay)
            changes = diff(self._config, effective)
            if not changes:
                return self._revision, []
            old = (self._revision, self._overlay, self._config, self._on_disk)
            revision = self._revision + 1
            document = encode(revision, overlay)
            try:
                await _write(self.path, document)
            except asyncio.CancelledError:
                self._restore(*old)  # the new overlay may have reached the disk: put the old one back
                raise
            except OSError as exc:  # the old overlay is still in place
                raise ControlError.one("", "write_failed", f"the change could not be saved: {exc}",
                                       revision=self._revision) from exc
            self._revision, self._overlay, self._config, self._on_disk = revision, overlay, effective, True
            try:
                if apply is not None:
                    result = apply(effective, changes)
                    if inspect.isawaitable(result):
                        await result
            except BaseException as exc:
                self._restore(*old)
                if not isinstance(exc, Exception):
                    raise
                log.warning("remote config change to revision %d failed to apply and was rolled back: %s",
                            revision, exc)
                raise ControlError.one(
                    "", "apply_failed", f"the change could not be applied and was rolled back: {exc}",
                    revision=self._revision) from exc
            try:
                await _write(self.good_path, document)
                self._good_revision = revision
            except OSError as exc:  # the change is in effect and saved; only the backup is behind
                log.warning("could not save %s as the last-known-good: %s", self.good_path, exc)
            return revision, changes

    async def rebase(self, base: Config, apply: ApplyHook | None = None) -> list[Change]:
        """A new file config (the file was edited, SIGHUP): the remote changes apply over it now.

        ``apply(new_config, changes)`` puts it into effect; if it raises, or the remote changes
        do not fit the new file config (:class:`ControlError`), nothing changes. The overlay
        and its revision stay as they are. Returns the changes of the config in effect.
        """
        async with self._lock:
            patch = check_patch(base, self._overlay, allow_secrets=True)
            effective = build(base, patch)
            changes = diff(self._config, effective)
            if apply is not None and changes:
                result = apply(effective, changes)
                if inspect.isawaitable(result):
                    await result
            self._base, self._overlay, self._config = base, patch, effective
            return changes

    async def flush(self) -> None:
        """Until a change being made has been written (and applied, or rolled back): before exit."""
        async with self._lock:
            await asyncio.wrap_future(_WRITER.submit(lambda: None))

    def _restore(self, revision: int, overlay: dict[str, Any], effective: Config, on_disk: bool) -> None:
        # Synchronous on purpose: it must finish even when the task is being cancelled.
        self._revision, self._overlay, self._config, self._on_disk = revision, overlay, effective, on_disk
        try:
            if on_disk:
                write_atomic(self.path, encode(revision, overlay))
            else:
                remove_durably(self.path)
        except OSError as exc:
            log.error("could not restore %s to revision %d (%s): the next start may use the change that "
                      "failed; the last-known-good is %s", self.path, revision, exc, self.good_path)
