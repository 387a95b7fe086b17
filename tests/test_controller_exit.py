"""How ``edgeagent config get|set`` ends (issue 24): JSON on stdout and one line on stderr, exit 0 or 1
(2 for usage) and never a signal: the room is left and the LiveKit SDK closed before the
interpreter finalizes, and a stdout closed by its reader is an ordinary error.

The controllers here are real ``edgeagent config`` processes against the loopback livekit-server
and a device (:func:`test_room_control.device`) that lets ``admin-laptop`` set and anyone get.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_room_control import ADMIN, DEVICE, ROOT, device

if TYPE_CHECKING:
    from conftest import LiveKitServer

pytestmark = pytest.mark.livekit
# Calls main() like `python -m edgeagent`, then reports on stderr whether the SDK was closed
# before the interpreter's own exit (where its atexit hook would otherwise do it).
PROBE = ("import sys\nfrom edgeagent.cli import main\ncode = main(sys.argv[1:])\n"
         "from edgeagent.room.sdk import sdk_closed\nprint('sdk closed before exit:', sdk_closed(), file=sys.stderr)\n"
         "sys.exit(code)\n")


def env() -> dict[str, str]:
    # PYTHONUNBUFFERED unset: stdout is block-buffered into a pipe, as for a user's `| head`.
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {
        "EDGEAGENT_CONFIG": "/nonexistent/edgeagent.toml"}


def common(server: LiveKitServer, room: str, identity: str) -> list[str]:
    return ["--url", server.url, "--room", room, "--device", DEVICE, "--identity", identity,
            "--api-key", server.api_key, "--api-secret", server.api_secret]


def exited_normally(code: int, what: str, stderr: str) -> None:
    assert code >= 0, f"{what} ended by signal {signal.Signals(-code).name}: {stderr[-2000:]}"
    assert code in (0, 1), f"{what} exited {code}: {stderr[-2000:]}"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "panic" not in stderr, stderr


def get_into_head(args: list[str]) -> tuple[int, str]:
    """``edgeagent config get ... | head -1``: read one line, then close the pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeagent", "config", "get", *args], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert first.strip() in ("{", ""), first
    return code, err


def probe(args: list[str], stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, "config", *args], cwd=ROOT, env=env(), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("sdk closed before exit:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.reliability
async def test_get_into_head_then_set_with_that_identity_20_times(livekit_server: LiveKitServer,
                                                                  tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path, rate_per_minute=6000, rate_burst=1000) as dev:
        args = common(livekit_server, dev.room, "stranger")
        for i in range(20):
            code, err = await asyncio.to_thread(get_into_head, args)
            exited_normally(code, f"round {i}: get | head -1", err)
            if code == 1:
                assert "standard output was closed" in err, err
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "edgeagent", "config", "set", *args, "tts.speed=1.5"],
                cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
            exited_normally(out.returncode, f"round {i}: set", out.stderr)
            assert out.returncode == 1 and json.loads(out.stdout)["code"] == "forbidden", out.stdout
            assert "(rpc 403)" in one_line(out.stderr)
        assert dev.store.revision == 0


@pytest.mark.reliability  # a fault test: with the others in `scripts/test -m reliability`
async def test_the_sdk_is_closed_before_the_interpreter_ends(livekit_server: LiveKitServer,
                                                             tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path) as dev:
        got = await asyncio.to_thread(probe, ["get", *common(livekit_server, dev.room, "someone")])
        assert got.returncode == 0 and json.loads(got.stdout)["revision"] == 0, got.stderr
        assert "sdk closed before exit: True" in got.stderr
        refused = await asyncio.to_thread(probe, ["set", *common(livekit_server, dev.room, "someone"), "tts.speed=2"])
        assert refused.returncode == 1 and json.loads(refused.stdout)["code"] == "forbidden"
        assert "sdk closed before exit: True" in refused.stderr and "(rpc 403)" in one_line(refused.stderr)
        done = await asyncio.to_thread(probe, ["set", *common(livekit_server, dev.room, ADMIN), "tts.speed=1.2"])
        assert done.returncode == 0 and json.loads(done.stdout)["revision"] == 1, done.stderr
        assert "sdk closed before exit: True" in done.stderr
        # No --device and no agent in the room: the lookup fails after the join; the room is left.
        args = [a for a in common(livekit_server, f"{dev.room}-empty", "x") if a not in (DEVICE, "--device")]
        lost = await asyncio.to_thread(probe, ["get", *args])
        assert lost.returncode == 1 and lost.stdout == "" and "give --device" in one_line(lost.stderr)
        assert "sdk closed before exit: True" in lost.stderr


async def test_a_closed_stdout_is_exit_1_with_one_line(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path) as dev:
        for action in (["get"], ["schema"], ["set", "tts.speed=1.1"]):
            read_end, write_end = os.pipe()
            os.close(read_end)  # the reader is gone before anything is written
            try:
                identity = ADMIN if action[0] == "set" else "reader"
                out = await asyncio.to_thread(probe, [action[0], *common(livekit_server, dev.room, identity),
                                                      *action[1:]], write_end)
            finally:
                os.close(write_end)
            exited_normally(out.returncode, " ".join(action), out.stderr)
            assert out.returncode == 1, out.stderr
            assert one_line(out.stderr) == "edgeagent: error: standard output was closed before everything " \
                                           "was written to it"
            assert "sdk closed before exit: True" in out.stderr
        assert dev.store.revision == 1  # the set was made; only its answer was lost


def test_a_closed_stdout_outside_the_room_too(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([sys.executable, "-m", "edgeagent", "config", "example"], cwd=ROOT, env=env(),
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert out.returncode == 1 and out.stderr == ("edgeagent: error: standard output was closed before "
                                                  "everything was written to it\n"), out.stderr


def test_help_says_what_goes_where() -> None:
    out = subprocess.run([sys.executable, "-m", "edgeagent", "config", "get", "--help"], cwd=ROOT, env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "stdout carries JSON only" in text and "stderr carries the one-line messages" in text
    assert "exit status" in text
