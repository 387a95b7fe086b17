"""Remote config, the durable layer: revisions, the overlay file, rollback, last-known-good, crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import crash_writer
import pytest

from edgeagent import config
from edgeagent.control.errors import ControlError
from edgeagent.control.patch import Change
from edgeagent.control.store import ConfigStore, encode

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

TOML = """\
# The kitchen board. This comment must survive remote changes.
[agent]
name = "kitchen"   # shown in the room

[tts]
speed = 1.25
"""


async def bounded(aw: Awaitable[T], timeout: float = 10.0) -> T:
    return await asyncio.wait_for(aw, timeout)


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def base(toml: Path) -> config.Config:
    return config.load(toml, env={})


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    return tmp_path / "state" / "remote-config.json"


def read_doc(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict)
    return doc


def raw(path: Path) -> bytes | None:
    """The file's bytes, None when it is absent (a plain function: async tests call it)."""
    return path.read_bytes() if path.exists() else None


def put(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_round_trip_keeps_the_file_and_survives_a_restart(
        toml: Path, base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    assert (store.revision, store.config, store.unconfirmed) == (0, base, False)
    assert raw(overlay) is None
    got = store.get()
    assert got["revision"] == 0 and got["config"]["agent"]["name"] == "kitchen"

    revision, changes = await bounded(store.set({"tts": {"speed": 1.5}, "agent": {"instructions": "Be brief."}}, 0))
    assert revision == 1 == store.revision
    assert changes == [Change("agent.instructions", base.agent.instructions, "Be brief."),
                       Change("tts.speed", 1.25, 1.5)]
    assert (store.config.tts.speed, store.config.agent.instructions, store.config.agent.name) == (
        1.5, "Be brief.", "kitchen")
    assert raw(toml) == TOML.encode()  # the user's file, comments and all, is never rewritten
    assert read_doc(overlay) == {"version": 1, "revision": 1,
                                 "patch": {"agent": {"instructions": "Be brief."}, "tts": {"speed": 1.5}}}
    assert raw(store.good_path) == raw(overlay)
    assert mode(overlay) == 0o600 and mode(store.good_path) == 0o600

    revision, changes = await bounded(store.set({"tts": {"speed": None}}, 1))
    assert revision == 2 and changes == [Change("tts.speed", 1.5, 1.0)]  # null: the default, not the file's 1.25

    again = ConfigStore.open(config.load(toml, env={}), overlay)
    assert (again.revision, again.config, again.unconfirmed) == (2, store.config, False)
    assert again.get() == store.get()
    assert sorted(p.name for p in overlay.parent.iterdir()) == ["remote-config.good.json", "remote-config.json"]


async def test_a_no_op_writes_nothing_and_keeps_the_revision(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    assert await bounded(store.set({"tts": {"speed": 1.25}}, 0)) == (0, [])
    assert raw(overlay) is None
    await bounded(store.set({"agent": {"name": "hall"}}, 0))
    before = raw(overlay)
    assert await bounded(store.set({"agent": {"name": "hall"}}, 1)) == (1, [])
    assert raw(overlay) == before


async def test_a_refused_change_leaves_disk_and_memory_alone(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    await bounded(store.set({"llm": {"temperature": 0.5}}, 0))
    before = raw(overlay)
    for patch in ({"llm": {"temperature": 7}}, {"audio": {"input_device": "usb"}}, {"nope": 1},
                  {"livekit": {"token": "t"}}, ["not", "an", "object"]):
        with pytest.raises(ControlError):
            await bounded(store.set(patch, 1))
        assert raw(overlay) == before
        assert (store.revision, store.config.llm.temperature) == (1, 0.5)


async def test_stale_revision_is_refused_with_the_current_one(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    await bounded(store.set({"tts": {"speed": 2.0}}, 0))
    await bounded(store.set({"tts": {"speed": 3.0}}, 1))
    before = raw(overlay)
    for stale in (0, 1, 3):
        with pytest.raises(ControlError) as exc:
            await bounded(store.set({"tts": {"speed": 0.5}}, stale))
        assert (exc.value.code, exc.value.revision) == ("stale_revision", 2)
        assert exc.value.problems[0].path == "base_revision"
    assert raw(overlay) == before and store.config.tts.speed == 3.0
    assert (await bounded(store.set({"tts": {"speed": 0.5}}, None)))[0] == 3  # None: no check


async def test_two_controllers_at_once_one_wins_no_lost_update(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    applied: list[int] = []

    async def slow_apply(cfg: config.Config, changes: list[Change]) -> None:
        await asyncio.sleep(0.05)  # both requests are in flight while the first applies
        applied.append(len(changes))

    alice = store.set({"tts": {"speed": 1.5}}, 0, slow_apply)
    bob = store.set({"agent": {"instructions": "Speak French."}}, 0, slow_apply)
    results = await bounded(asyncio.gather(alice, bob, return_exceptions=True))
    wins = [r for r in results if isinstance(r, tuple)]
    losses = [r for r in results if isinstance(r, ControlError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert wins[0][0] == 1 and losses[0].code == "stale_revision" and losses[0].revision == 1
    assert applied == [1]
    alice_won = results[0] is wins[0]
    # The loser gets the new revision, and its retry keeps the winner's change.
    retry = {"agent": {"instructions": "Speak French."}} if alice_won else {"tts": {"speed": 1.5}}
    assert (await bounded(store.set(retry, 1)))[0] == 2
    reopened = ConfigStore.open(base, overlay)
    assert (reopened.config.tts.speed, reopened.config.agent.instructions) == (1.5, "Speak French.")


@pytest.mark.parametrize("kind", ["sync", "async", "first"])
async def test_a_failing_apply_hook_rolls_back(base: config.Config, overlay: Path, kind: str) -> None:
    store = ConfigStore.open(base, overlay)
    if kind != "first":
        await bounded(store.set({"llm": {"temperature": 0.5}}, 0))
    before_disk = raw(overlay)
    before_good = raw(store.good_path)
    before = (store.revision, store.config)
    seen: list[config.Config] = []

    def sync_hook(cfg: config.Config, changes: list[Change]) -> None:
        seen.append(cfg)
        raise FileNotFoundError("no such model: /models/big.gguf")

    async def async_hook(cfg: config.Config, changes: list[Change]) -> None:
        await asyncio.sleep(0)
        sync_hook(cfg, changes)

    with pytest.raises(ControlError) as exc:
        await bounded(store.set({"llm": {"model": "/models/big.gguf"}}, store.revision,
                                async_hook if kind == "async" else sync_hook))
    assert exc.value.code == "apply_failed" and "no such model" in str(exc.value)
    assert exc.value.revision == before[0]
    assert seen[0].llm.model == "/models/big.gguf"  # the hook saw the new config
    assert (store.revision, store.config) == before
    assert raw(overlay) == before_disk  # rolled back on disk
    assert raw(store.good_path) == before_good
    assert ConfigStore.open(base, overlay).config == before[1]
    assert (await bounded(store.set({"tts": {"speed": 2.0}}, before[0])))[0] == before[0] + 1  # still usable


async def test_a_cancelled_apply_rolls_back_too(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)

    async def hang(cfg: config.Config, changes: list[Change]) -> None:
        await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(store.set({"tts": {"speed": 2.0}}, 0, hang), 0.2)
    assert (store.revision, store.config) == (0, base)
    assert raw(overlay) is None


async def test_a_failed_write_changes_nothing(tmp_path: Path, base: config.Config) -> None:
    overlay = tmp_path / "gone" / "remote-config.json"
    store = ConfigStore.open(base, overlay)
    overlay.parent.rmdir()  # the state directory vanished (an unmounted card; root ignores chmod)
    with pytest.raises(ControlError) as exc:
        await bounded(store.set({"tts": {"speed": 2.0}}, 0))
    assert (exc.value.code, exc.value.revision) == ("write_failed", 0)
    assert (store.revision, store.config) == (0, base)


async def test_secrets_are_stored_privately_and_never_shown(tmp_path: Path, overlay: Path) -> None:
    toml = tmp_path / "secret.toml"
    toml.write_text("[control]\nallow_secrets = true\n")
    store = ConfigStore.open(config.load(toml, env={}), overlay)
    _, changes = await bounded(store.set({"livekit": {"e2ee_key": "correct horse battery"}}, 0))
    assert changes == [Change("livekit.e2ee_key", None, "***")]
    assert store.config.livekit.e2ee_key == "correct horse battery"
    assert store.get()["config"]["livekit"]["e2ee_key"] == "***"
    assert "correct horse" not in json.dumps(store.get())
    assert read_doc(overlay)["patch"] == {"livekit": {"e2ee_key": "correct horse battery"}}
    assert mode(overlay) == 0o600 and mode(store.good_path) == 0o600
    # Turning allow_secrets off in the file keeps what was set, but no new secret can be set.
    strict = ConfigStore.open(config.Config(), overlay)
    assert strict.config.livekit.e2ee_key == "correct horse battery"
    with pytest.raises(ControlError) as exc:
        await bounded(strict.set({"livekit": {"e2ee_key": "another long key"}}, 1))
    assert exc.value.code == "secret_not_allowed"


async def test_a_bad_overlay_falls_back_to_the_last_known_good(
        base: config.Config, overlay: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore.open(base, overlay)
    await bounded(store.set({"tts": {"speed": 2.0}}, 0))
    await bounded(store.set({"tts": {"speed": 3.0}}, 1))
    good = store.config
    for bad in (b'{"version": 1, "revision": 3, "patch": {"tts": {"spe', b"\x00" * 64, b"",
                encode(3, {"audio": {"input_device": "usb"}}),  # hand-edited: a read-only setting
                encode(3, {"tts": {"speed": "fast"}}), b'{"version": 2, "revision": 3, "patch": {}}'):
        put(overlay, bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgeagent.control.store"):
            store = ConfigStore.open(base, overlay)
        assert store.config == good, bad
        assert store.revision > 2  # a new revision: controllers must get it again
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "last-known-good" in warnings[0], warnings
        assert raw(store.rejected_path) == bad
        assert ConfigStore.open(base, overlay).config == good  # the overlay was repaired
    # Neither usable: the file config alone.
    put(overlay, b"{")
    put(store.good_path, b"[]")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeagent.control.store"):
        store = ConfigStore.open(base, overlay)
    assert store.config == base
    assert ["config file alone" in r.getMessage() for r in caplog.records] == [True]
    assert (await bounded(store.set({"tts": {"speed": 0.5}}, store.revision)))[1] == [Change("tts.speed", 1.25, 0.5)]


async def test_an_overlay_that_no_longer_fits_the_edited_file_is_rejected(
        tmp_path: Path, overlay: Path, caplog: pytest.LogCaptureFixture) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[activation]\nmode = "ptt"\n')
    store = ConfigStore.open(config.load(toml, env={}), overlay)
    await bounded(store.set({"activation": {"wake_words": []}}, 0))
    toml.write_text('[activation]\nmode = "wake"\n')  # the owner edits the file: wake mode needs a word
    edited = config.load(toml, env={})
    with caplog.at_level(logging.WARNING, logger="edgeagent.control.store"):
        store = ConfigStore.open(edited, overlay)
    assert store.config == edited
    [line] = [r.getMessage() for r in caplog.records]
    assert "activation.wake_words" in line and "config file alone" in line
    assert read_doc(store.rejected_path)["patch"] == {"activation": {"wake_words": []}}


async def test_stray_temp_files_are_removed(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    await bounded(store.set({"tts": {"speed": 2.0}}, 0))
    strays = [overlay.parent / ".remote-config.json.abc123.tmp", overlay.parent / ".remote-config.good.json.x.tmp"]
    for p in strays:
        put(p, b'{"version": 1, "rev')
    keep = overlay.parent / "notes.txt"
    keep.write_text("mine")
    store = ConfigStore.open(base, overlay)
    assert store.config.tts.speed == 2.0
    assert not any(p.exists() for p in strays) and keep.exists()


async def test_unconfirmed_when_the_apply_never_finished(base: config.Config, overlay: Path) -> None:
    store = ConfigStore.open(base, overlay)
    await bounded(store.set({"tts": {"speed": 2.0}}, 0))
    put(overlay, encode(2, {"tts": {"speed": 3.0}}))  # what a crash inside the apply hook leaves
    store = ConfigStore.open(base, overlay)
    assert (store.config.tts.speed, store.unconfirmed) == (3.0, True)


def test_state_dir_follows_the_environment(tmp_path: Path) -> None:
    code = "from edgeagent.paths import state_dir; print(state_dir())"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("EDGEAGENT_STATE", "STATE_DIRECTORY", "XDG_STATE_HOME")}
    for extra, expected in (
        ({"EDGEAGENT_STATE": str(tmp_path / "a"), "STATE_DIRECTORY": "/var/lib/x"}, tmp_path / "a"),
        ({"STATE_DIRECTORY": "/var/lib/edgeagent:/var/lib/other"}, Path("/var/lib/edgeagent")),
        ({"XDG_STATE_HOME": str(tmp_path / "xdg")}, tmp_path / "xdg" / "edgeagent"),
        ({"HOME": str(tmp_path / "home")}, tmp_path / "home" / ".local" / "state" / "edgeagent"),
    ):
        out = subprocess.run([sys.executable, "-c", code], env=clean | extra, capture_output=True, text=True,
                             timeout=30, check=True)
        assert Path(out.stdout.strip()) == expected


# -- crash safety ---------------------------------------------------------------------------------

KILLS = 200


@pytest.mark.reliability
def test_sigkill_during_writes_leaves_the_old_or_the_new_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    overlay = tmp_path / "state" / "remote-config.json"
    rng = random.Random(6)
    asyncio.run(ConfigStore.open(config.Config(), overlay).set(crash_writer.A, 0))  # a config to keep
    last = 1
    in_flight = 0  # kills that caught a write under way (a temp file, or the backup not yet written)
    ctx = multiprocessing.get_context("forkserver")
    # Imported once in the forkserver, not in each child (crash_writer alone took 140 ms a child).
    ctx.set_forkserver_preload(["__main__", "edgeagent.control.store", "crash_writer"])
    for _ in range(KILLS):
        ready, tell = ctx.Pipe(duplex=False)
        child = ctx.Process(target=crash_writer.write_forever, args=(str(overlay), tell), daemon=True)
        child.start()
        tell.close()
        try:
            assert ready.poll(30), f"the writer never started (exit code {child.exitcode})"
            assert ready.recv() == last  # it starts from what the last kill left
            time.sleep(rng.uniform(0, 0.06))  # a random moment in its first writes (about 6 ms each)
            assert child.is_alive(), "the writer stopped by itself"
        finally:
            child.kill()  # SIGKILL
            child.join(30)
            ready.close()
        assert child.exitcode == -signal.SIGKILL
        doc = read_doc(overlay)  # parses: never torn
        revision = doc["revision"]
        assert revision >= last, (revision, last)  # an acknowledged write is never lost
        text, speed, threshold = crash_writer.STATES[revision % 2]
        assert doc["patch"] == {"agent": {"instructions": text}, "tts": {"speed": speed},
                                "activation": {"wake_threshold": threshold}}
        good = read_doc(overlay.with_name("remote-config.good.json"))
        assert good["revision"] <= revision  # written just after the overlay: behind after a kill between
        strays = [p for p in overlay.parent.iterdir() if p.name.endswith(".tmp")]
        in_flight += bool(strays) or good["revision"] != revision
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgeagent.control.store"):
            store = ConfigStore.open(config.Config(), overlay)
        assert not caplog.records, [r.getMessage() for r in caplog.records]  # no fallback was needed
        assert (store.revision, store.config.agent.instructions, store.config.tts.speed,
                store.config.activation.wake_threshold) == (revision, text, speed, threshold)
        assert not [p.name for p in overlay.parent.iterdir() if p.name.endswith(".tmp")]
        assert mode(overlay) == 0o600
        last = revision
    print(f"{KILLS} kills: {in_flight} inside a write, {last} revisions written, 0 torn, 0 lost")
    # Most kills land inside a write here; none would mean the test tests nothing.
    assert in_flight, "no kill landed inside a write: make the writes slower or the delays shorter"
    assert last >= KILLS // 2, f"only {last} writes in {KILLS} kills: the writers hardly wrote"
