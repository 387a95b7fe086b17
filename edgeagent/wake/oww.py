"""openWakeWord (0.5.1 ONNX models) run by our own code on onnxruntime.

Several words at once share one front end (:mod:`edgeagent.wake.features`);
each word has its own classifier, threshold and :class:`Trigger`. A word fires
when its score is at or above its threshold for ``trigger_level`` consecutive
80 ms steps; it then waits for its score to fall below the threshold and stays
silent for ``refractory`` seconds, so one utterance fires once. The first 5
steps of a stream score 0 (the buffers still hold the start-up history), as in
openWakeWord.

Default trigger level 2: "hey jarvis" from espeak-ng and Piper stays over 0.5
for 6-8 consecutive steps at every alignment we tried, while 150 s of other
speech kept hey_jarvis under 0.01; two steps drop one-step spikes (noise, clicks) for
80 ms of latency. Scores match openWakeWord 0.5.1 itself to 1e-5 once the
start-up history has left the 16-embedding window.

Words are manifest names (``hey_jarvis``, ``alexa``, ``hey_mycroft``,
``hey_rhasspy``: files ``<name>_v*.onnx`` in the model directory) or paths to
custom ``.onnx`` classifiers; a file's word is its name without the version
suffix (``hey_jarvis_v0.1.onnx`` → ``hey_jarvis``).

Live changes (remote configuration, :mod:`edgeagent.control.live`): :meth:`OpenWakeWord.set_threshold`
changes the threshold of the streams already running too, and :meth:`OpenWakeWord.load_words`
then :meth:`OpenWakeWord.use_words` swap the words they listen for, keeping their stream
time and features (a word kept keeps its trigger state).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.resample import FrameAssembler, Resampler
from edgeagent.errors import ConfigError, ModelError
from edgeagent.metrics import WakeMetrics
from edgeagent.stage import Flush, InferenceThread, StageStream
from edgeagent.wake.base import PeakHold, WakeEvent, WakeWord
from edgeagent.wake.features import (
    CHUNK,
    EMBEDDING_DIM,
    F32,
    MODEL_NAME,
    FeatureState,
    FrontEnd,
    onnx_session,
)
from edgeagent.wake.trigger import Trigger

STEP_S = CHUNK / RECOGNITION_RATE
WARMUP_STEPS = 5
"""Steps at the start of a stream whose scores are forced to 0."""
DEFAULT_THRESHOLD = 0.5
DEFAULT_TRIGGER_LEVEL = 2
DEFAULT_REFRACTORY = 2.0

_VERSION = re.compile(r"_v\d+(\.\d+)*$")


def word_name(path: Path) -> str:
    """``hey_jarvis_v0.1.onnx`` → ``hey_jarvis``."""
    return _VERSION.sub("", path.name.removesuffix(".onnx"))


def find_word(word: str, model_dir: Path) -> tuple[str, Path]:
    """(name, file) for a manifest word name or a path to a custom .onnx classifier."""
    if word.endswith(".onnx") or "/" in word:
        path = Path(word).expanduser()
        if not path.is_file():
            raise ModelError(f"wake word model {path} does not exist; check the path in wake.words")
        return word_name(path), path
    exact = model_dir / f"{word}.onnx"
    found = [exact] if exact.is_file() else sorted(model_dir.glob(f"{word}_v*.onnx"))
    if not found:
        known = sorted(
            {word_name(p) for p in model_dir.glob("*.onnx")} - {"melspectrogram", "embedding_model"}
        )
        raise ConfigError(
            f"unknown wake word {word!r}; known in {model_dir}: {', '.join(known) or 'none'} "
            "(or give the path to a custom .onnx model)"
        )
    return word, found[-1]


@dataclass(frozen=True)
class WordModel:
    name: str
    path: Path
    session: Any
    input_name: str
    history: int
    """Embeddings the classifier takes (16 for the stock models)."""

    @classmethod
    def load(cls, name: str, path: Path, threads: int) -> WordModel:
        session = onnx_session(path, threads, f"wake word model {name!r}")
        inp = session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 3 or shape[2] != EMBEDDING_DIM or not isinstance(shape[1], int):
            raise ModelError(
                f"{path} is not an openWakeWord classifier (input shape {shape}, "
                f"expected [1, N, {EMBEDDING_DIM}])"
            )
        return cls(name, path, session, inp.name, shape[1])

    def score(self, embeddings: F32) -> float:
        x = embeddings[-self.history :][None, :, :]
        out = self.session.run(None, {self.input_name: x})[0]
        value = float(np.asarray(out).reshape(-1)[0])
        return value if np.isfinite(value) else 0.0


class WakeScorer:
    """Synchronous scoring of one stream: 1280-sample chunks in, a score per word out."""

    def __init__(self, front: FrontEnd, words: Sequence[WordModel]) -> None:
        self._front = front
        self._words = tuple(words)
        self._history = max(w.history for w in words)
        self._state: FeatureState = front.new_state(self._history)
        self.steps = 0

    def set_words(self, words: Sequence[WordModel]) -> None:
        """Score ``words`` from the next chunk on (call it where :meth:`process` runs). The
        features carry on, unless a word needs more history than they hold: then they start
        again (with the warm-up)."""
        history = max(w.history for w in words)
        if history > self._history:
            self._history, self._state, self.steps = history, self._front.new_state(history), 0
        self._words = tuple(words)

    def process(self, chunk: F32) -> dict[str, float]:
        self._front.step(self._state, chunk)
        self.steps += 1
        if self.steps <= WARMUP_STEPS:
            return {w.name: 0.0 for w in self._words}
        return {w.name: w.score(self._state.embeddings) for w in self._words}


class OpenWakeWord(WakeWord):
    """openWakeWord provider ("openwakeword").

    Options: ``words`` (names or .onnx paths), ``model_dir`` (holds
    melspectrogram.onnx, embedding_model.onnx and the word models; default:
    the manifest's ``openwakeword``), ``threshold`` (one value, or per word),
    ``trigger_level`` (consecutive 80 ms steps over threshold, default 2),
    ``refractory`` (seconds a word stays silent after firing, default 2),
    ``threads`` (onnxruntime intra-op threads), ``metrics_interval`` (seconds
    of audio between :class:`WakeMetrics` reports).
    """

    provider = "openwakeword"
    default_model = ("model_dir", "openwakeword")

    def __init__(
        self,
        words: Sequence[str] = ("hey_jarvis",),
        *,
        model_dir: str | Path | None = None,
        threshold: float | Mapping[str, float] = DEFAULT_THRESHOLD,
        trigger_level: int = DEFAULT_TRIGGER_LEVEL,
        refractory: float = DEFAULT_REFRACTORY,
        threads: int = 1,
        metrics_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if not words:
            raise ConfigError("wake.words: give at least one wake word")
        if trigger_level < 1:
            raise ConfigError(f"wake.trigger_level must be at least 1, got {trigger_level}")
        if refractory < 0:
            raise ConfigError(f"wake.refractory must not be negative, got {refractory}")
        if threads < 1:
            raise ConfigError(f"wake.threads must be at least 1, got {threads}")
        if model_dir is None:
            from edgeagent.model_files.manifest import model_path

            model_dir = model_path(MODEL_NAME)
        self.model_dir = Path(model_dir).expanduser()
        self.threads = threads
        self.front = FrontEnd(self.model_dir, threads)
        self.models = self.load_words(words)
        self.thresholds = self._thresholds(threshold, [m.name for m in self.models])
        self.trigger_level = trigger_level
        self.refractory = refractory
        self.metrics_steps = max(1, round(metrics_interval / STEP_S))
        self.thread = InferenceThread("wake-oww")
        self._streams: weakref.WeakSet[OpenWakeWordStream] = weakref.WeakSet()

    def load_words(self, words: Sequence[str]) -> tuple[WordModel, ...]:
        """The classifiers of ``words`` (names or .onnx paths), loaded but not yet in use.

        Blocking (an ONNX session per word): off the event loop. Raises
        :class:`ConfigError` or :class:`ModelError` for a word that is not installed.
        """
        if isinstance(words, str):
            words = (words,)
        if not words:
            raise ConfigError("wake.words: give at least one wake word")
        named = [find_word(w, self.model_dir) for w in words]
        names = [n for n, _ in named]
        if len(set(names)) != len(names):
            raise ConfigError(f"wake.words: a word is listed twice ({', '.join(names)})")
        return tuple(WordModel.load(n, p, self.threads) for n, p in named)

    async def use_words(self, models: Sequence[WordModel], threshold: float | Mapping[str, float]) -> None:
        """Listen for ``models`` (from :meth:`load_words`) with ``threshold``, in the streams
        already running too. A bad threshold raises before anything changed."""
        thresholds = self._thresholds(threshold, [m.name for m in models])
        self.models, self.thresholds = tuple(models), thresholds
        streams = [s for s in list(self._streams) if not s.closed]
        for s in streams:
            s._use_words(self.words, thresholds)

        def swap() -> None:  # where the scorers run, between two chunks
            for s in streams:
                s._scorer.set_words(self.models)

        await self.thread.run(swap)

    def set_threshold(self, threshold: float | Mapping[str, float]) -> None:
        """A new threshold (one value, or per word), for the streams already running too; a
        trigger keeps its state (a word over the threshold stays disarmed until it falls)."""
        thresholds = self._thresholds(threshold, list(self.words))
        self.thresholds = thresholds
        for s in list(self._streams):
            s._use_words(self.words, thresholds)

    @staticmethod
    def _thresholds(threshold: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
        if isinstance(threshold, Mapping):
            unknown = set(threshold) - set(names)
            if unknown:
                raise ConfigError(f"wake.threshold names words not listed: {sorted(unknown)}")
            out = {n: float(threshold.get(n, DEFAULT_THRESHOLD)) for n in names}
        else:
            out = dict.fromkeys(names, float(threshold))
        for n, t in out.items():
            if not 0.0 < t <= 1.0:
                raise ConfigError(f"wake.threshold for {n!r} must be in (0, 1], got {t}")
        return out

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def scorer(self) -> WakeScorer:
        """A synchronous scorer (for benchmarks and tools); streams use one each."""
        return WakeScorer(self.front, self.models)

    def stream(self) -> OpenWakeWordStream:
        stream = OpenWakeWordStream(self)
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        self.thread.shutdown()


class OpenWakeWordStream(StageStream[AudioFrame, WakeEvent]):
    """One audio source: frames of any length and rate in, :class:`WakeEvent` out.

    ``max_scores`` holds the highest score of each word seen so far (after the
    warm-up): useful to tune a threshold on a device. A FLUSH is ignored (a
    wake word can straddle it); the end of input scores the zero-padded tail.
    """

    def __init__(self, owner: OpenWakeWord) -> None:
        self._owner = owner
        self._scorer = owner.scorer()
        self._triggers = {w: Trigger(owner.thresholds[w], owner.trigger_level, owner.refractory) for w in owner.words}
        self.max_scores = dict.fromkeys(owner.words, 0.0)
        self._resampler: Resampler | None = None
        self._assembler = FrameAssembler(RECOGNITION_RATE, CHUNK)
        self._peaks = PeakHold()
        self._steps = 0
        self._stat_steps = 0
        self._stat_seconds = 0.0
        super().__init__()

    def _use_words(self, words: Sequence[str], thresholds: Mapping[str, float]) -> None:
        """New words and thresholds (:meth:`OpenWakeWord.use_words`, :meth:`OpenWakeWord.set_threshold`)."""
        triggers: dict[str, Trigger] = {}
        for w in words:
            trigger = self._triggers.get(w) or Trigger(thresholds[w], self._owner.trigger_level,
                                                       self._owner.refractory)
            trigger.threshold = thresholds[w]
            triggers[w] = trigger
        self._triggers = triggers
        self.max_scores = {w: self.max_scores.get(w, 0.0) for w in words}

    async def _run(self) -> None:
        async for item in self._inputs():
            if isinstance(item, Flush):
                continue
            await self._process(self._chunks_of(item))
        tail: list[AudioFrame] = []
        if self._resampler is not None:
            tail = self._assembler.push(self._resampler.flush())
        await self._process(tail + self._assembler.flush(pad=True))
        for event in self._peaks.flush():
            self._emit(event)
        self._report_metrics()

    def _chunks_of(self, frame: AudioFrame) -> list[AudioFrame]:
        """Whole 16 kHz chunks ready after ``frame`` (resampled when needed)."""
        out: list[AudioFrame] = []
        if self._resampler is not None and self._resampler.in_rate != frame.sample_rate:
            out = self._assembler.push(self._resampler.flush())  # the rate changed
            self._resampler = None
        if frame.sample_rate != RECOGNITION_RATE:
            if self._resampler is None:
                self._resampler = Resampler(frame.sample_rate, RECOGNITION_RATE)
            frame = self._resampler.push(frame)
        return out + self._assembler.push(frame)

    def _score(self, chunks: list[F32]) -> tuple[list[dict[str, float]], float]:
        """On the inference thread: the scores of each chunk and the time they took."""
        t0 = time.perf_counter()
        scores = [self._scorer.process(c) for c in chunks]
        return scores, time.perf_counter() - t0

    async def _process(self, chunks: list[AudioFrame]) -> None:
        if not chunks:
            return
        floats = [c.samples.astype(np.float32) for c in chunks]
        all_scores, seconds = await self._owner.thread.run(self._score, floats)
        self._stat_seconds += seconds
        self._stat_steps += len(chunks)
        for scores in all_scores:
            self._steps += 1
            now = self._steps * STEP_S
            for word, score in scores.items():
                trigger = self._triggers.get(word)
                if trigger is None:  # scored just before the words changed
                    continue
                self.max_scores[word] = max(self.max_scores[word], score)
                event = self._peaks.step(word, score, now)
                if trigger.update(score, now):
                    event = self._peaks.fired(word, score, now, again=trigger.again)
                if event is not None:
                    self._emit(event)
            if self._stat_steps >= self._owner.metrics_steps:
                self._report_metrics()

    def _report_metrics(self) -> None:
        if not self._stat_steps:
            return
        self._owner._report(
            WakeMetrics(
                provider=self._owner.provider,
                frames=self._stat_steps,
                inference_ms_avg=1000.0 * self._stat_seconds / self._stat_steps,
                window_ms=STEP_S * 1000.0,
                words=len(self._owner.models),
            )
        )
        self._stat_steps = 0
        self._stat_seconds = 0.0
