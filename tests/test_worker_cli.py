"""`edgeagent worker`, for real: the command registers with the loopback livekit-server, is dispatched
into a room, joins it, leaves when the room is deleted, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

from livekit import api

if TYPE_CHECKING:
    from conftest import LiveKitServer


def _output(proc: subprocess.Popen[str]) -> str:
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints the threads' stacks
        out = proc.communicate(timeout=10)[0]
        raise AssertionError(f"still running 30 s after SIGTERM:\n{out}") from None


async def test_worker_command(livekit_server: LiveKitServer) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    room = f"{name}-room"
    env = dict(os.environ, EDGEAGENT__LIVEKIT__API_KEY=livekit_server.api_key,
               EDGEAGENT__LIVEKIT__API_SECRET=livekit_server.api_secret, PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for with a timeout
        [sys.executable, "-m", "edgeagent", "worker", "--url", livekit_server.url, "--agent-name", name,
         "--identity", f"{name}-device", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lkapi = api.LiveKitAPI(livekit_server.url.replace("ws", "http", 1), livekit_server.api_key,
                           livekit_server.api_secret)
    try:
        await livekit_server.knows_worker(name, timeout=120)  # the command loads the models first
        await asyncio.wait_for(lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=name, room=room)), 10)
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            people = (await asyncio.wait_for(lkapi.room.list_participants(
                api.ListParticipantsRequest(room=room)), 5)).participants
            if any(p.identity == f"{name}-device" for p in people):
                break
            assert time.monotonic() < deadline, "the worker never joined the dispatched room"
            await asyncio.sleep(0.1)
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), 10)
        await asyncio.sleep(0.5)
    finally:
        await lkapi.aclose()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    out = _output(proc)
    assert proc.returncode == 0, out
    assert f"worker for agent {name!r}" in out, out
    assert f"in room {room} ended" in out and "worker: worker available" in out, out
    assert "Traceback" not in out, out
