"""The package as a user installs it: a wheel built from this tree, in a fresh venv outside it.

The wheel is built without build isolation (setuptools and wheel come with the [dev]
extra, so no download), then installed with the [device] extra into a new venv in a temp
directory: pip takes llama-cpp-python from the wheel scripts/setup built and cached, the
rest from its cache or the index. The installed command then runs where the checkout is
out of reach (cwd and PYTHONPATH elsewhere): ``--version``, ``models list``, ``models
verify`` on the pulled models, and ``run`` with no sound device, which answers the sample
question shipped in the wheel. About 22 s here (2 cores, pip cache warm), most of it the install.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from nosound import no_sound_card, no_sound_env

import edgeagent
from edgeagent.model_files import manifest as model_manifest

REPO = Path(__file__).resolve().parent.parent
#: What the commands read at run time: it must be inside the wheel.
PACKAGE_DATA = (
    "edgeagent/data/manifest.toml",
    "edgeagent/data/sample_question.wav",
    "edgeagent/data/edgeagent.service",
    "edgeagent/data/edgeagent.sysusers",
    "edgeagent/web/static/index.html",
    "edgeagent/web/static/console.js",
    "edgeagent/web/static/console.css",
    "edgeagent/py.typed",
)
INSTALL_TIMEOUT_S = 600

pytestmark = pytest.mark.packaging  # run beside the reliability tests (README: Tests), ~28 s
RUN_TIMEOUT_S = 300


def llama_wheel_dir() -> Path:
    """Where scripts/setup cached the llama-cpp-python wheel for this Python and CPU."""
    pin = re.search(r'"llama-cpp-python==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin, "pyproject.toml has no llama-cpp-python==VERSION pin"
    key = subprocess.run(["bash", "-c", f". {REPO}/scripts/lib.sh && ea_cache_dir && ea_cpu_key"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    path = Path(key[0]) / "wheels" / "llama-cpp-python" / f"{pin[1]}-{tag}-{platform.machine()}-{key[1]}"
    assert list(path.glob("llama_cpp_python-*.whl")), f"no llama-cpp-python wheel in {path}: run scripts/setup"
    return path


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of a clean copy of the tree (no build/ or egg-info left in the checkout)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "edgeagent", src / "edgeagent",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out / "dist"), str(src)], timeout=INSTALL_TIMEOUT_S, check=True)
    (wheel,) = (out / "dist").glob("edgeagent-*.whl")
    return wheel


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith(f"edgeagent-{edgeagent.__version__}-py3-none-any"), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [p for p in PACKAGE_DATA if p not in names], sorted(names)
    assert any(re.fullmatch(r"edgeagent-[^/]+\.dist-info/(licenses/)?LICENSE", n) for n in names), sorted(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120, check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-compile", "--find-links", str(llama_wheel_dir()), "--only-binary", "llama-cpp-python",
                    f"{wheel}[device]"], timeout=INSTALL_TIMEOUT_S, check=True)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGEAGENT__") and k not in ("PYTHONPATH", "EDGEAGENT_MANIFEST", "VIRTUAL_ENV")}
    env.update(EDGEAGENT_CONFIG=os.devnull, **no_sound_env(tmp_path))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*no_sound_card(), str(venv / "bin" / "edgeagent"), *args], capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S, cwd=work, env=env)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import edgeagent; print(edgeagent.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr

    version = cli("--version")
    assert (version.returncode, version.stdout) == (0, f"edgeagent {edgeagent.__version__}\n"), version

    listed = cli("models", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for model in model_manifest.load_manifest().models:
        assert re.search(rf"^{re.escape(model.name)} ", listed.stdout, re.M), listed.stdout

    verified = cli("models", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    defaults = sum(m.default for m in model_manifest.load_manifest().models)
    assert verified.stdout.count("ok  ") >= defaults, verified.stdout

    ran = cli("run")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    sample = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "edgeagent" / \
        "data" / "sample_question.wav"
    assert f"answering the bundled sample question instead ({sample})" in ran.stdout, ran.stdout + ran.stderr
    user = [ln for ln in ran.stdout.splitlines() if ln.startswith("user: ")]
    agent = [ln for ln in ran.stdout.splitlines() if ln.startswith("agent: ") and len(ln) > len("agent: ")]
    assert len(user) == 1 and {"capital", "france"} <= set(re.findall(r"[a-z]+", user[0].lower())), ran.stdout
    assert len(agent) == 1, ran.stdout
    assert (work / "edgeagent-reply.wav").stat().st_size > 10_000
