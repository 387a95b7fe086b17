"""Remote configuration over the room (edgeagent.room.config_rpc) against the real livekit-server.

The device side is a :class:`RoomLink` with a :class:`ConfigStore` in a temp dir and
:class:`RoomControl` attached after each join (no models: the RPC layer, the
authorisation, the limits and the durable store are what is tested here). Controllers
are participants written with the ``livekit`` SDK (:class:`Controller`) and the
``edgeagent config`` CLI. Every refused call must leave the overlay on disk byte for byte
as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from live import bounded

from edgeagent import config as config_mod
from edgeagent.config.control import ControlConfig
from edgeagent.config.room import LiveKitConfig
from edgeagent.control.store import ConfigStore
from edgeagent.room.config_client import Controller, ControllerError, controller_token
from edgeagent.room.config_rpc import RoomControl
from edgeagent.room.connection import RoomLink

if TYPE_CHECKING:
    from conftest import LiveKitServer

pytestmark = pytest.mark.livekit
DEVICE = "edgeagent-device"
ADMIN = "admin-laptop"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Device:
    store: ConfigStore
    control: RoomControl
    link: RoomLink
    room: str

    def on_disk(self) -> bytes | None:
        return self.store.path.read_bytes() if self.store.path.exists() else None


@asynccontextmanager
async def device(server: LiveKitServer, tmp_path: Path, **control: Any) -> AsyncIterator[Device]:
    room = f"control-{uuid.uuid4().hex[:8]}"
    ctl_cfg = ControlConfig(**{"allowed_identities": (ADMIN,), **control})
    base = config_mod.Config(control=ctl_cfg)
    store = ConfigStore.open(base, tmp_path / "state" / "remote-config.json")
    rc = RoomControl(store, ctl_cfg)
    link = RoomLink(LiveKitConfig(url=server.url, api_key=server.api_key, api_secret=server.api_secret,
                                  room=room, identity=DEVICE), backoff_s=0.2)
    link.add_connected_hook(rc.attach)
    link.add_disconnected_hook(rc.detach)
    await link.start()
    assert await link.wait_connected(20), link.last_error
    try:
        yield Device(store, rc, link, room)
    finally:
        await bounded(link.aclose(), "device leaves", 30)


def token(server: LiveKitServer, room: str, identity: str, attributes: dict[str, str] | None = None) -> str:
    return controller_token(server.api_key, server.api_secret, room, identity, attributes=attributes)


@asynccontextmanager
async def controller(server: LiveKitServer, dev: Device, identity: str = ADMIN,
                     attributes: dict[str, str] | None = None) -> AsyncIterator[Controller]:
    ctl = Controller(server.url, token(server, dev.room, identity, attributes), DEVICE)
    await bounded(ctl.__aenter__(), f"{identity} joins")
    try:
        yield ctl
    finally:
        await bounded(ctl.__aexit__(None, None, None), f"{identity} leaves")


async def refused(call: Any) -> ControllerError:
    with pytest.raises(ControllerError) as info:
        await bounded(call, "the call", 30)
    return info.value


async def test_get_set_round_trip_durable_and_announced(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path) as dev, controller(livekit_server, dev) as admin, \
            controller(livekit_server, dev, "viewer") as viewer:
        got = await bounded(admin.get(), "get")
        assert got["v"] == 1 and got["ok"] is True and got["revision"] == 0
        assert got["config"]["tts"]["speed"] == 1.0
        done = await bounded(admin.set({"tts": {"speed": 1.25}, "agent": {"instructions": "Be brief."}}), "set")
        assert done["revision"] == 1
        assert {c["path"]: c["new"] for c in done["changed"]} == {"tts.speed": 1.25,
                                                                  "agent.instructions": "Be brief."}
        assert done["reload"] == []
        # Everyone in the room hears about it; anyone may read it (restrict_get is off).
        notice = await bounded(viewer.notices.get(), "the change notice")
        assert notice["revision"] == 1 and notice["by"] == ADMIN
        seen = await bounded(viewer.get(), "viewer get")
        assert seen["revision"] == 1 and seen["config"]["tts"]["speed"] == 1.25
        assert "tts" in (await bounded(viewer.schema(), "schema"))["schema"]["properties"]
    # Durable: a fresh store over the same file sees it, and the file is private.
    again = ConfigStore.open(config_mod.Config(), dev.store.path)
    assert again.revision == 1 and again.config.tts.speed == 1.25
    assert again.config.agent.instructions == "Be brief."
    assert (dev.store.path.stat().st_mode & 0o777) == 0o600


BAD: list[tuple[str, Any, str, int]] = [
    # (what, raw payload or request dict, expected error code, RPC code)
    ("not JSON", "{this is not json", "not_json", 400),
    ("a JSON list", "[1, 2, 3]", "bad_shape", 400),
    ("no version", json.dumps({"patch": {}, "base_revision": 0}), "unsupported_version", 400),
    ("patch not an object", {"base_revision": 0, "patch": "tts.speed=2"}, "bad_shape", 400),
    ("unknown key", {"base_revision": 0, "patch": {"tts": {"sped": 1.2}}}, "unknown_key", 422),
    ("unknown section", {"base_revision": 0, "patch": {"gpio": {"pin": 4}}}, "unknown_key", 422),
    ("wrong type", {"base_revision": 0, "patch": {"tts": {"speed": "fast"}}}, "wrong_type", 422),
    ("string for a number", {"base_revision": 0, "patch": {"llm": {"max_tokens": "64"}}}, "wrong_type", 422),
    ("out of range", {"base_revision": 0, "patch": {"llm": {"temperature": 7.5}}}, "out_of_range", 422),
    ("not a choice", {"base_revision": 0, "patch": {"activation": {"mode": "sometimes"}}}, "out_of_range", 422),
    ("read-only key", {"base_revision": 0, "patch": {"livekit": {"url": "ws://elsewhere"}}}, "read_only", 422),
    ("secret not allowed", {"base_revision": 0, "patch": {"livekit": {"api_secret": "x" * 40}}},
     "secret_not_allowed", 422),
    ("stale revision", {"base_revision": 5, "patch": {"tts": {"speed": 1.1}}}, "stale_revision", 409),
    ("oversized", {"base_revision": 0, "patch": {"agent": {"instructions": "x" * 3000}}}, "too_large", 413),
]


async def test_bad_input_gets_a_structured_error_and_changes_nothing(livekit_server: LiveKitServer,
                                                                    tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path, max_payload_bytes=2048, rate_burst=100) as dev, \
            controller(livekit_server, dev) as admin:
        await bounded(admin.set({"tts": {"speed": 1.1}}, 0), "a first change")  # something on disk
        for what, payload, code, rpc in BAD:
            before = dev.on_disk()
            if isinstance(payload, dict) and payload.get("base_revision") == 0:
                payload = {**payload, "base_revision": dev.store.revision}
            err = await refused(admin.call("set", payload))
            assert err.error is not None, what
            assert err.code == code, (what, err.error)
            assert f"(rpc {rpc})" in str(err), (what, str(err))
            assert err.error["problems"] and all({"path", "code", "reason"} <= set(p) for p in err.error["problems"])
            assert dev.on_disk() == before, f"{what}: the overlay changed"
            assert dev.store.revision == 1, what
        # The structured error names the field.
        err = await refused(admin.call("set", {"base_revision": 1, "patch": {"tts": {"speed": "fast"}}}))
        assert err.error is not None and err.error["problems"][0]["path"] == "tts.speed"


async def test_unauthorised_and_flooding_callers_are_refused(livekit_server: LiveKitServer, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    async with device(livekit_server, tmp_path, rate_burst=3, rate_per_minute=6,
                      allowed_attribute="edgeagent.role=admin") as dev, \
            controller(livekit_server, dev, "mallory") as mallory, \
            controller(livekit_server, dev, "ops-phone", {"edgeagent.role": "admin"}) as ops:
        before = dev.on_disk()
        err = await refused(mallory.set({"tts": {"speed": 2.0}}, 0))
        assert err.code == "forbidden" and "(rpc 403)" in str(err)
        assert dev.on_disk() == before and dev.store.revision == 0
        assert any("mallory" in r.getMessage() and "forbidden" in r.getMessage() for r in caplog.records)
        # The token attribute allows set.
        done = await bounded(ops.set({"tts": {"speed": 0.9}}, 0), "set by attribute")
        assert done["revision"] == 1
        # A flood: the burst passes, then rate_limited; nothing else changes.
        codes = []
        for _ in range(6):
            try:
                await bounded(mallory.get(), "get")
                codes.append("ok")
            except ControllerError as exc:
                codes.append(str(exc.code))
        assert codes[:3] == ["ok", "ok", "ok"] and "rate_limited" in codes[3:], codes
        assert dev.store.revision == 1


async def test_restricted_get(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path, restrict_get=True) as dev, \
            controller(livekit_server, dev, "guest") as guest, controller(livekit_server, dev) as admin:
        assert (await refused(guest.get())).code == "forbidden"
        assert (await refused(guest.schema())).code == "forbidden"
        assert (await bounded(admin.get(), "admin get"))["revision"] == 0


async def test_two_controllers_at_once_one_wins_and_the_other_is_told(livekit_server: LiveKitServer,
                                                                      tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path, allowed_identities=(ADMIN, "second")) as dev, \
            controller(livekit_server, dev) as a, controller(livekit_server, dev, "second") as b:
        for round_ in range(3):
            rev = dev.store.revision
            results = await bounded(asyncio.gather(a.set({"tts": {"speed": 1.0 + 0.1 * (round_ + 1)}}, rev),
                                                   b.set({"tts": {"speed": 0.5 + 0.1 * (round_ + 1)}}, rev),
                                                   return_exceptions=True), "two sets")
            won = [r for r in results if isinstance(r, dict)]
            lost = [r for r in results if isinstance(r, ControllerError)]
            assert len(won) == 1 and len(lost) == 1, results
            assert lost[0].code == "stale_revision" and lost[0].error is not None
            assert lost[0].error["revision"] == rev + 1
            assert dev.store.revision == rev + 1
            winner = won[0]["changed"][0]["new"]
            assert dev.store.config.tts.speed == winner  # the winner's value, not a mix or the loser's


@contextlib.contextmanager
def small_disk(path: Path, size: str = "256k") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (the tests run as root, as CI does here)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=10)
    assert mounted.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


async def test_a_full_disk_gets_507_changes_nothing_and_the_next_set_works(livekit_server: LiveKitServer,
                                                                           tmp_path: Path) -> None:
    """The state directory on a real full tmpfs: a set that cannot be saved is refused with the
    structured write_failed (RPC 507); memory and disk keep the old config, the device serves on,
    and once there is room again the next set is saved."""
    with small_disk(tmp_path / "state"):
        async with device(livekit_server, tmp_path) as dev, controller(livekit_server, dev) as admin:
            await bounded(admin.set({"tts": {"speed": 1.1}}, 0), "a first change")
            before, good = dev.on_disk(), dev.store.good_path.read_bytes()
            filler = fill(dev.store.path.parent)
            err = await refused(admin.set({"tts": {"speed": 1.4}, "agent": {"instructions": "Be brief."}}, 1))
            assert err.code == "write_failed" and "(rpc 507)" in str(err), str(err)
            assert err.error is not None and err.error["revision"] == 1
            assert dev.on_disk() == before and dev.store.good_path.read_bytes() == good
            assert (dev.store.revision, dev.store.config.tts.speed) == (1, 1.1)
            assert sorted(p.name for p in dev.store.path.parent.iterdir()) == sorted(
                ["filler", dev.store.path.name, dev.store.good_path.name]), "a temp file was left behind"
            got = await bounded(admin.get(), "get on a full disk")  # still serving
            assert got["revision"] == 1 and got["config"]["tts"]["speed"] == 1.1
            filler.unlink()
            done = await bounded(admin.set({"tts": {"speed": 1.4}}, 1), "set after space returned")
            assert done["revision"] == 2
            again = ConfigStore.open(config_mod.Config(), dev.store.path)  # and it is on the disk
            assert (again.revision, again.config.tts.speed) == (2, 1.4)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEAGENT_CONFIG": "/nonexistent/edgeagent.toml"}
    return subprocess.run([sys.executable, "-m", "edgeagent", "config", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


async def test_cli_controller(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    async with device(livekit_server, tmp_path) as dev:
        common = ["--url", livekit_server.url, "--room", dev.room, "--device", DEVICE,
                  "--api-key", livekit_server.api_key, "--api-secret", livekit_server.api_secret]
        out = await asyncio.to_thread(run_cli, "set", *common, "--identity", ADMIN, "tts.speed=1.3",
                                      "agent.instructions=Answer in French.")
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["revision"] == 1
        assert dev.store.config.tts.speed == 1.3 and dev.store.config.agent.instructions == "Answer in French."
        got = await asyncio.to_thread(run_cli, "get", *common, "--identity", "someone")
        assert got.returncode == 0, got.stdout + got.stderr
        assert json.loads(got.stdout)["config"]["tts"]["speed"] == 1.3
        before = dev.on_disk()
        bad = await asyncio.to_thread(run_cli, "set", *common, "--identity", "someone", "tts.speed=1.5")
        # stdout: the device's structured error as JSON; stderr: one line for a person.
        assert bad.returncode == 1 and json.loads(bad.stdout)["code"] == "forbidden", bad.stdout + bad.stderr
        assert bad.stderr.count("\n") == 1 and "(rpc 403)" in bad.stderr, bad.stderr
        typo = await asyncio.to_thread(run_cli, "set", *common, "--identity", ADMIN, "tts.sped=1.5")
        assert typo.returncode == 1 and json.loads(typo.stdout)["code"] == "unknown_key", typo.stdout
        assert json.loads(typo.stdout)["problems"][0]["path"] == "tts.sped", typo.stdout
        assert dev.on_disk() == before
