"""Shared fixtures. The services they need are started by ``scripts/test``.

A missing service is a loud failure that names the command to run, never a skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeagent.bench.server import Server, start_server
from edgeagent.voice import Models

# Remote config changes made by tests (run_room and the runner open the store) go to a state
# dir of this run, never to the user's ~/.local/state/edgeagent.
os.environ.setdefault("EDGEAGENT_STATE", tempfile.mkdtemp(prefix="edgeagent-test-state-"))


@dataclass(frozen=True)
class PulseDevices:
    """The PulseAudio null sinks of DESIGN.md §5.

    Play into ``mic_sink`` to speak into the virtual mic (the default source is
    its monitor); record ``speaker_monitor`` to hear what we played on the
    default sink.
    """

    mic_sink: str = "mic_feed"
    speaker_sink: str = "speaker"
    speaker_monitor: str = "speaker.monitor"


@pytest.fixture(scope="session")
def pulse() -> PulseDevices:
    if shutil.which("pactl") is None:
        pytest.fail("pactl is not installed: run scripts/setup --dev (installs pulseaudio-utils)")
    try:
        out = subprocess.run(
            ["pactl", "list", "short", "sinks"], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        pytest.fail("pactl did not answer within 10 s: is PulseAudio hung? run tests via scripts/test")
    if out.returncode != 0:
        pytest.fail(f"PulseAudio is not running ({out.stderr.strip()}): run the tests via scripts/test")
    devices = PulseDevices()
    names = {line.split("\t")[1] for line in out.stdout.splitlines() if "\t" in line}
    missing = {devices.mic_sink, devices.speaker_sink} - names
    if missing:
        pytest.fail(f"PulseAudio lacks the null sinks {sorted(missing)}: run the tests via scripts/test")
    return devices


@pytest.fixture
def loopback(pulse: PulseDevices) -> Iterator[None]:
    """speaker.monitor → mic_feed: the default output is heard by the default input."""
    out = subprocess.run(
        [
            "pactl",
            "load-module",
            "module-loopback",
            f"source={pulse.speaker_monitor}",
            f"sink={pulse.mic_sink}",
            "latency_msec=30",
            "adjust_time=0",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, f"pactl load-module module-loopback failed: {out.stderr}"
    module = out.stdout.strip()
    try:
        yield
    finally:
        subprocess.run(["pactl", "unload-module", module], timeout=10, check=True)


@pytest.fixture(scope="session")
def _shared_models() -> Iterator[Models]:
    loaded = asyncio.run(asyncio.wait_for(Models.load(), 180))
    yield loaded
    asyncio.run(asyncio.wait_for(loaded.aclose(), 30))


@pytest.fixture(scope="module")
def models(_shared_models: Models, request: pytest.FixtureRequest) -> Iterator[Models]:
    """Every default model, loaded once per test session. A module that changed them (a remote
    reload swaps a stage, a speed change alters Piper's settings, a session left a metrics
    listener behind) gets them loaded afresh after it, so the next module starts from the
    defaults; the reload is printed with what changed."""
    before = stage_settings(_shared_models)
    yield _shared_models
    changed = sorted(k for k, v in stage_settings(_shared_models).items() if before.get(k) != v)
    if changed:
        print(f"\n{request.module.__name__} changed the shared models ({', '.join(changed)}): loaded afresh")
        asyncio.run(asyncio.wait_for(_reload(_shared_models), 180))


async def _reload(shared: Models) -> None:
    fresh = await Models.load()
    await shared.aclose()
    for f in dataclasses.fields(Models):
        setattr(shared, f.name, getattr(fresh, f.name))


SIMPLE = (int, float, str, bool, Path, type(None), tuple, dict)


def stage_settings(models: Models) -> dict[str, object]:
    """What a test module may change in the shared stages: which object each stage is, its
    settings (simple values and dataclasses, one level down) and how many metrics listeners it
    has; not its threads, caches or timings."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(Models):
        stage = getattr(models, f.name)
        out[f.name] = id(stage)
        for name, value in (vars(stage) if stage is not None else {}).items():
            if name.startswith(("last_", "_last")):
                continue
            if name == "_metric_listeners":
                out[f"{f.name}.listeners"] = len(value)
            elif isinstance(value, SIMPLE) or dataclasses.is_dataclass(value):
                out[f"{f.name}.{name}"] = repr(value)
    return out


@dataclass(frozen=True)
class LiveKitServer:
    url: str
    api_key: str
    api_secret: str
    log: Path  # the server's log, which records each worker registration

    def log_mark(self) -> int:
        """Where the server's log ends now: pass it as ``since`` to :meth:`knows_worker`."""
        return self.log.stat().st_size

    async def knows_worker(self, agent_name: str, count: int = 1, since: int = 0, timeout: float = 10.0) -> None:
        """Wait until the server's log, after byte ``since``, says it has recorded ``count``
        registrations of workers named ``agent_name``. Dispatch only after this: livekit-server
        (service/agentservice.go) answers a worker's registration *before* it records the worker
        and invalidates its cache of agent names, and a dispatch that comes in between is dropped
        for good ("not dispatching agent job since no worker is available"), so a worker that has
        just seen its registration answered may not be dispatchable yet."""
        want = f'"agentName": "{agent_name}"'.encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        found, rest = 0, b""
        with self.log.open("rb") as f:
            f.seek(since)
            while True:  # only what was written since the last look is read
                *lines, rest = (rest + f.read()).split(b"\n")
                found += sum(b"worker registered" in ln and want in ln for ln in lines)
                if found >= count:
                    return
                assert loop.time() < deadline, f"the server's log records {found} of {count} workers {agent_name}"
                await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def livekit_server() -> LiveKitServer:
    """The loopback livekit-server that scripts/test starts (env LIVEKIT_URL/API_KEY/API_SECRET/LOG)."""
    env = {k: os.environ.get(k, "") for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_LOG")}
    missing = [k for k, v in env.items() if not v]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run the tests via scripts/test, which starts livekit-server")
    return LiveKitServer(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"],
                         Path(env["LIVEKIT_LOG"]))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A livekit-server of the test's own, to kill and restart (the shared one of scripts/test
    is never killed)."""
    srv = start_server(Path(__file__).resolve().parents[1], tmp_path / "livekit")
    try:
        yield srv
    finally:
        srv.stop()
