"""The full agent as a worker (real models, the real livekit-server): dispatched into a room by
the server API and by a token's RoomAgentDispatch, it answers a participant there, can be
configured over the room, and is free again once the room is deleted; bad dispatch metadata
is logged and the job runs all the same."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from gpio_mock import LED, LISTENING, SPEAKING, LedWatch, mock_pins
from gpiozero.pins.mock import MockFactory
from live import Recorder, loud_blocks, play, words
from livekit import api
from room_user import until, user_in
from speech import piper, save, with_silence

from edgeagent.config import Config
from edgeagent.config.room import LiveKitConfig
from edgeagent.config.voice import ActivationConfig
from edgeagent.device.lifecycle import Lifecycle
from edgeagent.room.config_client import Controller, controller_token
from edgeagent.voice import Models
from edgeagent.worker.jobs import WORKER_ID_ATTRIBUTE
from edgeagent.worker.run import run_worker

if TYPE_CHECKING:
    from conftest import LiveKitServer, PulseDevices


async def test_dispatched_agent_answers_and_is_free_again(livekit_server: LiveKitServer, models: Models,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgeagent.worker")
    name = f"agent-{uuid.uuid4().hex[:6]}"
    device = f"{name}-device"
    cfg = dataclasses.replace(Config(), livekit=LiveKitConfig(
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret,
        mode="worker", agent_name=name, identity=device))
    statuses: list[str] = []
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(models, cfg, stop, on_status=statuses.append))
    lkapi = api.LiveKitAPI(livekit_server.url.replace("ws", "http", 1), livekit_server.api_key,
                           livekit_server.api_secret)
    rooms = [f"{name}-api", f"{name}-token"]
    try:
        await until(lambda: statuses and statuses[-1].startswith("worker available"), 15, "registered")
        await livekit_server.knows_worker(name)
        # 1. create_dispatch, with metadata partly bad: the job runs, each bad entry is one error line
        meta = {"instructions": "You are a helpful voice assistant. Answer in one short sentence.",
                "tts": {"speed": "fast"}, "language": "fr", "nonsense": 1}
        async with user_in(livekit_server, rooms[0]) as user:
            await asyncio.wait_for(lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name=name, room=rooms[0], metadata=json.dumps(meta))), 10)
            answer = await user.ask("What is the capital of France?")
            assert words(answer), answer
            agent = user.agent()
            assert agent is not None and agent.identity == device
            assert agent.attributes.get(WORKER_ID_ATTRIBUTE, "").startswith("AW_"), agent.attributes
            assert statuses[-1].startswith(f"worker full: room {rooms[0]}"), statuses
            # `edgeagent config get` against the dispatched device, as against a configured one
            ctl_token = controller_token(livekit_server.api_key, livekit_server.api_secret, rooms[0], "ctl")
            async with Controller(livekit_server.url, ctl_token, device) as ctl:
                got = await ctl.call("get", {})
            assert got["ok"] and "livekit" in got["config"], got
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "metadata" in r.getMessage()]
        assert any("tts.speed" in e for e in errors) and any("language" in e for e in errors) and \
            any("nonsense" in e for e in errors), errors
        assert any("agent" in r.getMessage() and "settings from its metadata" in r.getMessage()
                   for r in caplog.records), "the good entry (instructions) was not applied"
        # 2. the room deleted: the job is reported done and the device is available again
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=rooms[0])), 10)
        await until(lambda: statuses[-1].startswith("worker available"), 10, f"available again: {statuses}")
        assert any(f"in room {rooms[0]} ended" in r.getMessage() for r in caplog.records)
        # 3. a RoomAgentDispatch in the participant's token works the same
        async with user_in(livekit_server, rooms[1], dispatch=name) as user:
            answer = await user.ask("How many legs does a spider have?")
            assert words(answer), answer
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=rooms[1])), 10)
        await until(lambda: statuses[-1].startswith("worker available"), 10, f"available again: {statuses}")
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
        for r in rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=r)), 5)
        await lkapi.aclose()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    with mock_pins() as mock:
        yield mock


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("worker_local")
    return save(with_silence(piper("What is the capital of France?"), 0.5, 1.5), d / "question.wav")


async def test_worker_local_answers_on_the_board_between_jobs_and_during_one(
        livekit_server: LiveKitServer, models: Models, pulse: PulseDevices, question_wav: Path,
        factory: MockFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """worker+local: between jobs the local mic and speaker are `edgeagent run`'s; a job takes them
    over (room+local) and gives them back when it ends. The [gpio] LED (gpiozero's MockFactory)
    follows the local session, then the job's, then the local one again."""
    name = f"local-{uuid.uuid4().hex[:6]}"
    cfg = dataclasses.replace(Config(), activation=ActivationConfig(mode="always"), gpio=LED, livekit=LiveKitConfig(
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret,
        mode="worker+local", agent_name=name, identity=f"{name}-device"))
    statuses: list[str] = []
    out: list[str] = []

    async def local_answer(what: str) -> None:
        """Ask into the local mic; wait for the local agent's answer in the transcript on stdout."""
        await asyncio.wait_for(play(pulse.mic_sink, question_wav), 30)
        deadline = time.monotonic() + 30
        while not any(line.startswith("agent: ") for line in out):
            out.extend(capsys.readouterr().out.splitlines())
            assert time.monotonic() < deadline, f"no local answer {what}: {out}"
            await asyncio.sleep(0.1)
        assert any(line.startswith("user: ") and "capital" in line.lower() for line in out), out
        out.clear()

    stop = asyncio.Event()
    rec = await asyncio.wait_for(Recorder.start(pulse.speaker_monitor), 10)
    led = LedWatch(factory)
    life = Lifecycle(cfg, env_notify=False)
    worker = asyncio.create_task(run_worker(models, cfg, stop, life=life, on_status=statuses.append))
    room = f"{name}-room"
    lkapi = api.LiveKitAPI(livekit_server.url.replace("ws", "http", 1), livekit_server.api_key,
                           livekit_server.api_secret)
    try:
        await until(lambda: statuses and statuses[-1].startswith("worker available"), 15, "registered")
        await livekit_server.knows_worker(name)
        await until(lambda: "listening" in capsys.readouterr().out, 15, "the local agent listening")
        await local_answer("before any job")
        await asyncio.sleep(3.0)  # the rest of the reply on the speaker
        async with user_in(livekit_server, room) as user:
            await asyncio.wait_for(lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name=name, room=room)), 10)
            t_job = time.monotonic()
            answer = await user.ask("How many legs does a spider have?")
            assert words(answer), answer
            await asyncio.sleep(0.5)  # ask() returned with the agent listening again: the reply was said
            t_job_end = time.monotonic()
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), 10)
        await until(lambda: statuses[-1].startswith("worker available"), 10, f"available again: {statuses}")
        capsys.readouterr()
        await local_answer("after the job")
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
        t_end = time.monotonic()
        await asyncio.wait_for(life.finished(), 10)
        await led.stop()
        audio = await asyncio.wait_for(rec.stop(), 15)
        await lkapi.aclose()
    for span, (t0, t1) in (("before the job", (0, t_job)), ("during the job", (t_job, t_job_end)),
                           ("after it", (t_job_end, t_end))):
        assert {LISTENING, SPEAKING} <= set(led.between(t0, t1)), f"the LED {span}: {led.seen}"
    heard = [t_end - audio.duration + i * 0.02 for i in loud_blocks(audio)]
    assert sum(1 for t in heard if t < t_job) * 0.02 > 0.5, "no local answer on the speaker before the job"
    assert sum(1 for t in heard if t_job <= t < t_job_end) * 0.02 > 0.5, \
        "the room's answer was not played on the local speaker during the job (room+local)"
    assert sum(1 for t in heard if t >= t_job_end) * 0.02 > 0.5, "no local answer on the speaker after the job"
