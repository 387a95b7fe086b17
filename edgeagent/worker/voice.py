"""A job's own voice: the dispatch metadata's ``"voice"`` (``tts.model``, and ``tts.provider``).

    voice = await JobVoice.load(models, cfg, {"model": "piper-en-us-joe"}, job_id)   # None: one line logged
    voice.use()                 # the job's session speaks with it (models.tts, or the local member of a chain)
    ...the job's session...
    await voice.restore()       # the device's voice is back; the job's is closed

The voice is read as ``[tts]`` reads it, with the device's provider unless the metadata
names another: Piper a voice file (``NAME.onnx`` with ``NAME.onnx.json`` beside it, or a
directory holding one), espeak-ng a voice name (``en-gb``, ``de``: ``espeak-ng --voices``).
A name the model manifest knows (``edgeagent models list``, e.g. ``piper-en-us-joe``) is
the file it installed in the models directory. It is checked (the file is there, the
provider is installed) and created in a worker thread, so the event loop keeps serving
the worker while it loads (a Piper voice: 0.3 s and ~100 MB on a 2-core x86); a voice that cannot be
loaded in :data:`LOAD_TIMEOUT_S` is one error line and the job speaks with the device's voice.

While the job runs, the voice is the device's ``Models.tts`` (one job at a time, and the
local agent of worker+local is paused meanwhile). A voice reloaded during the job by a
remote config change (``tts.*`` set over the room changes the device's config) is kept at
the end: it is the device's voice now, and the old one is closed instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent.aio import wait_for

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.tts.base import TTS
    from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 30.0
"""How long a job's voice may take to load before the job goes on with the device's voice."""


def resolve(cfg: Config, voice: dict[str, Any]) -> dict[str, Any]:
    """``voice`` with a manifest model name (``edgeagent models list``, stage tts) made the path of
    its installed file; raises ModelError (with the fix) when that model is not installed."""
    from edgeagent.model_files.manifest import load_manifest, model_path

    name = voice.get("model")
    if not isinstance(name, str):
        return voice
    model = next((m for m in load_manifest().models if m.name == name and m.stage == "tts"), None)
    if model is None:
        return voice
    root = Path(cfg.models.dir).expanduser() if cfg.models.dir else None
    return {**voice, "model": str(model_path(name, root=root))}


def _create(cfg: Config) -> TTS:
    """The ``[tts]`` stage of ``cfg`` (in a worker thread): checked, then created."""
    from edgeagent.voice.stages import check_loadable, create_stage, stage_specs

    check_loadable(cfg, "tts")
    provider, options = next((p, o) for k, p, o in stage_specs(cfg) if k == "tts")
    stage: TTS = create_stage("tts", provider, options)
    return stage


def _local(tts: Any) -> Any:
    """The voice that speaks: ``tts``, or the local member of its fallback chain."""
    from edgeagent.fallback.chain import chain_of

    chain = chain_of(tts)
    member = next((m for m in chain.members if not m.cloud), None) if chain is not None else None
    return member.stage if member is not None else tts


class JobVoice:
    """One job's voice, loaded; see the module docs."""

    def __init__(self, models: Models, stage: TTS, settings: dict[str, Any], job_id: str) -> None:
        self.models, self.stage, self.settings, self.job_id = models, stage, settings, job_id
        self._device: TTS | None = None

    @classmethod
    async def load(cls, models: Models, cfg: Config, voice: dict[str, Any], job_id: str) -> JobVoice | None:
        """The voice of ``voice`` (the ``[tts]`` entries of the job's settings) loaded over ``cfg``
        (the device's config); None, with one error line, when it cannot be."""
        from edgeagent.worker.metadata import apply_job_settings

        t0 = time.monotonic()
        what = ", ".join(f"tts.{k} {v!r}" for k, v in voice.items())
        task: asyncio.Future[TTS] | None = None
        try:
            voice = resolve(cfg, voice)
            job_cfg = apply_job_settings(cfg, {"tts": voice})
            if (job_cfg.tts.provider, job_cfg.tts.model) == (cfg.tts.provider, cfg.tts.model):
                log.info("worker: job %s: its voice (%s) is the device's", job_id, what, extra={"JOB_ID": job_id})
                return None
            task = asyncio.ensure_future(asyncio.to_thread(_create, job_cfg))
            stage = await wait_for(asyncio.shield(task), LOAD_TIMEOUT_S)
        except asyncio.CancelledError:
            if task is not None:
                task.add_done_callback(_close_late)
            raise
        except (Exception, asyncio.TimeoutError) as exc:
            why = f"not loaded in {LOAD_TIMEOUT_S:.0f} s" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            log.error("worker: job %s: its voice (%s) cannot be used: %s; the job speaks with the device's "
                      "voice", job_id, what, why or type(exc).__name__, extra={"JOB_ID": job_id})
            if task is not None:
                task.add_done_callback(_close_late)
            return None
        log.info("worker: job %s speaks with its own voice (%s), loaded in %.2f s", job_id, what,
                 time.monotonic() - t0, extra={"JOB_ID": job_id})
        return cls(models, stage, voice, job_id)

    def use(self) -> None:
        """The job's voice speaks from now on (call before the job's session is made)."""
        from edgeagent.fallback.build import swap_local

        use, device, _ = swap_local(self.models.tts, self.stage)
        self._device = device
        self.models.tts = use

    async def restore(self) -> None:
        """The device's voice back, the job's closed (see the module docs for a reload meanwhile)."""
        from edgeagent.fallback.build import swap_local

        device, self._device = self._device, None
        if device is None:
            await self.stage.aclose()
            return
        if _local(self.models.tts) is self.stage:
            use, _, _ = swap_local(self.models.tts, device)
            self.models.tts = use
            await self.stage.aclose()
            log.info("worker: job %s ended: the device's voice is back", self.job_id, extra={"JOB_ID": self.job_id})
            return
        log.info("worker: job %s ended: the voice was reloaded during it (the device's config changed); it "
                 "stays, the previous one is closed", self.job_id, extra={"JOB_ID": self.job_id})
        await device.aclose()


_closing: set[asyncio.Future[None]] = set()


def _close_late(task: asyncio.Future[TTS]) -> None:
    """A voice that loaded after the job gave up on it: closed."""
    if task.cancelled() or task.exception() is not None:
        return
    closing = asyncio.ensure_future(task.result().aclose())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


def with_voice(settings: dict[str, Any], voice: JobVoice | None) -> dict[str, Any]:
    """The job's settings with the voice it speaks with (none: the device's)."""
    if voice is None:
        return settings
    return {**settings, "tts": {**settings.get("tts", {}), **voice.settings}}

