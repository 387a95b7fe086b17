"""Silero VAD (v5/v6 ONNX) on onnxruntime, without the torch-based ``silero_vad`` package.

The model takes 512 new samples at 16 kHz (32 ms) plus the last 64 samples of
the previous window as context, and carries a recurrent state ``[2, 1, 128]``
from window to window. Each stream has its own state; the session is shared.

Events (see :class:`~edgeagent.vad.base.VADEvent`), in stream time (seconds of
16 kHz audio pushed so far, at the end of the window):

- ``INFERENCE`` for every window, before any START/END of the same window;
- ``START_OF_SPEECH`` once speech lasted ``min_speech_duration``; its frame
  holds ``prefix_padding`` of audio before the speech and the speech so far;
- ``END_OF_SPEECH`` once silence lasted ``min_silence_duration`` (or at
  FLUSH / end of input inside speech); its frame holds the whole utterance
  with the prefix padding and the trailing silence.

In every event inside speech, speech ended (so far) at ``timestamp -
silence_duration`` and began ``speech_duration`` before that.

Silero's probability trails the audio when speech stops: the window after the
last spoken sound still scores high, usually the one after it too (measured on
espeak-ng and Piper speech: the last window over threshold ended 40-85 ms
after the speech energy). So the speech end is placed one window
(:data:`END_LAG`) before the end of the last speech window, and silence is
counted from there, which also reports END_OF_SPEECH one window sooner.

A FLUSH closes an open utterance at once (END_OF_SPEECH) and keeps the model state.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.resample import FrameAssembler, Resampler
from edgeagent.errors import ConfigError, ModelError
from edgeagent.metrics import VADMetrics
from edgeagent.stage import Flush, InferenceThread, StageStream
from edgeagent.vad.base import VAD, VADEvent, VADEventType, VADOptions
from edgeagent.vad.segmenter import Segmenter, SegmenterState, SegmenterUpdate

WINDOW = 512
"""New samples per inference window (32 ms at 16 kHz)."""
CONTEXT = 64
"""Samples of the previous window prepended as context."""
WINDOW_S = WINDOW / RECOGNITION_RATE
END_LAG = WINDOW_S
"""How long Silero's probability trails the end of speech (one window; see above)."""
MODEL_NAME = "silero-vad"
"""The manifest name of the default model."""

F32 = npt.NDArray[np.float32]


class SileroModel:
    """The ONNX session. Thread-safe; the recurrent state lives in :class:`SileroState`."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        fix = f"run `edgeagent models pull {MODEL_NAME}` or pass a Silero v5/v6 .onnx file"
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load Silero VAD model {path}: {exc}; {fix}") from exc
        names = {i.name for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if names != {"input", "state", "sr"} or len(outputs) != 2:
            raise ModelError(
                f"{path} is not a Silero VAD v5/v6 model (inputs {sorted(names)}); {fix}"
            )
        self._outputs = outputs  # [probability, new state]
        self._sr = np.array(RECOGNITION_RATE, dtype=np.int64)
        self.path = path

    def new_state(self) -> SileroState:
        return SileroState()

    def probabilities(self, state: SileroState, windows: list[F32]) -> list[float]:
        """Speech probability of each 512-sample float window, in order, updating ``state``."""
        out: list[float] = []
        for window in windows:
            x = np.concatenate([state.context, window])[None, :]
            prob, new_state = self._session.run(
                self._outputs, {"input": x, "state": state.rnn, "sr": self._sr}
            )
            p = float(prob.reshape(-1)[0])
            if np.isfinite(p) and np.all(np.isfinite(new_state)):
                state.rnn = new_state
            else:  # should not happen with int16 input; never let NaN stick in the state
                p = 0.0
                state.rnn = np.zeros_like(state.rnn)
            state.context = window[-CONTEXT:]
            out.append(p)
        return out


class SileroState:
    """Per-stream recurrent state and context."""

    def __init__(self) -> None:
        self.rnn: F32 = np.zeros((2, 1, 128), dtype=np.float32)
        self.context: F32 = np.zeros(CONTEXT, dtype=np.float32)


class SileroVAD(VAD):
    """Silero VAD provider ("silero").

    Options: ``model_path`` (a .onnx file; default: the manifest's
    ``silero-vad``), ``options`` (:class:`VADOptions`) or its fields as keywords
    (they override ``options``), ``threads`` (onnxruntime intra-op threads),
    ``metrics_interval`` (seconds of audio between :class:`VADMetrics` reports).
    """

    provider = "silero"
    default_model = ("model_path", "silero-vad")

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        options: VADOptions | None = None,
        activation_threshold: float | None = None,
        deactivation_threshold: float | None = None,
        min_speech_duration: float | None = None,
        min_silence_duration: float | None = None,
        prefix_padding: float | None = None,
        threads: int = 1,
        metrics_interval: float = 1.0,
    ) -> None:
        super().__init__()
        base = options or VADOptions()
        overrides = {
            "activation_threshold": activation_threshold,
            "deactivation_threshold": deactivation_threshold,
            "min_speech_duration": min_speech_duration,
            "min_silence_duration": min_silence_duration,
            "prefix_padding": prefix_padding,
        }
        self.options = VADOptions(
            **{k: v if v is not None else getattr(base, k) for k, v in overrides.items()}
        )
        try:
            Segmenter(self.options)  # validates the thresholds
        except ValueError as exc:
            raise ConfigError(f"vad: {exc}") from exc
        for name in ("min_speech_duration", "min_silence_duration", "prefix_padding"):
            if getattr(self.options, name) < 0:
                raise ConfigError(f"vad: {name} must not be negative")
        if threads < 1:
            raise ConfigError(f"vad: threads must be at least 1, got {threads}")
        if model_path is None:
            from edgeagent.model_files.manifest import model_path as manifest_path

            model_path = manifest_path(MODEL_NAME)
        self.model = SileroModel(Path(model_path), threads)
        self.metrics_windows = max(1, round(metrics_interval / WINDOW_S))
        self.thread = InferenceThread("vad-silero")

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)

    async def aclose(self) -> None:
        self.thread.shutdown()


class SileroVADStream(StageStream[AudioFrame, VADEvent]):
    """One audio source: frames of any length and rate in, :class:`VADEvent` out."""

    def __init__(self, vad: SileroVAD) -> None:
        self._vad = vad
        self._state = vad.model.new_state()
        self._segmenter = Segmenter(vad.options, end_lag=END_LAG)
        self._resampler: Resampler | None = None
        self._assembler = FrameAssembler(RECOGNITION_RATE, WINDOW)
        self._prefix_windows = round(vad.options.prefix_padding / WINDOW_S)
        self._audio: collections.deque[npt.NDArray[np.int16]] = collections.deque()
        self._audio_first = 0  # window index of self._audio[0]
        self._samples_in = 0  # 16 kHz samples received (for capture timestamps)
        self._ts_origin: float | None = None  # capture time of stream sample 0
        self._stat_windows = 0
        self._stat_seconds = 0.0
        super().__init__()

    async def _run(self) -> None:
        async for item in self._inputs():
            if isinstance(item, Flush):
                self._finish()
                continue
            await self._process(self._windows_of(item))
        tail: list[AudioFrame] = []
        if self._resampler is not None:
            tail = self._accept(self._resampler.flush())
        tail += self._assembler.flush(pad=True)
        await self._process(tail)
        self._finish()
        self._report_metrics()

    # -- audio in ----------------------------------------------------------

    def _windows_of(self, frame: AudioFrame) -> list[AudioFrame]:
        """Whole 16 kHz windows ready after ``frame`` (resampled when needed)."""
        out: list[AudioFrame] = []
        if self._resampler is not None and self._resampler.in_rate != frame.sample_rate:
            out = self._accept(self._resampler.flush())  # the rate changed: drain the old one
            self._resampler = None
        if frame.sample_rate != RECOGNITION_RATE:
            if self._resampler is None:
                self._resampler = Resampler(frame.sample_rate, RECOGNITION_RATE)
            frame = self._resampler.push(frame)
        return out + self._accept(frame)

    def _accept(self, frame: AudioFrame) -> list[AudioFrame]:
        if frame.num_samples == 0:
            return []
        if frame.timestamp is not None:
            self._ts_origin = frame.timestamp - self._samples_in / RECOGNITION_RATE
        self._samples_in += frame.num_samples
        return self._assembler.push(frame)

    async def _process(self, windows: list[AudioFrame]) -> None:
        if not windows:
            return
        floats = [w.to_float32() for w in windows]
        probs, seconds = await self._vad.thread.run(self._infer, floats)
        self._stat_seconds += seconds
        self._stat_windows += len(windows)
        for window, p in zip(windows, probs, strict=True):
            self._audio.append(window.samples)
            self._on_update(self._segmenter.process(WINDOW_S, p), p)
            if self._stat_windows >= self._vad.metrics_windows:
                self._report_metrics()

    def _infer(self, floats: list[F32]) -> tuple[list[float], float]:
        """On the inference thread: the probabilities and the time they took."""
        t0 = time.perf_counter()
        probs = self._vad.model.probabilities(self._state, floats)
        return probs, time.perf_counter() - t0

    # -- events out --------------------------------------------------------

    def _on_update(self, upd: SegmenterUpdate, p: float) -> None:
        self._emit(self._event(VADEventType.INFERENCE, upd, p))
        if upd.started:
            self._emit(self._event(VADEventType.START_OF_SPEECH, upd, p, with_audio=True))
        if upd.ended:
            self._emit(self._event(VADEventType.END_OF_SPEECH, upd, p, with_audio=True))
        if upd.state is SegmenterState.QUIET:
            self._trim()

    def _finish(self) -> None:
        upd = self._segmenter.finish()
        if upd is not None:
            self._emit(self._event(VADEventType.END_OF_SPEECH, upd, 0.0, with_audio=True))
        self._trim()

    def _event(
        self, kind: VADEventType, upd: SegmenterUpdate, p: float, *, with_audio: bool = False
    ) -> VADEvent:
        return VADEvent(
            type=kind,
            timestamp=upd.time,
            probability=p,
            speaking=upd.speaking,
            speech_duration=upd.speech_duration,
            silence_duration=upd.silence_duration,
            frames=(self._utterance(upd.speech_start),) if with_audio else (),
        )

    def _utterance(self, speech_start: float) -> AudioFrame:
        """Audio from ``prefix_padding`` before ``speech_start`` to now, as one frame."""
        first = max(self._audio_first, round(speech_start / WINDOW_S) - self._prefix_windows)
        parts = list(self._audio)[first - self._audio_first :]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        ts = self._ts_origin + first * WINDOW_S if self._ts_origin is not None else None
        return AudioFrame.from_int16(samples, RECOGNITION_RATE, ts)

    def _trim(self) -> None:
        """When quiet keep only the prefix padding a future START needs."""
        while len(self._audio) > self._prefix_windows:
            self._audio.popleft()
            self._audio_first += 1

    def _report_metrics(self) -> None:
        if not self._stat_windows:
            return
        self._vad._report(
            VADMetrics(
                provider=self._vad.provider,
                frames=self._stat_windows,
                inference_ms_avg=1000.0 * self._stat_seconds / self._stat_windows,
                window_ms=WINDOW_S * 1000.0,
            )
        )
        self._stat_windows = 0
        self._stat_seconds = 0.0
