"""``edgeagent worker`` (or ``edgeagent run`` with ``[livekit] mode = "worker"``): the device as a
LiveKit agent worker, dispatched into rooms on demand.

The device registers with the server (:class:`~edgeagent.worker.link.WorkerLink`) under
its agent name (``livekit.agent_name``, default: its participant identity) and waits. When
an application dispatches that agent into a room (``lk dispatch create``, the server API's
``create_dispatch``, or a ``RoomAgentDispatch`` in a participant's token), the server
offers the job to a free worker; this device takes one job at a time
(:class:`~edgeagent.worker.jobs.Dispatcher`), joins the job's room with the job's token as
``livekit.identity`` and runs the same session as a configured room (:func:`run_room`:
the LiveKit Agents conventions, remote config over the room, metrics), with the settings
of the dispatch's metadata for that job (:mod:`edgeagent.worker.metadata`). The job ends
when the room is deleted, the agent is removed or the dispatch is deleted; the device is
then available again. Under systemd: ``READY=1`` at start, ``STATUS=`` the worker's
state and room with the state of the agent during a job, the watchdog, the ``[gpio]`` LED and
buttons on the session of the moment (the job's, or worker+local's own) and SIGHUP, which
reads the config file again: the running session follows its live settings, the next ones
start with it (:meth:`~edgeagent.device.lifecycle.Lifecycle.serving`).

``mode = "worker+local"`` (``edgeagent worker --local``): the local mic and speaker work too,
as ``edgeagent run`` between jobs and as ``room+local`` during a job
(:mod:`edgeagent.worker.local`).

Needs ``livekit.url`` and ``livekit.api_key``/``api_secret`` (or a ``livekit.token`` with
the ``agent`` grant); ``livekit.room`` is not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeagent import config as config_mod
from edgeagent.aio import exit_status, until_first, wait_for
from edgeagent.config.room import LiveKitConfig
from edgeagent.worker.jobs import WORKER_ID_ATTRIBUTE, Dispatcher, Job, JobRunner
from edgeagent.worker.local import LocalAgent

if TYPE_CHECKING:
    from livekit import rtc

    from edgeagent.control.store import ConfigStore
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.room.connection import RoomLink
    from edgeagent.voice.stages import Models
    from edgeagent.worker.voice import JobVoice

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 15.0
"""A job whose room is not joined within this long fails (the server is told, the device is free again)."""


def job_livekit(lk: LiveKitConfig, job: Job) -> LiveKitConfig:
    """The ``[livekit]`` of one job: its room, URL and token; the rest (E2EE key, listening) as configured."""
    local = lk.mode == "worker+local"
    return dataclasses.replace(lk, url=job.url, token=job.token, api_key=None, api_secret=None, room=job.room,
                               identity=job.identity, mode="room+local" if local else "room",
                               publish_local_mic=local and lk.publish_local_mic)


async def _joined(link: RoomLink, stop: asyncio.Event, job: Job) -> str | None:
    """Wait for the job's room to be joined; the error (``stop`` set) when it is not in time."""
    if await link.wait_connected(JOIN_TIMEOUT_S):
        log.info("worker: joined room %s for job %s, %.2f s after the assignment", job.room, job.id,
                 time.monotonic() - job.assigned_at, extra={"JOB_ID": job.id, "ROOM": job.room})
        return None
    if stop.is_set():
        return None
    stop.set()
    return f"could not join room {job.room}: {link.last_error or 'timeout'}"


def follow_worker_id(job: Job, link: RoomLink) -> None:
    """Keep the ``edgeagent.worker_id`` attribute of the job's participant true when the worker
    registers again (a new id) during the job: set at once when the room is joined, and again
    after the SDK's own reconnect of the room (the server may have lost it too)."""
    current = [job.worker_id]
    tasks: set[asyncio.Future[None]] = set()

    async def update(room: rtc.Room) -> None:
        try:
            await wait_for(room.local_participant.set_attributes({WORKER_ID_ATTRIBUTE: current[0]}), 10)
        except (Exception, asyncio.TimeoutError) as exc:
            log.info("worker: could not update the worker id attribute (yet): %s", exc or "timeout")

    def spawn(room: rtc.Room | None) -> None:
        if room is not None and current[0] != job.worker_id:
            task = asyncio.ensure_future(update(room))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def changed(worker_id: str) -> None:
        current[0] = worker_id
        if link.connected.is_set():
            spawn(link.room)

    def joined(room: rtc.Room) -> None:
        room.on("reconnected", lambda: spawn(room))
        spawn(room)  # registered again before the room was first joined

    job.on_worker_id.append(changed)
    link.add_connected_hook(joined)


def room_only(lk: LiveKitConfig) -> JobRunner:
    """A job that joins the room and stays, without a session (the fleet test; a dry run)."""
    from edgeagent.room.connection import RoomLink

    async def run(job: Job, stop: asyncio.Event) -> str | None:
        link = RoomLink(job_livekit(lk, job), rejoin=False)
        follow_worker_id(job, link)
        try:
            await link.start()
            error = await _joined(link, stop, job)
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, link.ended, link.failed)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            return error or (link.last_error if link.failed.is_set() else None)
        finally:
            await wait_for(link.aclose(), 15)

    return run


def _job_settings(effective: config_mod.Config, job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's settings from its metadata (each problem one error line), and its voice apart."""
    from edgeagent.worker.metadata import job_settings, split_voice

    settings, problems = job_settings(effective, job.metadata)
    for p in problems:
        log.error("worker: job %s metadata: %s: %s; the job runs without it", job.id, p.path or "(all)",
                  p.reason, extra={"JOB_ID": job.id})
    if settings:
        log.info("worker: job %s settings from its metadata: %s", job.id, settings, extra={"JOB_ID": job.id})
    return split_voice(settings)


async def _take_over(models: Models, effective: config_mod.Config, job: Job, voice: dict[str, Any],
                     local: LocalAgent | None) -> JobVoice | None:
    """The local agent paused (worker+local) while the job's voice loads; that voice, now in use."""
    from edgeagent.worker.voice import JobVoice

    pausing = local.pause() if local is not None else asyncio.sleep(0)
    loaded, _ = await asyncio.gather(JobVoice.load(models, effective, voice, job.id) if voice else
                                     asyncio.sleep(0, None), pausing)
    if loaded is not None:
        loaded.use()
    return loaded


def agent_job(models: Models, cfg: config_mod.Config, store: ConfigStore | None,
              local: LocalAgent | None = None, life: Lifecycle | None = None) -> JobRunner:
    """A job that runs the voice agent in the room (:func:`edgeagent.room.job.run_room`) with the
    settings and voice of its metadata; ``local`` (worker+local) hands the local mic and speaker
    over to it for the job; ``life`` (a serving :class:`Lifecycle`) follows its session."""
    from edgeagent.room.connection import RoomLink
    from edgeagent.room.job import run_room
    from edgeagent.worker.metadata import apply_job_settings
    from edgeagent.worker.voice import with_voice

    async def run(job: Job, stop: asyncio.Event) -> str | None:
        effective = store.config if store is not None else cfg
        settings, voice = _job_settings(effective, job)
        lk = job_livekit(effective.livekit, job)
        link = RoomLink(lk, rejoin=False)
        follow_worker_id(job, link)
        job_voice, watch = None, None
        try:
            job_voice = await _take_over(models, effective, job, voice, local)
            if stop.is_set():  # ended while its voice loaded
                return None
            settings = with_voice(settings, job_voice)
            watch = asyncio.ensure_future(_joined(link, stop, job))  # the join deadline from here

            def adjust(c: config_mod.Config) -> config_mod.Config:
                return apply_job_settings(dataclasses.replace(c, livekit=lk), settings)

            code = await run_room(models, cfg, stop, store=store, adjust=adjust, link=link, life=life)
        finally:
            if watch is not None:
                watch.cancel()
            if life is not None:
                life.unfollow()
            if job_voice is not None:
                await job_voice.restore()
            if local is not None:
                local.resume()  # nothing once the worker is stopping
        joined_error = watch.result() if watch is not None and watch.done() and not watch.cancelled() else None
        if joined_error:
            return joined_error
        return link.last_error if code != 0 else None

    return run


async def run_worker(models: Models, cfg: config_mod.Config, stop: asyncio.Event, *,
                     store: ConfigStore | None = None, life: Lifecycle | None = None,
                     run_job: JobRunner | None = None, on_status: Callable[[str], None] | None = None) -> int:
    """Be a worker until ``stop`` (0) or the server refuses our credentials (1). ``run_job``: what a
    job does (default: the agent in the room); ``on_status``: called with each status line too;
    ``life``: READY=1, STATUS=, watchdog, GPIO and SIGHUP (:meth:`Lifecycle.serving`)."""
    from edgeagent.worker.link import WorkerLink

    effective = store.config if store is not None else cfg

    def status(text: str) -> None:
        if on_status is not None:
            on_status(text)
        if life is not None:
            life.status_changed()  # the worker's state with its session's

    def config() -> config_mod.Config:
        return store.config if store is not None else cfg

    local = None
    if effective.livekit.mode == "worker+local" and run_job is None:
        local = LocalAgent(models, config, life)
    dispatcher = Dispatcher(effective.livekit, run_job or agent_job(models, cfg, store, local, life),
                            on_status=status)
    link = WorkerLink(effective.livekit, dispatcher)
    dispatcher.link = link
    try:
        if life is not None:
            await life.serving(lambda: dispatcher.status_text)
        await link.start()
        print(f"edgeagent: worker for agent {effective.livekit.worker_agent_name!r} at {effective.livekit.url} "
              f"(Ctrl-C stops)", flush=True)
        if local is not None:
            local.resume()
        await until_first(stop, link.failed)
        return exit_status(link.failed, stop, link.last_error)
    finally:
        if local is not None:
            await local.aclose()  # first: a job that ends now does not start it again
        await dispatcher.aclose()
        await link.aclose()
