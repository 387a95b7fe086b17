"""The one stream contract every stage (VAD, wake word, STT, TTS, LLM) shares.

A :class:`StageStream` takes input with :meth:`push`, marks boundaries with
:meth:`flush`, ends with :meth:`end_input`, and hands results out through
``async for``. :meth:`aclose` cancels the work at once. A provider implements
one coroutine, :meth:`StageStream._run`, that reads :meth:`_inputs` and calls
:meth:`_emit`; the base owns the queues, error propagation and cancellation.

CPU-heavy inference runs on the stage's :class:`InferenceThread` (one worker
thread per stage instance), never on the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from edgeagent.aio import wait_for
from edgeagent.errors import EdgeAgentError

if TYPE_CHECKING:
    from edgeagent.config import Config

InT = TypeVar("InT")
OutT = TypeVar("OutT")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Flush:
    """Marker in the input: the current segment (utterance, sentence) is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FLUSH"


FLUSH = Flush()
_END = object()


class StageClosedError(EdgeAgentError):
    """Input was pushed after end_input() or aclose()."""


class InferenceThread:
    """One worker thread for a stage's model; calls run in submission order.

    The thread starts with the stage, not at its first job: a process's thread count is then
    what it is once the models are loaded (``scripts/soak`` counts threads; the Smart Turn
    stage's thread, which starts only at the first turn whose words leave a doubt, came at a
    random step of its runs and read as a thread leak)."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pool.submit(int)  # starts the thread (a no-op job)
        self._jobs = 0

    @property
    def busy(self) -> bool:
        """A job is running or waiting (work that can wait for an idle thread checks this).

        It counts jobs, not callers: a caller that was cancelled no longer waits, but the job it
        submitted still occupies the thread until it ends, and work queued meanwhile waits for it.
        """
        return self._jobs > 0

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        loop = asyncio.get_running_loop()
        job = self._pool.submit(fn, *args)
        self._jobs += 1
        job.add_done_callback(lambda _: self._job_ended(loop))
        return await asyncio.wrap_future(job, loop=loop)

    def _job_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        """A job ended (on the worker thread, or cancelled before it ran): count it on the loop,
        the only thread that reads and writes the count."""
        try:
            loop.call_soon_threadsafe(self._count_down)
        except RuntimeError:  # the loop is closed: nobody asks any more
            self._count_down()

    def _count_down(self) -> None:
        self._jobs -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class StageStream(abc.ABC, Generic[InT, OutT]):
    """Push in, iterate out, close. Create it inside a running event loop."""

    def __init__(self) -> None:
        self._in: asyncio.Queue[InT | Flush | object] = asyncio.Queue()
        self._out: asyncio.Queue[OutT | BaseException | object] = asyncio.Queue()
        self._input_ended = False
        self._closed = False
        self._taken = asyncio.Event()  # set whenever the provider takes an item
        self._task = asyncio.get_running_loop().create_task(self._main())

    # -- caller side --------------------------------------------------------

    def push(self, item: InT) -> None:
        if self._input_ended or self._closed:
            raise StageClosedError(f"{type(self).__name__}: push after end_input/aclose")
        self._in.put_nowait(item)

    def flush(self) -> None:
        if self._input_ended or self._closed:
            raise StageClosedError(f"{type(self).__name__}: flush after end_input/aclose")
        self._in.put_nowait(FLUSH)

    def end_input(self) -> None:
        if not self._input_ended and not self._closed:
            self._input_ended = True
            self._in.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[OutT]:
        return self

    async def __anext__(self) -> OutT:
        item = await self._out.get()
        if item is _END:
            self._out.put_nowait(_END)  # keep later calls ending too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._out.put_nowait(_END)
            raise item
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Cancel the work now; pending results are dropped. Safe to call twice."""
        self._closed = True
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._out.empty():  # an interrupted reply must not play on
            self._out.get_nowait()
        self._out.put_nowait(_END)

    @property
    def closed(self) -> bool:
        return self._closed

    async def caught_up(self, limit: int) -> None:
        """Return once at most ``limit`` pushed items wait for the provider (or it has ended):
        a caller that pushes faster than real time keeps its lead bounded."""
        while self._in.qsize() > limit and not self._task.done():
            self._taken.clear()
            await self._taken.wait()

    served_by: str | None = None
    """Which provider served this stream, where its stage has several (a fallback chain sets it
    once a member answers); None: the stage itself."""

    # -- provider side ------------------------------------------------------

    async def _inputs(self) -> AsyncIterator[InT | Flush]:
        """Yield pushed items and FLUSH markers until end_input()."""
        while True:
            item = await self._in.get()
            self._taken.set()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    async def _input(self, timeout: float | None = None) -> InT | Flush | None:
        """The next pushed item or FLUSH; None when input has ended. With ``timeout``, raises
        TimeoutError when nothing came within that many seconds (nothing is lost)."""
        if timeout is None:
            item = await self._in.get()
        else:
            item = await wait_for(self._in.get(), max(0.0, timeout))
        self._taken.set()
        return None if item is _END else item  # type: ignore[return-value]

    def _emit(self, item: OutT) -> None:
        self._out.put_nowait(item)

    @abc.abstractmethod
    async def _run(self) -> None:
        """Read :meth:`_inputs`, emit results; return when input has ended."""

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, not lost
            log.debug("%s failed: %r", type(self).__name__, exc)
            self._out.put_nowait(exc)
            return
        self._out.put_nowait(_END)


class Stage(abc.ABC):
    """A loaded provider of one kind (a model held in memory).

    Streams are cheap and made per utterance or per reply; the Stage holds the
    model, the inference thread and the metrics listeners.

    The contract a provider declares, beyond its kind's abstract methods (each has a default,
    so a provider overrides only what it has):

    - its options: :meth:`config_options` (the constructor options it takes from the config),
      :attr:`default_model` (the manifest model it loads when the config names none) and
      :meth:`check_loadable` (can it load from this config);
    - how it follows a live change of its hot settings: :meth:`update_options`;
    - its optional abilities: :meth:`warmup`, :meth:`probe`, :attr:`label` (and those of its
      kind: ``LLM.prefill``, ``STT.last_served``, ``STTStream.reopen``, ``StageStream.served_by``).
    """

    kind: str = ""
    provider: str = ""
    default_model: ClassVar[tuple[str, str] | None] = None
    """(the constructor option that names the model, the manifest name of the model it loads
    when that option is not given); None: no manifest model."""
    hot_options: ClassVar[tuple[str, ...]] = ()
    """The hot settings (dotted paths, e.g. ``tts.speed``) a running stage of this kind follows
    through :meth:`update_options`; :mod:`edgeagent.control.live` routes their changes there."""

    def __init__(self) -> None:
        self._metric_listeners: list[Callable[[object], None]] = []

    # -- what the provider declares --------------------------------------------------------

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """The constructor options this provider takes from ``cfg`` (the kind's section and
        any other it reads). Default: none."""
        return {}

    @classmethod
    def check_loadable(cls, cfg: Config) -> None:
        """Raise (ConfigError, ModelError) unless this provider can load from ``cfg``: its model
        file is there. Default: the manifest's default model, when the options name none.
        (The load itself may still fail on a broken file.)"""
        if cls.default_model is None:
            return
        option, name = cls.default_model
        if cls.config_options(cfg).get(option) is None:
            from edgeagent.model_files.manifest import model_path

            model_path(name, root=Path(cfg.models.dir).expanduser() if cfg.models.dir else None)

    def update_options(self, cfg: Config) -> Callable[[], None]:
        """The step that makes this running stage follow the hot settings of ``cfg`` it takes
        (the kind's base says which), from its next request on; raises ConfigError first when it
        cannot. Default: it follows none, nothing to do."""
        return _nothing

    @property
    def label(self) -> str:
        """The name logs and fallback events give it (a cloud provider adds model and server)."""
        return self.provider

    async def warmup(self) -> None:
        """Pay the first request's extra cost now (at load). Default: nothing to warm."""

    async def probe(self) -> None:
        """Raise unless the provider can serve now (a fallback chain asks a member it marked down
        before it takes it back). Default: a loaded model can always serve."""

    # -- metrics ---------------------------------------------------------------------------

    def on_metrics(self, callback: Callable[[object], None]) -> None:
        """Call ``callback`` with each metrics record (see :mod:`edgeagent.metrics`)."""
        self._metric_listeners.append(callback)

    def pass_on_metrics_of(self, stage: Stage) -> None:
        """Hand ``stage``'s metrics records to this stage's listeners too (a fallback stage does
        for its members, with their provider in each record)."""
        stage.on_metrics(self._report)

    def _report(self, metrics: object) -> None:
        for cb in list(self._metric_listeners):
            try:
                cb(metrics)
            except Exception:  # a broken listener must not break the stage
                log.exception("metrics listener failed")

    async def aclose(self) -> None:
        """Release the model and threads."""


def _nothing() -> None:
    pass
