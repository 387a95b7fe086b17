"""What ``edgeagent run`` does for its supervisor and the board: :class:`Lifecycle`.

    life = Lifecycle(cfg, reload=lambda: config.load(path, overrides=...))
    life.install_signals(stop)             # SIGINT/SIGTERM stop, SIGHUP reloads the config file
    life.loading()                         # STATUS=loading models
    ...models load, devices open, the session starts...
    await life.started(session, applier=applier, store=store)   # READY=1, watchdog, GPIO
    ...
    await life.finished()                  # watchdog and GPIO off, pending config writes flushed

- **sd_notify** (:mod:`~edgeagent.device.notify`, only under systemd): ``STATUS=loading models``,
  then ``READY=1`` once the models are loaded and the sound devices (or the room) are open;
  ``STATUS=<agent state>`` on every state change (with ``, muted``); ``RELOADING=1`` and
  ``READY=1`` around a reload; ``STOPPING=1`` as soon as SIGTERM or SIGINT arrives.
- **Watchdog** (:mod:`~edgeagent.device.watchdog`): from ``READY=1`` on, when systemd asks for it.
- **SIGTERM/SIGINT**: ``stop`` is set (the session cuts its reply, the room is left) and a
  guard thread ends the process with status 1 if it is not gone after :data:`STOP_DEADLINE_S`,
  well before the unit's ``TimeoutStopSec`` would SIGKILL it.
- **SIGHUP**: the config file is read again (with the same env and ``--set`` overrides) and
  the remote changes apply over it (:meth:`ConfigStore.rebase`). What can change live (the
  remotely settable settings, :mod:`edgeagent.control.live`) changes now, ``log_level`` and
  ``[gpio]`` too; any other change (sound devices, the room, ``[logging]``) is logged as
  taking effect at the next start. A file that does not load is logged and changes nothing.
- **Logs with fields** come from the session itself: ``state: ...`` records carry ``STATE``,
  each turn's ``turn metrics`` record ``TURN_ID`` and the latencies in ms
  (:meth:`TurnMetrics.log_fields`); the journal handler keeps them as fields.
- **GPIO** (:mod:`~edgeagent.device.gpio`): when ``[gpio]`` sets a pin.
- **A worker** (:mod:`edgeagent.worker`), whose sessions come and go: :meth:`Lifecycle.serving`
  once it runs (READY=1, watchdog, GPIO with the LED idle, SIGHUP), then :meth:`Lifecycle.started`
  follows each job's session (and the local one of worker+local) and :meth:`Lifecycle.unfollow`
  lets it go: the LED and buttons are that session's, ``STATUS=`` is the worker's state with
  the agent's (``worker full: room R (job J, id W) — agent speaking``), at most one every
  :data:`STATUS_INTERVAL_S`, and a reload goes to that session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeagent.config import Config
from edgeagent.device.notify import Notifier, StatusThrottle
from edgeagent.device.watchdog import Watchdog, watchdog_interval
from edgeagent.errors import EdgeAgentError

if TYPE_CHECKING:
    from edgeagent.control.live import LiveApplier
    from edgeagent.control.patch import Change
    from edgeagent.control.store import ConfigStore
    from edgeagent.device.gpio import GpioPanel
    from edgeagent.voice.protocol import VoiceSession

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 12.0
"""After SIGTERM the process is gone within this many seconds, clean or not. The unit's
``TimeoutStopSec=`` must be longer (it is 20 s)."""
STATUS_INTERVAL_S = 0.5
"""A worker's ``STATUS=`` (its state and its session's) changes at most this often."""


class Lifecycle:
    """See the module docs. ``reload`` reads the file config again (None: SIGHUP is ignored)."""

    def __init__(self, cfg: Config, *, reload: Callable[[], Config] | None = None,
                 notifier: Notifier | None = None, env_notify: bool = True) -> None:
        self.config = cfg
        self._load = reload
        self.notifier = notifier if notifier is not None or not env_notify else Notifier.from_env()
        self.watchdog: Watchdog | None = None
        self.gpio: GpioPanel | None = None
        self.session: VoiceSession | None = None
        self.applier: LiveApplier | None = None
        self.store: ConfigStore | None = None
        self.reloads = 0
        self._stop: asyncio.Event | None = None
        self._signals: list[int] = []
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_pending = False
        self._deadline: threading.Timer | None = None
        self._serving: Callable[[], str] | None = None
        self._throttle: StatusThrottle | None = None

    # -- signals ---------------------------------------------------------------------

    def install_signals(self, stop: asyncio.Event) -> None:
        """SIGINT/SIGTERM set ``stop``; SIGHUP reloads the config file (call in the running loop)."""
        loop = asyncio.get_running_loop()
        self._stop = stop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

    def remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals = []

    def _on_stop_signal(self, sig: int) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            return
        log.info("%s: stopping", signal.Signals(sig).name)
        self._stop.set()
        if self.notifier is not None:
            self.notifier.stopping()
        self._deadline = threading.Timer(STOP_DEADLINE_S, _too_slow)
        self._deadline.daemon = True
        self._deadline.start()

    # -- start -----------------------------------------------------------------------

    def loading(self) -> None:
        self._status("loading models")

    async def started(self, session: VoiceSession, *, applier: LiveApplier | None = None,
                      store: ConfigStore | None = None) -> None:
        """The session runs on open devices: READY=1, watchdog, GPIO, STATUS= on state changes.
        For a worker (after :meth:`serving`): follow this session instead."""
        if self._serving is not None:
            self._follow(session, applier)
            return
        self.session, self.applier, self.store = session, applier, store
        session.on("agent_state_changed", self._on_state)
        self._open_gpio(self.config)
        self._ready()

    def _ready(self) -> None:
        if self.notifier is not None:
            self.notifier.ready(self.status_text())
            timeout = watchdog_interval()
            if timeout is not None:
                self.watchdog = Watchdog(self.notifier, timeout)
                self.watchdog.start()
        if self._reload_pending:  # SIGHUP while the models loaded
            self.request_reload()

    def status_text(self) -> str:
        s = self.session
        agent = None if s is None else f"{s.state.value}{', muted' if s.muted else ''}"
        if self._serving is not None:
            worker = self._serving()
            return worker if agent is None else f"{worker} — agent {agent}"
        return agent or "starting"

    def status_changed(self) -> None:
        """``STATUS=`` anew (a worker's state changed)."""
        self._status(self.status_text())

    def _status(self, text: str) -> None:
        if self._throttle is not None:
            self._throttle.status(text)
        elif self.notifier is not None:
            self.notifier.status(text)

    def _on_state(self, _: Any) -> None:
        self._status(self.status_text())

    def _open_gpio(self, cfg: Config) -> None:
        if not cfg.gpio.enabled or (self.session is None and self._serving is None):
            return
        from edgeagent.device.gpio import GpioPanel

        self.gpio = GpioPanel.open(cfg.gpio)
        if self.gpio is not None:
            self.gpio.on_change = lambda: self._status(self.status_text())
            if self.session is not None:
                self.gpio.attach(self.session)
            else:
                self.gpio.refresh()  # a worker between sessions: idle

    # -- a worker --------------------------------------------------------------------

    async def serving(self, status: Callable[[], str]) -> None:
        """A worker runs (see the module docs); ``status()`` is its own state for ``STATUS=``."""
        self._serving = status
        if self.notifier is not None:
            self._throttle = StatusThrottle(self.notifier, STATUS_INTERVAL_S)
        self._open_gpio(self.config)
        self._ready()

    def _follow(self, session: VoiceSession, applier: LiveApplier | None) -> None:
        if self.session is not None:
            self.session.off("agent_state_changed", self._on_state)
        self.session, self.applier = session, applier
        session.on("agent_state_changed", self._on_state)
        if self.gpio is not None:
            self.gpio.detach()
            self.gpio.attach(session)
        self.status_changed()

    def unfollow(self) -> None:
        """A worker's session (a job's, the local one) is over: the LED idle, ``STATUS=`` the worker's."""
        if self.session is None:
            return
        self.session.off("agent_state_changed", self._on_state)
        self.session = self.applier = None
        if self.gpio is not None:
            self.gpio.detach()
            self.gpio.refresh()
        self.status_changed()

    # -- reload ----------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: read the config file again (after the start, one reload at a time)."""
        if self._load is None:
            log.info("SIGHUP: no config file to reload")
            return
        if not self._can_reload or (self._reload_task is not None and not self._reload_task.done()):
            self._reload_pending = True
            return
        self._reload_pending = False
        self._reload_task = asyncio.ensure_future(self._reload())
        self._reload_task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("config reload failed: %s", task.exception())
        if self._reload_pending and self._can_reload:
            self.request_reload()

    @property
    def _can_reload(self) -> bool:
        """After the start: a session runs, or a worker serves."""
        return self.session is not None or self._serving is not None

    async def _reload(self) -> None:
        from edgeagent.control.errors import ControlError
        from edgeagent.control.patch import diff

        assert self._load is not None
        if self.notifier is not None:
            self.notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        log.info("SIGHUP: reloading the config file")
        try:
            try:
                base = self._load()
            except EdgeAgentError as exc:
                log.error("config reload: %s; the config in effect stays", exc)
                return
            try:
                if self.store is not None:
                    await self.store.rebase(base, self._apply)
                else:
                    changes = diff(self.config, base)
                    if changes:
                        await self._apply(base, changes)
            except (ControlError, EdgeAgentError) as exc:
                log.error("config reload: the edited file does not fit the remote changes or cannot be "
                          "applied (%s); the config in effect stays", exc)
                return
            self.reloads += 1
            log.info("config reload: done")
        finally:
            if self.notifier is not None:
                self.notifier.ready(self.status_text())

    async def _apply(self, cfg: Config, changes: list[Change]) -> None:
        """Put a reloaded config into effect (see the module docs for what waits for a restart)."""
        from edgeagent.control.keys import HOT, NEEDS_RELOAD

        live = [c for c in changes if c.path in HOT or c.path in NEEDS_RELOAD]
        if live and self.applier is not None:
            await self.applier(cfg, live)  # raises before anything changed
        old, self.config = self.config, cfg
        for c in changes:
            if c.path == "log_level":
                logging.getLogger().setLevel(cfg.log_level.upper())
                log.info("config: log_level = %s (was %s), now", c.new, c.old)
            elif c.path.startswith("gpio."):
                pass
            elif c in live and self._serving is not None and self.applier is None:
                log.info("config: %s changed in the file: takes effect at the worker's next session", c.path)
            elif c not in live or self.applier is None:
                log.warning("config: %s changed in the file: takes effect at the next start", c.path)
        if cfg.gpio != old.gpio:
            log.info("config: [gpio] changed: the LED and buttons are opened again")
            if self.gpio is not None:
                self.gpio.close()
                self.gpio = None
            self._open_gpio(cfg)

    # -- end -------------------------------------------------------------------------

    async def finished(self) -> None:
        """The session is over: watchdog and GPIO off, pending remote config writes on disk."""
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reload_task
        if self.watchdog is not None:
            await self.watchdog.aclose()
        if self._throttle is not None:
            self._throttle.close()
        if self.gpio is not None:
            self.gpio.close()
            self.gpio = None
        if self.store is not None:
            await self.store.flush()
        if self.session is not None:
            self.session.off("agent_state_changed", self._on_state)

    def close(self) -> None:
        """The process is about to exit cleanly: the stop guard is not needed any more."""
        if self._deadline is not None:
            self._deadline.cancel()
        if self.notifier is not None:
            self.notifier.close()


def _too_slow() -> None:
    log.error("the agent did not stop within %.0f s of the stop signal: exiting now", STOP_DEADLINE_S)
    logging.shutdown()
    os._exit(1)
