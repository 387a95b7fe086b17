"""Durable file replacement: a crash or a power cut leaves the old file or the new one, never a mix.

The new content goes to a temp file in the same directory (mode 0600, it may
hold secrets), is flushed and fsynced, renamed over the old file, and the
directory is fsynced so that the rename itself survives a power cut. A crash
before the rename leaves a stray temp file, which :func:`remove_strays` clears.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def fsync_dir(directory: Path) -> None:
    """Make the renames and unlinks done in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync of the directory."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Delete ``path`` (if there) and make the deletion durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def remove_strays(path: Path) -> list[Path]:
    """Delete the temp files a crash left behind while writing ``path``; returns them."""
    strays = sorted(path.parent.glob(f"{_temp_prefix(path)}*{TEMP_SUFFIX}"))
    for stray in strays:
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()
    if strays:
        fsync_dir(path.parent)
    return strays
