"""The ``edgeagent`` command as a user meets it: its help, exit codes, log options, errors on stderr.

Exit status: 0 done, 1 failed at run time, 2 usage (a wrong command line or setting),
3 ``service status`` of a service that is not installed, 130 interrupted.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeagent import cli, terminal


def edgeagent(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEAGENT__", "LIVEKIT_"))}
    env["EDGEAGENT_CONFIG"] = str(tmp / "none.toml")
    return subprocess.run([sys.executable, "-m", "edgeagent", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp)


def test_the_help_is_for_users_and_gives_the_exit_codes(tmp_path: Path) -> None:
    out = edgeagent("--help", tmp=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("usage: edgeagent"), out.stdout
    assert "An on-device voice agent" in out.stdout and "edgeagent run  " in out.stdout, out.stdout
    assert "parsing only" not in out.stdout
    assert terminal.EXIT_CODES in out.stdout, out.stdout
    for command in ("run", "join", "web"):
        sub = edgeagent(command, "--help", tmp=tmp_path)
        assert sub.returncode == 0 and terminal.EXIT_CODES in sub.stdout, sub.stdout
        assert "-v, --verbose" in sub.stdout and "--log-level {debug,info,warning,error}" in sub.stdout, sub.stdout


def test_usage_mistakes_exit_2_with_the_message_on_stderr(tmp_path: Path) -> None:
    bare = edgeagent(tmp=tmp_path)
    assert (bare.returncode, bare.stdout) == (2, "") and bare.stderr.startswith("usage: edgeagent"), bare
    unknown = edgeagent("run", "--no-such-option", tmp=tmp_path)
    assert (unknown.returncode, unknown.stdout) == (2, ""), unknown
    # The same mistake, a missing --url, in the two commands that need one.
    join = edgeagent("join", tmp=tmp_path)
    assert (join.returncode, join.stdout) == (2, ""), join
    assert join.stderr == ("edgeagent: no room to join: give --url (and --room with livekit.api_key/api_secret, "
                           "or --token)\n"), join.stderr
    remote = edgeagent("config", "get", tmp=tmp_path)
    assert (remote.returncode, remote.stdout) == (2, "") and "give --url" in remote.stderr, remote
    # A wrong setting is a usage mistake too, whether in the file or on the command line.
    bad = edgeagent("run", "--set", "log_level=loud", tmp=tmp_path)
    assert (bad.returncode, bad.stdout) == (2, "") and "log_level" in bad.stderr, bad


def test_a_failure_at_run_time_exits_1_on_stderr(tmp_path: Path) -> None:
    missing = edgeagent("run", "--input", str(tmp_path / "absent.wav"), "--output", str(tmp_path / "r.wav"),
                        tmp=tmp_path)
    assert (missing.returncode, missing.stdout) == (1, ""), missing
    assert missing.stderr.startswith(f"edgeagent: cannot read audio from {tmp_path / 'absent.wav'}"), missing.stderr


@pytest.fixture
def root_level() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for handler in handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, terminal.HideTranscript)]


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run"], logging.INFO),  # the config's log_level
        (["run", "-v"], logging.DEBUG),
        (["-v", "run"], logging.DEBUG),
        (["run", "--log-level", "warning"], logging.WARNING),
        (["run", "-v", "--log-level", "error"], logging.ERROR),  # the explicit level wins
    ],
)
def test_v_and_log_level_set_the_level_of_run(tmp_path: Path, root_level: None, argv: list[str], level: int) -> None:
    """``run`` sets its level from the config; ``-v`` and ``--log-level`` now change it (a config
    override, so a reload on SIGHUP keeps it). Here it stops at a missing --input file."""
    args = [*argv, "--config", str(tmp_path / "none.toml"), "--input", str(tmp_path / "absent.wav")]
    assert cli.main(args) == 1
    assert logging.getLogger().level == level


@pytest.mark.parametrize("command", ["join", "web"])
def test_v_and_log_level_reach_join_and_web(command: str) -> None:
    parser = cli.build_parser()
    assert terminal.log_level_override(parser.parse_args([command, "-v"])) == "log_level=debug"
    assert terminal.log_level_override(parser.parse_args([command, "--log-level", "error"])) == "log_level=error"
    assert terminal.log_level_override(parser.parse_args([command])) is None
    assert terminal.log_level_override(parser.parse_args(["-v", "models", "list"])) is None  # no config: -v alone


def test_run_prints_no_transcript_when_stdout_is_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd stdout goes to the journal too, which has each turn as a log record already."""
    from edgeagent.runner import Transcript

    with (tmp_path / "journal-stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setattr(sys, "stdout", stream)
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert Transcript().show
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert not Transcript().show
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # stderr's, say
        assert Transcript().show
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # no file descriptor
    assert Transcript().show
