"""The unit file and the install script: ``systemd-analyze verify`` and ``security``, and
``scripts/install-service`` run against a temporary root (no running systemd needed).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.config import Config, load
from edgeagent.device.nvidia import DROPIN, dropin_text
from edgeagent.device.service import Layout, config_template, unit_text
from edgeagent.model_files import manifest as model_manifest
from edgeagent.paths import models_dir

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-service"
EXE = Path(sys.prefix) / "bin" / "edgeagent"
MAX_EXPOSURE = 2.5
"""`systemd-analyze security` exposure the unit must stay under (1.8 when it was written; 9.2 before hardening)."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: scripts/setup --dev installs the systemd package")
    return path


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_repo_unit_is_the_packaged_one() -> None:
    assert (REPO / "systemd" / "edgeagent.service").read_text() == (REPO / "edgeagent" / "data" /
                                                                     "edgeagent.service").read_text()


def test_the_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = tmp_path / "edgeagent.service"
    unit.write_text(unit_text(EXE))  # ExecStart must exist for verify: this venv's edgeagent
    proc = run(tool("systemd-analyze"), "verify", unit)
    assert proc.stderr.strip() == "", proc.stderr  # not even a warning
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "User=edgeagent",
                 "SupplementaryGroups=audio gpio", "StateDirectory=edgeagent", "ConfigurationDirectory=edgeagent",
                 "CacheDirectory=edgeagent", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID", f"ExecStart={EXE} run"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    security = run(tool("systemd-analyze"), "security", "--offline=true", unit, check=False)
    m = re.search(r"Overall exposure level for edgeagent\.service: (\d+\.\d+)", security.stdout + security.stderr)
    assert m, security.stdout + security.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, security.stdout


def test_the_config_template_is_the_defaults(tmp_path: Path) -> None:
    text = config_template()
    (tmp_path / "config.toml").write_text(text)
    assert load(tmp_path / "config.toml", env={}) == Config()
    assert all(not ln.strip() or ln.startswith(("#", "[")) for ln in text.splitlines()), "only comments and tables"


def parse_passwd(root: Path) -> dict[str, list[str]]:
    return {p[0]: p for line in (root / "etc/passwd").read_text().splitlines() if (p := line.split(":"))}


def members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        p = line.split(":")
        if p[0] == group:
            return p[3].split(",") if p[3] else []
    return []


def test_install_status_uninstall_under_a_temp_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = run(SCRIPT, "--root", root, "--models-from", models_dir()).stdout
    lay = Layout(root)

    # The unit, enabled for multi-user.target, running this checkout's edgeagent.
    assert lay.unit.read_text() == unit_text(EXE)
    assert lay.wants.is_symlink() and os.readlink(lay.wants) == "/etc/systemd/system/edgeagent.service"
    assert stat.S_IMODE(lay.unit.stat().st_mode) == 0o644
    run(tool("systemd-analyze"), "verify", lay.unit)

    # The user, in audio and gpio, home in the state directory.
    user = parse_passwd(root)["edgeagent"]
    assert user[5] == "/var/lib/edgeagent" and user[6].endswith("nologin"), user
    assert "edgeagent" in members(root, "audio") and "edgeagent" in members(root, "gpio")
    assert (root / "etc/sysusers.d/edgeagent.conf").is_file()
    uid, gid = int(user[2]), int(user[3])

    # The commented config template, private to root and the service's group.
    cfg = lay.config
    assert cfg.read_text() == config_template()
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    assert load(cfg, env={}) == Config()

    # The models, intact, owned by the service.
    assert model_manifest.verify((), lay.models) == []
    default = [m.name for m in model_manifest.load_manifest().select()]
    assert [m.name for m in model_manifest.load_manifest().select()
            if model_manifest.model_status(m, lay.models) == "installed"] == default
    assert stat.S_IMODE(lay.state.stat().st_mode) == 0o750 and lay.cache.is_dir()
    if os.geteuid() == 0:
        for path in (lay.state, lay.models, *lay.models.rglob("*")):
            assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
        assert cfg.stat().st_gid == gid and cfg.stat().st_uid == 0
    assert "copied" in out and "checked (sha256)" in out, out

    status = run(SCRIPT, "status", "--root", root).stdout
    assert f"runs:    {EXE} run" in status and "(enabled)" in status, status
    n = len(model_manifest.load_manifest().select())
    assert f"{n} of {n} default models installed" in status and "groups audio, gpio" in status, status

    # Installing again keeps an edited config file; on a Jetson (its GPU's device nodes in /dev)
    # it adds the drop-in that allows them.
    assert not lay.at(DROPIN).exists()  # no NVIDIA device nodes in the root's /dev
    cfg.write_text('log_level = "debug"\n' + cfg.read_text())
    (root / "dev/nvgpu/igpu0").mkdir(parents=True)
    for node in ("dev/nvmap", "dev/nvhost-ctrl-gpu", "dev/nvgpu/igpu0/ctrl"):
        (root / node).touch()
    out = run(SCRIPT, "--root", root, "--no-models").stdout
    assert load(cfg, env={}).log_level == "debug"
    assert lay.at(DROPIN).read_text() == dropin_text(["/dev/nvgpu/igpu0/ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvmap"])
    assert "the GPU's 3 device nodes" in out, out

    # Uninstall: the unit goes, config and models stay.
    run(SCRIPT, "uninstall", "--root", root)
    assert not lay.unit.exists() and not lay.wants.is_symlink() and not lay.at(DROPIN).exists()
    assert load(cfg, env={}).log_level == "debug" and model_manifest.verify((), lay.models) == []
    status = run(SCRIPT, "status", "--root", root, check=False)
    assert status.returncode == 3 and "not installed" in status.stdout, status.stdout

    # --purge: config, models and state go too.
    run(SCRIPT, "uninstall", "--root", root, "--purge")
    assert not lay.config_dir.exists() and not lay.state.exists() and not lay.cache.exists()


def test_the_nvidia_dropin_verifies_with_the_unit(tmp_path: Path) -> None:
    """The drop-in's lines are valid unit settings: systemd-analyze verify on the unit with them."""
    text = dropin_text(["/dev/nvmap", "/dev/nvhost-ctrl-gpu"])
    assert text.splitlines()[-3:] == ["SupplementaryGroups=video", "DeviceAllow=/dev/nvmap rw",
                                      "DeviceAllow=/dev/nvhost-ctrl-gpu rw"]
    unit = tmp_path / "edgeagent.service"
    base = unit_text(EXE)
    extra = "\n".join(line for line in text.splitlines() if not line.startswith(("#", "[")))
    unit.write_text(base.replace("[Service]\n", "[Service]\n" + extra + "\n", 1))
    proc = run(tool("systemd-analyze"), "verify", unit, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_refuses_an_edgeagent_the_service_cannot_see(tmp_path: Path) -> None:
    proc = run(EXE, "service", "install", "--root", tmp_path, "--exe", "/home/pi/edgeagent/.venv/bin/edgeagent",
               check=False)
    assert proc.returncode == 1
    assert "is under /home, which the service cannot see (ProtectHome=yes)" in proc.stderr, proc.stderr
    assert not (tmp_path / "etc").exists()  # nothing laid out
