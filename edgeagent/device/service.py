"""``edgeagent service install | uninstall | status``: edgeagent as a systemd system service.

    sudo scripts/install-service                 # = edgeagent service install, with this checkout's .venv
    edgeagent service status
    sudo edgeagent service uninstall [--purge]

``install`` lays out (under ``--root``, default ``/``):

- ``/etc/sysusers.d/edgeagent.conf`` and the ``edgeagent`` system user it declares, in the
  groups ``audio`` and ``gpio`` (``systemd-sysusers``; a missing ``gpio`` group is made);
- ``/etc/edgeagent/config.toml``: the commented config template (``edgeagent config
  example``), mode 0640 root:edgeagent, only where there is no config file yet;
- ``/var/lib/edgeagent/models``: the default models (copied from ``--models-from`` where they
  are already, e.g. the ones ``scripts/setup`` pulled, else fetched), checked by sha256,
  owned by edgeagent; ``/var/cache/edgeagent``;
- ``/etc/systemd/system/edgeagent.service``: the unit (``edgeagent/data/edgeagent.service``)
  with ``ExecStart=`` naming the edgeagent that runs this command; enabled (``systemctl
  enable``, or ``systemctl --root`` for another root); started with ``--start``;
- where the machine has an NVIDIA GPU's device nodes (a Jetson), the drop-in
  ``/etc/systemd/system/edgeagent.service.d/nvidia-gpu.conf`` that allows them
  (:mod:`edgeagent.device.nvidia`).

``uninstall`` disables and removes the unit and keeps the config, the models, the remote
config changes and the user; ``--purge`` also removes ``/etc/edgeagent``,
``/var/lib/edgeagent``, ``/var/cache/edgeagent`` and the sysusers file (the user stays: files
elsewhere may still belong to it; ``userdel edgeagent`` removes it).

With ``--root DIR`` nothing outside DIR is touched, systemd need not run, and as a user
other than root the ownership is left as it is: a test, or an image being built.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeagent.device.nvidia import DROPIN, dropin_text, gpu_nodes
from edgeagent.errors import EdgeAgentError

DATA = Path(__file__).resolve().parent.parent / "data"
UNIT = "edgeagent.service"
USER = "edgeagent"
GROUPS = ("audio", "gpio")
HIDDEN_BY_UNIT = ("/home", "/root", "/run/user")
"""ProtectHome=yes hides these from the service: the edgeagent it runs must live elsewhere."""


class ServiceError(EdgeAgentError):
    """The service cannot be installed, removed or inspected; the message says why and what to do."""


@dataclass(frozen=True)
class Layout:
    """Where the service's files go under ``root``."""

    root: Path

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def unit(self) -> Path:
        return self.at(f"/etc/systemd/system/{UNIT}")

    @property
    def wants(self) -> Path:
        return self.at(f"/etc/systemd/system/multi-user.target.wants/{UNIT}")

    @property
    def sysusers(self) -> Path:
        return self.at("/etc/sysusers.d/edgeagent.conf")

    @property
    def config_dir(self) -> Path:
        return self.at("/etc/edgeagent")

    @property
    def config(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def state(self) -> Path:
        return self.at("/var/lib/edgeagent")

    @property
    def models(self) -> Path:
        return self.state / "models"

    @property
    def cache(self) -> Path:
        return self.at("/var/cache/edgeagent")

    @property
    def is_host(self) -> bool:
        return self.root.resolve() == Path("/")


# -- the unit and the template --------------------------------------------------------


def unit_text(exe: Path) -> str:
    """The unit file with ``ExecStart=`` running ``exe``."""
    template = (DATA / UNIT).read_text(encoding="utf-8")
    text, n = re.subn(r"^ExecStart=.*$", f"ExecStart={exe} run", template, count=1, flags=re.M)
    if n != 1:  # pragma: no cover - the packaged unit always has one
        raise ServiceError(f"{DATA / UNIT} has no ExecStart= line")
    return text


def config_template() -> str:
    from edgeagent.config.doc import example_toml

    head = ("# The edgeagent service reads this file at start; `sudo systemctl reload edgeagent` applies\n"
            "# an edited file without a restart (what cannot change live is logged as waiting for one).\n"
            "# Keep it private (mode 0640, group edgeagent): it may hold LiveKit credentials.\n#\n")
    return head + example_toml()


def default_exe() -> Path:
    """The ``edgeagent`` command of the Python that runs this."""
    return Path(sys.prefix) / "bin" / "edgeagent"


def _check_exe(exe: Path) -> None:
    if not exe.is_absolute():
        raise ServiceError(f"--exe {exe}: give an absolute path")
    for hidden in HIDDEN_BY_UNIT:
        for path in (exe, Path(__file__).resolve()):
            if path == Path(hidden) or Path(hidden) in path.parents:
                raise ServiceError(
                    f"{path} is under {hidden}, which the service cannot see (ProtectHome=yes) and the "
                    f"edgeagent user cannot read: put the checkout in /opt/edgeagent and run scripts/setup there")
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise ServiceError(f"{exe} is not an executable: run scripts/setup first, or give --exe")


# -- small helpers ---------------------------------------------------------------------


def _run(argv: Sequence[str], what: str) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        raise ServiceError(f"{what}: {argv[0]} not found (is systemd installed? apt-get install systemd)")
    proc = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ServiceError(f"{what}: {' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ids(layout: Layout, user: str = USER) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` in the root's /etc/passwd, or None."""
    try:
        for line in layout.at("/etc/passwd").read_text(encoding="utf-8").splitlines():
            parts = line.split(":")
            if len(parts) >= 4 and parts[0] == user:
                return int(parts[2]), int(parts[3])
    except (OSError, ValueError):
        return None
    return None


def _groups_of(layout: Layout, user: str = USER) -> list[str]:
    try:
        lines = layout.at("/etc/group").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [p[0] for line in lines if len(p := line.split(":")) >= 4 and user in p[3].split(",")]


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None or os.geteuid() != 0:
        return
    for dirpath, _, files in os.walk(path):
        os.chown(dirpath, *ids)
        for name in files:
            os.chown(os.path.join(dirpath, name), *ids)


def _booted() -> bool:
    """systemd runs this machine (sd_booted(3))."""
    return Path("/run/systemd/system").is_dir()


def _say(text: str) -> None:
    print(f"edgeagent: {text}", flush=True)


# -- install ---------------------------------------------------------------------------


def install(layout: Layout, exe: Path, *, models_from: Path | None = None, pull_models: bool = True,
            enable: bool = True, start: bool = False) -> None:
    """Lay out the service (see the module docs); raises :class:`ServiceError` saying what failed."""
    if layout.is_host and os.geteuid() != 0:
        raise ServiceError("installing the service needs root: run it with sudo")
    _check_exe(exe)
    _write(layout.sysusers, (DATA / "edgeagent.sysusers").read_text(encoding="utf-8"), 0o644)
    argv = ["systemd-sysusers"] + ([] if layout.is_host else [f"--root={layout.root}"])
    _run([*argv, str(layout.sysusers)], "creating the edgeagent user")
    ids = _ids(layout)
    if ids is None:
        raise ServiceError(f"systemd-sysusers made no {USER} user in {layout.at('/etc/passwd')}")
    _say(f"user {USER} (uid {ids[0]}), groups {', '.join(_groups_of(layout))}")

    layout.config_dir.mkdir(parents=True, exist_ok=True)
    if layout.config.exists():
        _say(f"{layout.config} exists: kept as it is")
    else:
        _write(layout.config, config_template(), 0o640)
        if os.geteuid() == 0:
            os.chown(layout.config, 0, ids[1])
        _say(f"wrote the config template {layout.config}")

    for path in (layout.state, layout.models, layout.cache):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o750)
    if pull_models:
        _models(layout, models_from)
    _chown_tree(layout.state, ids)
    _chown_tree(layout.cache, ids)

    _write(layout.unit, unit_text(exe), 0o644)
    _say(f"wrote {layout.unit} (ExecStart={exe} run)")
    if nodes := gpu_nodes(layout.at("/dev")):  # a Jetson: its GPU for llm.gpu_layers
        _write(layout.at(DROPIN), dropin_text(nodes), 0o644)
        _say(f"wrote {layout.at(DROPIN)} (the GPU's {len(nodes)} device nodes)")
    if layout.is_host and _booted():
        _run(["systemctl", "daemon-reload"], "reloading systemd")
    if enable:
        if layout.is_host and _booted():
            _run(["systemctl", "enable", *(["--now"] if start else []), UNIT], "enabling the service")
        else:
            _run(["systemctl", f"--root={layout.root}", "enable", UNIT], "enabling the service")
        _say(f"enabled {UNIT}" + (" and started it" if start and layout.is_host and _booted() else
                                  " (it starts at the next boot, or: sudo systemctl start edgeagent)"))


def _models(layout: Layout, models_from: Path | None) -> None:
    from edgeagent.model_files import fetch as model_fetch
    from edgeagent.model_files import manifest as model_manifest

    copied = 0
    if models_from is not None and models_from.resolve() != layout.models.resolve():
        for model in model_manifest.load_manifest().select():
            for f in model.files:
                if model_manifest.file_problem(models_from, f, full=False):
                    continue  # not there (or not whole): fetched below
                if model_manifest.file_problem(layout.models, f, full=False):
                    _copy(models_from / f.dest, layout.models / f.dest)
                    copied += 1
    if copied:
        _say(f"copied {copied} model file(s) from {models_from}")
    # Fetches what is missing; what is there (copied too) is checked by sha256 first.
    written = model_fetch.pull((), layout.models, model_fetch.SilentProgress())
    _say(f"models in {layout.models}: {len(written)} file(s) fetched, every default model checked (sha256)")


def _copy(src: Path, dst: Path) -> None:
    """``src`` (a file or a directory) to ``dst``, through a temp name beside it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.copy")
    _remove(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copy2(src, tmp)
    _remove(dst)
    os.replace(tmp, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- uninstall -------------------------------------------------------------------------


def uninstall(layout: Layout, *, purge: bool = False) -> None:
    if layout.is_host and os.geteuid() != 0:
        raise ServiceError("removing the service needs root: run it with sudo")
    if layout.unit.exists() or layout.wants.is_symlink():
        if layout.is_host and _booted():
            _run(["systemctl", "disable", "--now", UNIT], "disabling the service")
        else:
            _run(["systemctl", f"--root={layout.root}", "disable", UNIT], "disabling the service")
        layout.unit.unlink(missing_ok=True)
        layout.at(DROPIN).unlink(missing_ok=True)
        if layout.is_host and _booted():
            _run(["systemctl", "daemon-reload"], "reloading systemd")
        _say(f"removed {layout.unit}")
    else:
        _say(f"{UNIT} is not installed")
    if purge:
        for path in (layout.config_dir, layout.state, layout.cache):
            if path.exists():
                shutil.rmtree(path)
                _say(f"removed {path}")
        layout.sysusers.unlink(missing_ok=True)
        _say(f"the user {USER} stays (userdel {USER} removes it)")
    else:
        _say(f"kept {layout.config_dir} (config) and {layout.state} (models, remote config); "
             "--purge removes them")


# -- status ----------------------------------------------------------------------------


def status(layout: Layout) -> tuple[bool, list[str]]:
    """(installed, lines describing the service)."""
    from edgeagent.model_files import manifest as model_manifest

    lines = []
    installed = layout.unit.exists()
    exe = None
    if installed:
        m = re.search(r"^ExecStart=(\S+)", layout.unit.read_text(encoding="utf-8"), re.M)
        exe = m.group(1) if m else None
        enabled = "enabled" if layout.wants.is_symlink() else "disabled"
        lines.append(f"unit:    {layout.unit} ({enabled})")
        ok = exe is not None and os.access(exe, os.X_OK)
        lines.append(f"runs:    {exe} run" + ("" if ok else " (MISSING: run scripts/setup or install again)"))
    else:
        lines.append(f"unit:    not installed ({layout.unit} missing; sudo scripts/install-service)")
    if layout.is_host and _booted() and installed:
        out = subprocess.run(["systemctl", "show", "-p", "ActiveState,SubState,StatusText,NRestarts", UNIT],
                             capture_output=True, text=True, timeout=30).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        lines.append(f"state:   {props.get('ActiveState', '?')} ({props.get('SubState', '?')}), "
                     f"status \"{props.get('StatusText', '')}\", restarts {props.get('NRestarts', '?')}")
    ids = _ids(layout)
    lines.append(f"user:    {USER} (uid {ids[0]}, groups {', '.join(_groups_of(layout)) or 'none'})" if ids
                 else f"user:    no {USER} user")
    lines.append(f"config:  {layout.config}" + ("" if layout.config.exists() else " (absent: the defaults apply)"))
    manifest = model_manifest.load_manifest()
    default = manifest.select()
    present = [m.name for m in default if model_manifest.model_status(m, layout.models).startswith("installed")]
    lines.append(f"models:  {layout.models}: {len(present)} of {len(default)} default models installed")
    return installed, lines
