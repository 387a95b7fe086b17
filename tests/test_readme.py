"""The README stays true: its models table is the manifest's, its links land, its Python example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from edgeagent.model_files import manifest as model_manifest
from edgeagent.model_files.cli import licence_table

README = Path(__file__).resolve().parent.parent / "README.md"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_models_table_is_generated_from_the_manifest() -> None:
    text = README.read_text()
    got = re.search(r"<!-- models-table: [^\n]*-->\n(.*?)<!-- /models-table -->", text, re.S)
    assert got, "README.md lacks the models-table markers"
    assert got[1] == licence_table(model_manifest.load_manifest()), (
        "the README's models table is stale: replace it with `edgeagent models list --markdown`")
    assert "CC-BY-NC-SA-4.0` **non-commercial**" in got[1]


def test_every_link_inside_the_readme_lands_on_a_heading() -> None:
    text = README.read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - anchors, sorted(links - anchors)


def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "one Python example expected"
    (tmp_path / "example.py").write_text(blocks[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "user: What is the capital of France?" in lines, out.stdout
    assert any(ln.startswith("assistant: ") and len(ln) > len("assistant: ") for ln in lines), out.stdout
    assert (tmp_path / "reply.wav").stat().st_size > 10_000
