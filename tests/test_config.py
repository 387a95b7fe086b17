"""Config loading: defaults, file, env, --set; clear errors; the template matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeagent import config
from edgeagent.config_doc import example_toml
from edgeagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('log_level = "debug"\n[audio]\nframe_ms = 30\ninput_device = "pulse"\n')
    cfg = config.load(f, env={"EDGEAGENT__AUDIO__FRAME_MS": "40"}, overrides=["audio.output_device=2"])
    assert cfg.log_level == "debug"
    assert cfg.audio.frame_ms == 40  # env beats the file
    assert cfg.audio.input_device == "pulse"
    assert cfg.audio.output_device == "2"
    cfg = config.load(f, env={"EDGEAGENT__AUDIO__FRAME_MS": "40"}, overrides=["audio.frame_ms=50"])
    assert cfg.audio.frame_ms == 50  # --set beats env


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "absent.toml", env={}) == config.Config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nbogus = 1\n", "audio: unknown key(s) bogus"),
        ("[audio]\nframe_ms = \"x\"\n", "audio.frame_ms: expected an integer"),
        ("log_level = \"loud\"\n", "log_level: expected debug"),
        ("audio = 3\n", "audio: expected a table"),
        ("[audio\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(f, env={})


def test_merge_patch_rfc7386() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert config.merge(base, {"a": {"b": None, "e": 4}, "d": [1]}) == {"a": {"c": 2, "e": 4}, "d": [1]}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_example_template_is_current_and_loads(tmp_path: Path) -> None:
    committed = (ROOT / "edgeagent" / "config.example.toml").read_text()
    assert committed == example_toml(), "run: edgeagent config example > edgeagent/config.example.toml"
    # Every line uncommented is still a valid config equal to the defaults.
    lines = [ln[2:] if re.match(r"# \w+ = ", ln) else ln for ln in committed.splitlines()]
    f = tmp_path / "c.toml"
    f.write_text("\n".join(ln.split("  # unset")[0] for ln in lines))
    assert config.load(f, env={}) == config.Config()
