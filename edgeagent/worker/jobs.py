"""Dispatcher: one job at a time, offered by the server through a :class:`~edgeagent.worker.link.WorkerLink`.

    dispatcher = Dispatcher(cfg.livekit, run_job)      # run_job(job, stop) -> error text or None
    link = WorkerLink(cfg.livekit, dispatcher)
    dispatcher.link = link

- **Offered** (``availability``): while no job runs and none is being accepted, the device
  says yes at once, with its participant identity, name and the attributes
  ``edgeagent.worker_id`` and ``edgeagent.job_id`` (they go into the job's token, so the
  room sees which device took the job) and reports itself ``WS_FULL``. Otherwise it says
  no at once: the server then offers the job to another worker. (livekit-server 1.13.5
  does not offer a job again that every worker refused, even when one frees up later: an
  application whose dispatch found every device busy must retry or dispatch elsewhere.)
- **Assigned** (``assignment`` within :data:`ASSIGNMENT_TIMEOUT_S` of the yes, else the
  device is available again): ``run_job`` runs with the job's room, URL and token.
- **Ended**: ``run_job`` returns (the room was deleted, the agent removed) or the server
  terminates the job (the dispatch was deleted, the room closed): ``stop`` is set, the job
  is reported ``JS_SUCCESS`` (``JS_FAILED`` with the error ``run_job`` returned), and the
  device is ``WS_AVAILABLE`` again.

Every change of state is one log line with journal fields (``WORKER_ID``, ``WORKER_STATE``,
``JOB_ID``, ``ROOM``) and, under systemd, the ``STATUS=`` line (:attr:`Dispatcher.status_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from livekit.protocol import agent

from edgeagent.aio import wait_for
from edgeagent.config.room import LiveKitConfig
from edgeagent.worker.link import WorkerLink

log = logging.getLogger(__name__)

ASSIGNMENT_TIMEOUT_S = 7.5
"""How long an accepted offer waits for its assignment (the server gives up on an answer after 10 s)."""
STOP_TIMEOUT_S = 20.0
"""How long a job may take to end once told to."""
WORKER_ID_ATTRIBUTE = "edgeagent.worker_id"
JOB_ID_ATTRIBUTE = "edgeagent.job_id"


@dataclass(frozen=True)
class Job:
    """A job assigned to this device."""

    id: str
    room: str
    url: str
    token: str
    identity: str
    metadata: str = ""
    dispatch_id: str = ""
    worker_id: str = ""
    assigned_at: float = field(default_factory=time.monotonic)
    #: Called with the new worker id when the worker registers again during the job (the runner
    #: updates the ``edgeagent.worker_id`` attribute of its participant).
    on_worker_id: list[Callable[[str], None]] = field(default_factory=list, compare=False)


JobRunner = Callable[[Job, asyncio.Event], Awaitable["str | None"]]
"""Runs one job until it ends or ``stop`` is set; returns None, or why it failed."""


class Dispatcher:
    """See the module docs. Its methods are the :class:`~edgeagent.worker.link.WorkerHandler`."""

    def __init__(self, cfg: LiveKitConfig, run_job: JobRunner, *,
                 on_status: Callable[[str], None] | None = None) -> None:
        self.cfg, self.run_job = cfg, run_job
        self.identity = cfg.participant_identity
        self.link: WorkerLink | None = None
        self.on_status = on_status
        #: connecting, available, accepting (an offer said yes to), full (a job runs) or stopped.
        self.state = "connecting"
        self.job: Job | None = None
        #: Offers received, offers accepted, jobs ended (for the fleet view and tests).
        self.offers = self.accepted = self.done = 0
        #: The state changed (tests wait on it).
        self.changed = asyncio.Event()
        self._offer: agent.Job | None = None
        self._offer_timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._job_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[object]] = set()
        self._closing = False

    # -- the fleet view -------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return (self.link.worker_id if self.link is not None else None) or ""

    @property
    def status_text(self) -> str:
        """The ``STATUS=`` line: ``worker available (agent NAME, id W)`` or ``worker full: room R (job J)``."""
        if self.state == "full" and self.job is not None:
            return f"worker full: room {self.job.room} (job {self.job.id}, id {self.worker_id})"
        name = self.cfg.worker_agent_name
        return f"worker {self.state} (agent {name}{', id ' + self.worker_id if self.worker_id else ''})"

    def _set(self, state: str) -> None:
        self.state = state
        job = self.job
        log.info("worker: %s", self.status_text, extra={
            "WORKER_ID": self.worker_id, "WORKER_STATE": state, "WORKER_LOAD": int(state in ("full", "accepting")),
            "JOB_ID": job.id if job else "", "ROOM": job.room if job else ""})
        if self.on_status is not None:
            self.on_status(self.status_text)
        self.changed.set()
        self.changed = asyncio.Event()

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> bool:
        return self._offer is not None or self.job is not None

    # -- WorkerHandler --------------------------------------------------------------------

    def registered(self, worker_id: str) -> None:
        if self.job is not None:
            for hook in self.job.on_worker_id:
                hook(worker_id)
        self._set("full" if self.job is not None else "accepting" if self._offer is not None else "available")
        self._spawn(self._send_status())

    def unregistered(self) -> None:
        if self._offer is not None:
            self._drop_offer("the worker socket closed")
        self._set("full" if self.job is not None else "stopped" if self._closing else "connecting")

    def availability(self, request: agent.AvailabilityRequest) -> None:
        job = request.job
        self.offers += 1
        if self.busy or self.link is None:
            where = f"room {self.job.room}" if self.job is not None else "accepting another job"
            log.info("worker: refused job %s for room %s at once (full: %s)", job.id, job.room.name, where,
                     extra={"JOB_ID": job.id, "ROOM": job.room.name})
            if self.link is not None:
                self._spawn(self.link.answer(job.id, available=False))
            return
        self._offer = job
        self.accepted += 1
        loop = asyncio.get_running_loop()
        self._offer_timer = loop.call_later(ASSIGNMENT_TIMEOUT_S, self._drop_offer, "no assignment in time")
        attrs = {WORKER_ID_ATTRIBUTE: self.worker_id, JOB_ID_ATTRIBUTE: job.id}
        self._spawn(self.link.answer(job.id, available=True, identity=self.identity, name=self.identity,
                                     attributes=attrs))
        self._set("accepting")
        self._spawn(self._send_status())

    def assignment(self, assignment: agent.JobAssignment) -> None:
        offer = self._offer
        if offer is None or assignment.job.id != offer.id:
            log.warning("worker: an assignment for job %s that this device did not accept; ignored",
                        assignment.job.id)
            return
        if self._offer_timer is not None:
            self._offer_timer.cancel()
        self._offer = None
        self.job = Job(id=offer.id, room=offer.room.name, url=assignment.url or str(self.cfg.url),
                       token=assignment.token, identity=self.identity, metadata=offer.metadata,
                       dispatch_id=offer.dispatch_id, worker_id=self.worker_id)
        self._stop = asyncio.Event()
        self._job_task = asyncio.create_task(self._run(self.job, self._stop), name=f"job-{offer.id}")
        self._set("full")

    def termination(self, termination: agent.JobTermination) -> None:
        if self.job is not None and termination.job_id == self.job.id and not self._stop.is_set():
            log.info("worker: the server ended job %s (dispatch deleted or room closed)", termination.job_id,
                     extra={"JOB_ID": termination.job_id})
            self._stop.set()

    # -- jobs -----------------------------------------------------------------------------

    def _drop_offer(self, why: str) -> None:
        if self._offer is None:
            return
        log.warning("worker: job %s accepted but not assigned (%s); available again", self._offer.id, why)
        self._offer = None
        if self._offer_timer is not None:
            self._offer_timer.cancel()
        self._set("available" if self.link is not None and self.link.registered.is_set() else "connecting")
        self._spawn(self._send_status())

    async def _run(self, job: Job, stop: asyncio.Event) -> None:
        error: str | None
        try:
            error = await self.run_job(job, stop)
        except asyncio.CancelledError:
            error = "the worker stopped"
            raise
        except Exception as exc:
            log.exception("worker: job %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.job = None
            self.done += 1
            status = agent.JobStatus.JS_FAILED if error else agent.JobStatus.JS_SUCCESS
            if self.link is not None:
                self._spawn(self.link.update_job(job.id, status, error or ""))
            log.info("worker: job %s in room %s ended%s after %.1f s", job.id, job.room,
                     f" ({error})" if error else "", time.monotonic() - job.assigned_at,
                     extra={"JOB_ID": job.id, "ROOM": job.room})
            registered = self.link is not None and self.link.registered.is_set()
            self._set("available" if registered else "connecting")
            self._spawn(self._send_status())

    async def _send_status(self) -> None:
        if self.link is not None:
            await self.link.send_status(full=self.busy, jobs=int(self.job is not None))

    async def aclose(self) -> None:
        """End the running job (its room is left) and wait for the messages under way."""
        self._closing = True
        self._drop_offer("the worker is stopping")
        self._stop.set()
        if self._job_task is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError, asyncio.CancelledError):
                await wait_for(asyncio.shield(self._job_task), STOP_TIMEOUT_S)
            self._job_task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
