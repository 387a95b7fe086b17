"""``edgeagent models list | pull | verify | path``: the model manager's command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

from edgeagent.model_files import fetch as model_fetch
from edgeagent.model_files import manifest as model_manifest
from edgeagent.paths import models_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="list, fetch and check model files",
        description="Manage the model files listed in the manifest shipped with edgeagent (EDGEAGENT_MANIFEST"
        " overrides it). The models directory"
        " is EDGEAGENT_MODELS, else $STATE_DIRECTORY/models (service), else"
        " ~/.local/share/edgeagent/models; --dir overrides it.")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    parser.set_defaults(func=lambda _args: _usage(parser))

    def add(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        p.add_argument("--dir", type=Path, default=None, metavar="DIR",
                       help="models directory (default: $EDGEAGENT_MODELS or the user data dir)")
        p.set_defaults(func=func)
        return p

    p = add("list", "show every model in the manifest and whether it is installed", _list)
    p.add_argument("--markdown", action="store_true",
                   help="the README's table of models and licences instead (no install status)")
    p = add("pull", "fetch models (default: the default set), check them, install atomically",
            _pull)
    p.add_argument("names", nargs="*", metavar="NAME", help="models to fetch")
    p.add_argument("--all", action="store_true", help="every model in the manifest")
    p.add_argument("--allow-unverified", action="store_true",
                   help="also fetch files with no sha256 pinned (prints the sha256 to pin)")
    p = add("verify", "check size and sha256 of installed models; exit 1 on any bad file",
            _verify)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="models to check (default: the default set and any installed model)")
    p = add("path", "print where a model lives (its file, or its directory)", _path)
    p.add_argument("name", metavar="NAME")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def licence_table(manifest: model_manifest.Manifest) -> str:
    """The README's "Models and licences" table (Markdown); non-commercial licences flagged."""
    lines = ["| Model | Stage | Default | Size | Licence | What it is |", "|---|---|---|---|---|---|"]
    for m in manifest.models:
        licence = f"`{m.licence}`"
        if "-NC" in m.licence.upper():
            licence += " **non-commercial**"
        size = model_fetch.human(m.size) if m.size else "?"
        lines.append(f"| `{m.name}` | {m.stage} | {'yes' if m.default else 'no'} | {size} | {licence} "
                     f"| {m.description} |")
    return "\n".join(lines) + "\n"


def _list(args: argparse.Namespace) -> int:
    manifest = model_manifest.load_manifest()
    if args.markdown:
        print(licence_table(manifest), end="")
        return 0
    root = args.dir or models_dir()
    rows = [("NAME", "STAGE", "DEFAULT", "STATUS", "SIZE", "LICENCE")]
    for m in manifest.models:
        size = model_fetch.human(m.size) if m.size else "?"
        rows.append((m.name, m.stage, "yes" if m.default else "no",
                     model_manifest.model_status(m, root), size, m.licence))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    print(f"\nmodels directory: {root} (status by size; `edgeagent models verify` checks sha256)")
    return 0


def _pull(args: argparse.Namespace) -> int:
    root = args.dir or models_dir()
    written = model_fetch.pull(args.names, root, StderrProgress(), all_models=args.all,
                          allow_unverified=args.allow_unverified)
    print(f"{len(written)} file(s) written; models are in {root}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    manifest = model_manifest.load_manifest()
    targets = model_manifest.verify_targets(args.names, args.dir, manifest)
    problems = model_manifest.verify(args.names, args.dir, manifest)
    bad = {p.model for p in problems}
    for m in targets:
        if m.name not in bad:
            note = "" if m.pinned else " (not pinned: presence checked only)"
            print(f"ok  {m.name} ({len(m.files)} file{'s' if len(m.files) > 1 else ''}){note}")
    for p in problems:
        print(f"edgeagent: {p}", file=sys.stderr)
    return 1 if problems else 0


def _path(args: argparse.Namespace) -> int:
    print(model_manifest.model_path(args.name, args.dir))
    return 0


class StderrProgress:
    """One redrawn line on a terminal; a line every few seconds in a log."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._label = ""
        self._pending = False

    def message(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self._pending else "") + text + "\n")
        self.stream.flush()
        self._pending = False

    def advance(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if label != self._label:  # a new file: first line after one interval, so
            self._label, self._last = label, now  # quick files print no progress
        if now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        pct = f" {100 * done / total:5.1f}%" if total else ""
        line = f"  {label}: {model_fetch.human(done)} / {model_fetch.human(total) if total else '?'}{pct}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._pending = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
