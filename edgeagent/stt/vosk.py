"""Vosk (Kaldi) speech-to-text: truly streaming, for devices that have a Vosk model.

No English Vosk model ships in a package registry: a device pulls one
(`edgeagent models pull vosk-en-small --allow-unverified`) or passes any
Vosk model directory as ``model``. ``vosk`` is imported only when this
provider is created.

Each pushed frame goes to ``KaldiRecognizer.AcceptWaveform`` on the stage's
inference thread; a changed ``PartialResult`` becomes an INTERIM event. Kaldi's
own endpointing may close a segment inside an utterance (``AcceptWaveform``
returns True): its text is kept and prefixed to later hypotheses, so one
``flush()`` still gives one FINAL with the whole utterance (``FinalResult``).
:meth:`VoskStream.reopen` continues the last utterance after its FINAL (the
user carried on): the next FINAL starts with the previous text.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame, Int16Array
from edgeagent.errors import ModelError
from edgeagent.metrics import STTMetrics
from edgeagent.stage import Flush, InferenceThread, StageClosedError
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream
from edgeagent.stt.buffer import UtteranceBuffer

DEFAULT_MODEL = "vosk-en-small"
"""Manifest name of the default Vosk model (not in the default set: pull it first)."""


class _Reopen:
    """Input marker: continue the last utterance (see :meth:`VoskStream.reopen`)."""


_REOPEN = _Reopen()


@dataclass
class _Hypothesis:
    """Text so far of one utterance: closed Kaldi segments, then the open one."""

    segments: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    partial: str = ""
    seconds: float = 0.0
    interims: int = 0
    """INTERIM events emitted for this utterance."""

    def text(self, tail: str = "") -> str:
        return " ".join(t for t in [*self.segments, tail] if t)

    def close_segment(self, result_json: str) -> None:
        result = json.loads(result_json)
        if text := str(result.get("text", "")).strip():
            self.segments.append(text)
        self.confidences.extend(float(w.get("conf", 0.0)) for w in result.get("result", []))
        self.partial = ""

    @property
    def confidence(self) -> float:
        return sum(self.confidences) / len(self.confidences) if self.confidences else 0.0


class VoskSTT(STT):
    """Vosk/Kaldi streaming recognition; one inference thread shared by its streams."""

    provider = "vosk"
    default_model = ("model", "vosk-en-small")

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        language: str = "en",
        words: bool = True,
        log_level: int = -1,
    ) -> None:
        """
        Args:
            model: a Vosk model directory (holding ``am/`` and ``conf/``); default:
                the manifest's ``vosk-en-small``.
            language: the language label put on events (the model decides what it hears).
            words: ask Kaldi for per-word confidences (they make ``confidence``).
            log_level: Kaldi's log level (-1 silences it).
        """
        super().__init__()
        import vosk

        vosk.SetLogLevel(log_level)
        self._vosk = vosk
        self.language = language
        self.words = words
        self.model_path = _resolve_model(model)
        try:
            self._model = vosk.Model(str(self.model_path))
        except Exception as exc:
            raise ModelError(
                f"cannot load the Vosk model in {self.model_path}: {exc}; fix: pass a complete Vosk model "
                f"directory, or run `edgeagent models pull {DEFAULT_MODEL} --allow-unverified`"
            ) from exc
        self._thread = InferenceThread("stt-vosk")

    # -- recognizer calls (run on the inference thread) -------------------------

    def recognizer(self) -> Any:
        rec = self._vosk.KaldiRecognizer(self._model, float(RECOGNITION_RATE))
        rec.SetWords(self.words)
        return rec

    @staticmethod
    def _accept(rec: Any, samples: Int16Array, hyp: _Hypothesis) -> str:
        """Feed samples; returns the current hypothesis of the whole utterance."""
        start = time.perf_counter()
        if rec.AcceptWaveform(samples.tobytes()):
            hyp.close_segment(rec.Result())
        else:
            hyp.partial = str(json.loads(rec.PartialResult()).get("partial", "")).strip()
        hyp.seconds += time.perf_counter() - start
        return hyp.text(hyp.partial)

    @staticmethod
    def _finish(rec: Any, samples: Int16Array, hyp: _Hypothesis) -> str:
        """Feed the last samples, close the utterance and reset the recognizer."""
        start = time.perf_counter()
        if samples.size and rec.AcceptWaveform(samples.tobytes()):
            hyp.close_segment(rec.Result())
        hyp.close_segment(rec.FinalResult())
        rec.Reset()
        hyp.seconds += time.perf_counter() - start
        return hyp.text()

    # -- the STT contract -------------------------------------------------------

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> VoskStream:
        return VoskStream(self, language or self.language)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        buf = UtteranceBuffer()
        samples = buf.push(audio)
        start = time.monotonic()
        rec = await self._thread.run(self.recognizer)
        hyp = _Hypothesis()
        text = await self._thread.run(self._finish, rec, _join(samples, buf.finish()), hyp)
        delay = time.monotonic() - start
        self._report(STTMetrics(self.provider, buf.duration, hyp.seconds, delay, 0))
        lang = language or self.language
        return SpeechEvent(SpeechEventType.FINAL, text, lang, hyp.confidence, buf.duration, delay)

    async def aclose(self) -> None:
        self._thread.shutdown()


class VoskStream(STTStream):
    """One stream of utterances: INTERIM as Kaldi's hypothesis changes, FINAL on each flush()."""

    def __init__(self, stt: VoskSTT, language: str) -> None:
        self._stt = stt
        self._language = language
        self._flush_times: list[float] = []
        super().__init__()

    def flush(self, quiet_s: float = 0.0) -> None:
        super().flush()
        self._flush_times.append(time.monotonic())

    def reopen(self) -> None:
        """The user carried on after flush(): the next FINAL starts with the last one's text."""
        if self._input_ended or self.closed:
            raise StageClosedError(f"{type(self).__name__}: reopen after end_input/aclose")
        self._in.put_nowait(_REOPEN)

    async def _run(self) -> None:
        stt = self._stt
        rec = await stt._thread.run(stt.recognizer)
        buf, hyp, last = UtteranceBuffer(), _Hypothesis(), ""
        previous: tuple[UtteranceBuffer, str] | None = None
        async for item in self._inputs():
            if isinstance(item, Flush):
                flushed = self._flush_times.pop(0) if self._flush_times else time.monotonic()
                previous = (buf, await self._finalize(rec, buf, hyp, flushed))
                buf, hyp, last = UtteranceBuffer(), _Hypothesis(), ""
                continue
            if isinstance(item, _Reopen):
                if previous is not None and buf.num_samples == 0:
                    buf, text = previous
                    if text:
                        hyp.segments.insert(0, text)
                previous = None
                continue
            samples = buf.push(item)
            if samples.size == 0:
                continue
            text = await stt._thread.run(stt._accept, rec, samples, hyp)
            if text and text != last:
                last = text
                hyp.interims += 1
                self._emit(SpeechEvent(SpeechEventType.INTERIM, text, self._language, 0.0, buf.duration))
        if buf.num_samples:  # end_input() ends the last utterance too
            await self._finalize(rec, buf, hyp, time.monotonic())

    async def _finalize(self, rec: Any, buf: UtteranceBuffer, hyp: _Hypothesis, flushed: float) -> str:
        stt = self._stt
        text = await stt._thread.run(stt._finish, rec, buf.finish(), hyp)
        delay = time.monotonic() - flushed
        self._emit(SpeechEvent(SpeechEventType.FINAL, text, self._language, hyp.confidence, buf.duration, delay))
        stt._report(STTMetrics(stt.provider, buf.duration, hyp.seconds, delay, hyp.interims))
        return text


def _join(a: Int16Array, b: Int16Array) -> Int16Array:
    return np.concatenate([a, b]) if b.size else a


def _resolve_model(model: str | os.PathLike[str] | None) -> Path:
    if model is None:
        from edgeagent.model_files.manifest import model_path

        return model_path(DEFAULT_MODEL)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"Vosk model directory {path} does not exist; fix: pass an unpacked Vosk model directory, "
            f"or run `edgeagent models pull {DEFAULT_MODEL} --allow-unverified`"
        )
    return path
