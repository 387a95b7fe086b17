"""A worker on a board (real models, the real livekit-server): a job speaks with the voice of its
dispatch metadata, loaded for it and given back after it (one that cannot load: the device's voice,
one line); the ``[gpio]`` LED (gpiozero's MockFactory) and ``STATUS=`` (a datagram socket as
``NOTIFY_SOCKET``) follow the job's session; SIGHUP's reload reaches the job's session; and
``edgeagent worker`` as a process under a stand-in systemd."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gpio_mock import LED, LISTENING, OFF, SPEAKING, LedWatch, colour, mock_pins
from gpiozero.pins.mock import MockFactory
from live import words
from livekit import api
from room_user import until, user_in
from test_device_systemd import Listener, Process, index_of
from test_device_systemd import until as until_in

from edgeagent.config import Config
from edgeagent.config.room import LiveKitConfig
from edgeagent.device.lifecycle import STATUS_INTERVAL_S, Lifecycle
from edgeagent.device.notify import Notifier, StatusThrottle
from edgeagent.tts.espeak import EspeakTTS
from edgeagent.tts.piper import PiperTTS
from edgeagent.voice import Models
from edgeagent.worker.run import run_worker

if TYPE_CHECKING:
    from conftest import LiveKitServer


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    with mock_pins() as mock:
        yield mock


def worker_config(server: LiveKitServer, name: str, **extra: Any) -> Config:
    return dataclasses.replace(Config(), livekit=LiveKitConfig(
        url=server.url, api_key=server.api_key, api_secret=server.api_secret, mode="worker", agent_name=name,
        identity=f"{name}-device"), **extra)


def with_speed(cfg: Config, speed: float) -> Config:
    return dataclasses.replace(cfg, tts=dataclasses.replace(cfg.tts, speed=speed))


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def dispatch(lkapi: api.LiveKitAPI, name: str, room: str, metadata: dict[str, Any]) -> None:
    await asyncio.wait_for(lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
        agent_name=name, room=room, metadata=json.dumps(metadata))), 10)


async def end_job(lkapi: api.LiveKitAPI, room: str, statuses: list[str]) -> None:
    await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), 10)
    await until(lambda: statuses[-1].startswith("worker available"), 10, f"available again: {statuses}")


def server_api(server: LiveKitServer) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.url.replace("ws", "http", 1), server.api_key, server.api_secret)


async def test_a_job_has_its_voice_and_drives_the_led_and_the_status(
        livekit_server: LiveKitServer, models: Models, factory: MockFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    name = f"board-{uuid.uuid4().hex[:6]}"
    cfg = worker_config(livekit_server, name, gpio=LED)
    files = [with_speed(cfg, 1.5), with_speed(cfg, 1.2)]  # the config file as SIGHUP reads it, twice
    notify_name = f"@edgeagent-test-{uuid.uuid4().hex}"
    notify = Listener(b"\0" + notify_name[1:].encode())
    life = Lifecycle(cfg, reload=lambda: files.pop(0), notifier=Notifier(notify_name, backend="socket"),
                     env_notify=False)
    device_voice = models.tts
    statuses: list[str] = []
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(models, cfg, stop, life=life, on_status=statuses.append))
    led = LedWatch(factory)
    lkapi = server_api(livekit_server)
    room = f"{name}-room"
    try:
        await until(lambda: statuses and statuses[-1].startswith("worker available"), 15, "registered")
        await livekit_server.knows_worker(name)
        assert colour(factory) == OFF  # no session: idle
        async with user_in(livekit_server, room) as user:
            await dispatch(lkapi, name, room, {"tts": {"provider": "espeak"}, "voice": "en-gb"})
            await user.listening()
            assert isinstance(models.tts, EspeakTTS), models.tts  # the job's voice, for the job
            await until(lambda: colour(factory) == LISTENING, 5, "the LED shows the job's session listening")
            t_ask = time.monotonic()
            answer = await user.ask("What is the capital of France?")
            assert words(answer), answer
            await until(lambda: colour(factory) == LISTENING, 5, "the LED back to listening after the answer")
            t_answered = time.monotonic()
            life.request_reload()  # SIGHUP: the file's live settings reach the job's session
            await until(lambda: logged(caplog, "config: tts.speed = 1.5 (was 1.0), now"), 10, "the reload applied")
        await end_job(lkapi, room, statuses)
        assert models.tts is device_voice
        assert logged(caplog, "speaks with its own voice (tts.provider 'espeak', tts.model 'en-gb')")
        assert logged(caplog, "the device's voice is back")
        await until(lambda: colour(factory) == OFF, 5, "the LED idle after the job")
        life.request_reload()  # between jobs: for the next session
        await until(lambda: logged(caplog, "tts.speed changed in the file: takes effect at the worker's next "
                                           "session"), 10, "the reload between jobs")
        await asyncio.sleep(STATUS_INTERVAL_S * 2)  # the last STATUS= out
        before_stop = len(notify.got)
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
        await asyncio.wait_for(life.finished(), 10)
        life.close()
        await led.stop()
        await lkapi.aclose()
        notify.close()
    seen = led.between(t_ask, t_answered)
    assert SPEAKING in seen and seen[-1] == LISTENING, led.seen
    sent = [(t, d.decode()) for t, d in notify.got[:before_stop]]
    assert sent[0][1].startswith("READY=1\nSTATUS=worker "), sent[:3]
    plain = [(t, text[len("STATUS="):]) for t, text in sent if text.startswith("STATUS=") and "\n" not in text]
    job = rf"worker full: room {room} \(job AJ_\w+, id AW_\w+\) — agent "
    texts = [text for _, text in plain]
    assert any(re.fullmatch(job + "speaking", x) for x in texts), texts
    assert any(re.fullmatch(job + "listening", x) for x in texts), texts
    assert texts[-1].startswith("worker available (agent ") and "—" not in texts[-1], texts
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(plain)]
    assert min(gaps) >= STATUS_INTERVAL_S - 0.05, (gaps, texts)  # throttled


async def test_a_voice_that_does_not_load_and_a_voice_from_the_manifest(
        livekit_server: LiveKitServer, models: Models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgeagent.worker")
    name = f"voices-{uuid.uuid4().hex[:6]}"
    cfg = worker_config(livekit_server, name)
    device_voice = models.tts
    statuses: list[str] = []
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(models, cfg, stop, on_status=statuses.append))
    lkapi = server_api(livekit_server)
    rooms = [f"{name}-missing", f"{name}-joe"]
    try:
        await until(lambda: statuses and statuses[-1].startswith("worker available"), 15, "registered")
        await livekit_server.knows_worker(name)
        async with user_in(livekit_server, rooms[0]) as user:
            await dispatch(lkapi, name, rooms[0], {"voice": "/nonexistent/voice.onnx"})
            await user.listening()
            assert models.tts is device_voice  # the job runs, with the device's voice
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert [e for e in errors if "its voice (tts.model '/nonexistent/voice.onnx') cannot be used: Piper voice "
                "/nonexistent/voice.onnx does not exist" in e and e.endswith("the job speaks with the device's "
                                                                             "voice")], errors
        await end_job(lkapi, rooms[0], statuses)
        async with user_in(livekit_server, rooms[1]) as user:
            await dispatch(lkapi, name, rooms[1], {"voice": "piper-en-us-joe"})  # a name `edgeagent models` knows
            await user.listening()
            assert isinstance(models.tts, PiperTTS) and models.tts is not device_voice, models.tts
        await end_job(lkapi, rooms[1], statuses)
        assert models.tts is device_voice
        assert logged(caplog, "speaks with its own voice (tts.model 'piper-en-us-joe')")
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 30) == 0
        await lkapi.aclose()


async def test_status_changes_are_throttled_and_the_last_one_is_shown() -> None:
    notify_name = f"@edgeagent-test-{uuid.uuid4().hex}"
    notify = Listener(b"\0" + notify_name[1:].encode())
    notifier = Notifier(notify_name, backend="socket")
    throttle = StatusThrottle(notifier, 0.2)
    try:
        for text in ("a", "b", "c"):  # a at once; b and c within 0.2 s: c, at its end
            throttle.status(text)
        await asyncio.sleep(0.35)
        throttle.status("c")  # shown already: not again
        throttle.status("d")  # 0.2 s after the last one: at once
        await until(lambda: len(notify.got) >= 3, 2, "three datagrams")
        await asyncio.sleep(0.3)
    finally:
        throttle.close()
        notifier.close()
        notify.close()
    assert notify.texts() == ["STATUS=a", "STATUS=c", "STATUS=d"], notify.texts()
    assert notify.got[1][0] - notify.got[0][0] >= 0.18, notify.got


async def test_the_worker_process_notifies_and_reloads_its_config_file(livekit_server: LiveKitServer,
                                                                      tmp_path: Path) -> None:
    """`edgeagent worker` under a stand-in systemd: READY=1 and STATUS= with the worker's state, the
    [gpio] LED opened (gpiozero's mock pins), SIGHUP reads the config file again (RELOADING=1,
    READY=1; the change waits for the next session), SIGTERM: STOPPING=1 and exit 0."""
    name = f"svc-{uuid.uuid4().hex[:6]}"
    notify_name = f"@edgeagent-test-{uuid.uuid4().hex}"
    notify = Listener(b"\0" + notify_name[1:].encode())
    config = tmp_path / "config.toml"

    def write(speed: float) -> None:
        config.write_text(f'log_level = "info"\n\n[tts]\nspeed = {speed}\n\n[gpio]\nled_pin = "17"\n')

    write(1.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    env.update(NOTIFY_SOCKET=notify_name, EDGEAGENT_STATE=str(tmp_path / "state"), EDGEAGENT_CONFIG=str(config),
               GPIOZERO_PIN_FACTORY="mock", EDGEAGENT__LIVEKIT__API_KEY=livekit_server.api_key,
               EDGEAGENT__LIVEKIT__API_SECRET=livekit_server.api_secret)
    proc = Process(await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "worker", "--url", livekit_server.url, "--agent-name", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env))
    available = f"STATUS=worker available (agent {name}, id AW_"
    try:
        await until_in(lambda: index_of(notify, "READY=1") is not None, "READY=1", 180, proc)
        await until_in(lambda: any(t.startswith(available) for t in notify.texts()), "available", 15, proc)
        write(1.3)
        proc.proc.send_signal(signal.SIGHUP)
        await until_in(lambda: "config: tts.speed changed in the file: takes effect at the worker's next session"
                       in proc.out, "the reload", 15, proc)
        proc.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.proc.wait(), 20)
        await asyncio.wait_for(proc.reader, 5)
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
            await asyncio.wait_for(proc.proc.wait(), 10)
        await asyncio.sleep(0.2)
        notify.close()
    assert code == 0, proc.out
    assert "gpio: LED on 17" in proc.out, proc.out
    texts = notify.texts()
    assert texts[0].startswith("STATUS=loading models") and texts[1].startswith("READY=1\nSTATUS=worker "), texts
    reloading = index_of(notify, "RELOADING=1")
    assert reloading is not None and index_of(notify, "READY=1", reloading) is not None, texts
    assert index_of(notify, "STOPPING=1") is not None, texts
