"""The soak benchmark (issue 18, item 2): the whole default stack, driven without pause, looked at every 30 s.

``scripts/soak --minutes N`` runs :func:`main`. It starts a private PulseAudio (the null
sinks of DESIGN.md §5: :mod:`edgeagent.bench.pulse`) and a private loopback livekit-server
(:mod:`edgeagent.bench.server`), then the device: ``edgeagent join`` with ``livekit.mode =
room+local`` (the default models, the local mic and speaker, and the room at once), in a
process of its own (:mod:`edgeagent.bench.soak_device`). Around it, in other processes: a
room participant (:mod:`edgeagent.bench.participant`) that speaks questions and types
``lk.chat`` messages, and a controller (this process) that calls ``edgeagent.config.get``
and ``set`` at its allowed rate. The spoken script (:mod:`edgeagent.bench.soak_drive`)
loops for N minutes; between two steps, every 30 s (10 s in a run under 10 minutes), the
device is sampled: RSS, open descriptors, threads, asyncio tasks, CPU. A run first goes
through the script until the device's history is full (6 passes), as a warm-up. The verdict is
:func:`edgeagent.bench.soak_judge.judge` (its docstring says how a short run's windows and
RSS limit scale). Prints a table, writes a PNG chart and ``soak.json``, prints one JSON
line last; exit 0 passed, 1 a check failed, 2 it could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.bench.soak_judge import Sample, judge, sample_dicts, sample_interval_s, warmup_cycles

log = logging.getLogger(__name__)

AGENT = "edgeagent-soak"
PEER = "soak-user"
CONTROLLER = "soak-controller"


def device_overrides(url: str, room: str) -> list[str]:
    return [f"livekit.url={url}", f"livekit.room={room}", f"livekit.identity={AGENT}", "livekit.mode=room+local",
            f"control.allowed_identities={CONTROLLER}"]


def device_env(server: Any, workdir: Path) -> dict[str, str]:
    """This process's environment (PulseAudio's included), the secret and a state dir of the run;
    no config file (the defaults)."""
    env = dict(os.environ, EDGEAGENT_STATE=str(workdir / "state"), EDGEAGENT_CONFIG=str(workdir / "none.toml"),
               EDGEAGENT__LIVEKIT__API_KEY=server.api_key, EDGEAGENT__LIVEKIT__API_SECRET=server.api_secret)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


async def soak(minutes: float, workdir: Path, root: Path) -> dict[str, Any]:
    """The whole run (services, device, drivers) and its figures."""
    from edgeagent.bench.pulse import start_pulse
    from edgeagent.bench.server import start_server
    from edgeagent.bench.soak_drive import make_sounds

    if shutil.which("espeak-ng") is None:
        from edgeagent.errors import EdgeAgentError

        raise EdgeAgentError("espeak-ng is not installed (scripts/setup --dev)")
    sounds = make_sounds(workdir / "sounds")
    pulse = start_pulse(workdir / "pulse")
    try:
        server = await asyncio.to_thread(start_server, root, workdir / "livekit")
        try:
            return await _drive(minutes, workdir, server, sounds)
        finally:
            server.stop()
    finally:
        pulse.stop()


async def _drive(minutes: float, workdir: Path, server: Any, sounds: Any) -> dict[str, Any]:
    from edgeagent.bench.participant import ParticipantProcess
    from edgeagent.bench.soak_drive import ControlTally, Device, Script, control_loop
    from edgeagent.errors import EdgeAgentError
    from edgeagent.room.config_client import controller_token

    room = f"soak-{os.getpid()}"
    device, peer, tally, gate = Device(), ParticipantProcess(workdir), ControlTally(), asyncio.Lock()
    await device.start(device_overrides(server.url, room), device_env(server, workdir), workdir / "device.log")
    controller: asyncio.Task[None] | None = None
    steps: list[Any] = []
    samples: list[Sample] = []
    rc: int | None = None
    try:
        if await device.wait(lambda ev: ev["msg"].startswith("room: published"), 0.0, 180) is None:
            raise EdgeAgentError(f"the device did not join the room within 180 s (log: {workdir / 'device.log'})")
        await peer.join(server.url, server.token(PEER, room), AGENT)
        deadline = time.monotonic() + 20
        while not peer.hearing:  # the agent's voice track reaches the participant
            if time.monotonic() > deadline:
                raise EdgeAgentError("the room participant does not hear the agent's track within 20 s")
            await asyncio.sleep(0.1)
        token = controller_token(server.api_key, server.api_secret, room, CONTROLLER)
        controller = asyncio.ensure_future(control_loop(server.url, token, AGENT, gate, tally))
        await _loop(Script(device, peer, sounds, time.monotonic()), device, gate, minutes, steps, samples)
    finally:
        if controller is not None:
            controller.cancel()
            await asyncio.gather(controller, return_exceptions=True)
        crashed = device.exited
        rc = await device.stop()
        await peer.leave()
    return figures(steps, samples, tally, minutes, rc if crashed is None else crashed, crashed is not None)


async def _loop(script: Any, device: Any, gate: asyncio.Lock, minutes: float, steps: list[Any],
                samples: list[Sample]) -> None:
    """The warm-up's steps (:func:`warmup_steps`), then ``minutes`` of steps, sampled every
    :func:`sample_interval_s` between two steps; the warm-up's times end up negative."""
    from edgeagent.bench.soak_drive import CYCLE

    start = time.monotonic()
    every, warm = sample_interval_s(minutes), warmup_cycles(minutes) * len(CYCLE)
    end = start + 60 * minutes if not warm else float("inf")
    last: tuple[float, float] | None = None
    next_sample = start
    while True:
        now = time.monotonic()
        if warm and len(steps) == warm:  # the warm-up is over: the clock starts now
            shift = now - start
            samples[:] = [dataclasses.replace(x, t_s=round(x.t_s - shift, 1)) for x in samples]
            for st in steps:
                st.t_s -= shift
            start, script.t0, end, warm = now, now, now + 60 * minutes, 0
            next_sample = now
        if now >= next_sample or now >= end:
            last = await _sample(device, gate, start, last, samples)
            next_sample += every
        if time.monotonic() >= end or device.exited is not None:
            return
        steps.append(await script.step())
        log.info("soak %.0f s: %s", time.monotonic() - start, steps[-1])


async def _sample(device: Any, gate: asyncio.Lock, t0: float, last: tuple[float, float] | None,
                  samples: list[Sample]) -> tuple[float, float]:
    """One sample between two steps, with no config call in flight; (monotonic time, CPU s) of it."""
    async with gate:
        await asyncio.sleep(0.5)
        raw = await device.sample()
    now = time.monotonic()
    cpu = None if last is None else 100.0 * (raw["cpu_s"] - last[1]) / (now - last[0])
    samples.append(Sample(round(now - t0, 1), round(raw["rss_mb"], 2), raw["fds"], raw["threads"], raw["tasks"],
                          None if cpu is None else round(cpu, 1)))
    return now, raw["cpu_s"]


def figures(steps: list[Any], samples: list[Sample], tally: Any, minutes: float, rc: int,
            crashed: bool) -> dict[str, Any]:
    latencies = [(s.t_s, ms) for s in steps for ms in s.latency_ms]
    asked = sum(s.questions for s in steps)
    answered = sum(s.answered for s in steps)
    duration = samples[-1].t_s if samples else 0.0
    fig = judge(samples, latencies, asked, answered, duration)
    fig.update(minutes=minutes, device_exit=rc, config_gets=tally.gets, config_sets=tally.sets,
               config_errors=tally.errors, steps=[asdict(s) for s in steps], samples=sample_dicts(samples),
               latencies=latencies, silence_turns=sum(s.extra_turns for s in steps if s.kind == "silence"),
               noise_turns=sum(s.extra_turns for s in steps if s.kind == "noise"))
    room = [s.room_e2e_ms for s in steps if s.room_e2e_ms is not None]
    fig["room_e2e_ms"] = room
    if crashed:
        fig["failed"].append(f"device: exited during the run (status {rc})")
    elif rc != 0:
        fig["failed"].append(f"device: exit status {rc} when stopped")
    if tally.errors:
        fig["failed"].append(f"config: {len(tally.errors)} calls failed: {tally.errors[:3]}")
    return fig


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to drive the device (default 60)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the chart, soak.json and the logs go (default: a new temp dir)")
    ap.add_argument("--chart", type=Path, help="the PNG (default: soak.png in --workdir)")
    ap.add_argument("--json-only", action="store_true", help="print only the JSON line")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each step")
    args = ap.parse_args(argv)
    if args.minutes < 1:
        ap.error("--minutes: at least 1")
    return args


def main(argv: list[str], root: Path) -> int:
    from edgeagent.bench import soak_report
    from edgeagent.errors import EdgeAgentError

    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgeagent-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        fig = asyncio.run(_bounded(soak(args.minutes, workdir, root), args.minutes))
    except (EdgeAgentError, FileNotFoundError, ImportError, asyncio.TimeoutError) as exc:
        print(f"soak: cannot run: {exc or type(exc).__name__} (logs in {workdir})", file=sys.stderr)
        return 2
    fig["wall_s"] = round(time.monotonic() - started, 1)
    fig["workdir"] = str(workdir)
    fig["chart"] = str(soak_report.chart(fig, args.chart or workdir / "soak.png"))
    (workdir / "soak.json").write_text(json.dumps(fig, indent=1) + "\n")
    if not args.json_only:
        print(soak_report.table(fig))
    summary = {k: v for k, v in fig.items() if k not in ("steps", "samples", "latencies")}
    print(json.dumps(summary))
    return 1 if fig["failed"] else 0


async def _bounded(run: Any, minutes: float) -> Any:
    """The run, with room for setup (models, services), a warm-up (90 s a pass) and the last step."""
    return await wait_for(run, 60 * minutes + 600 + 90 * warmup_cycles(minutes))
