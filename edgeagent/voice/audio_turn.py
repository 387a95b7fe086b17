"""Smart Turn v3: does the voice sound finished? An audio end-of-turn model on onnxruntime.

Smart Turn v3.2 (pipecat-ai, BSD-2-Clause; manifest model ``smart-turn-v3``) is a
Whisper-tiny-sized encoder with a classifier head. It hears the last 8 s of the
user's audio (pitch, pace, the trailing sounds of a word) and gives one sigmoid
probability that the turn is complete, whatever the words are.

Its input ``input_features`` is (batch, 80, 800) float32, the log-mel spectrogram
Whisper's feature extractor computes with an 8 s window:

- the last 8 s of 16 kHz mono audio (floats in [-1, 1]), zero-padded at the
  *start* when shorter, so the end of speech always sits at the end of the window;
- the padded waveform normalised to zero mean and unit variance;
- a centred STFT (n_fft 400, hop 160, periodic Hann, reflect padding), power
  spectrum, 80 Slaney mel bands from 0 to 8 kHz; the last of the 801 frames dropped;
- log10 (floor 1e-10), clamped to (max - 8), then (x + 4) / 4.

The model and the numbers above are facts read from the model file and its
documented use; the code is ours (numpy only).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.errors import ModelError
from edgeagent.stage import InferenceThread, StageClosedError
from edgeagent.urgency import REPLY_START, REPLY_START_WAIT_S

MODEL_NAME = "smart-turn-v3"
"""The manifest name of the model."""
WINDOW_S = 8
N_SAMPLES = WINDOW_S * RECOGNITION_RATE
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = N_SAMPLES // HOP  # 800: 801 centred frames, the last one dropped
INPUT_NAME = "input_features"

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _hz_to_mel(hz: F64) -> F64:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    high = hz >= 1000.0
    mel[high] = 15.0 + np.log(hz[high] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: F64) -> F64:
    hz = 200.0 * mel / 3.0
    high = mel >= 15.0
    hz[high] = 1000.0 * np.exp((mel[high] - 15.0) * (np.log(6.4) / 27.0))
    return hz


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RECOGNITION_RATE) -> F64:
    """(n_mels, n_fft // 2 + 1) triangular Slaney filters with area normalisation, 0 Hz to rate/2."""
    fft_hz = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([rate / 2.0]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters


_FILTERS = mel_filters()
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann


def last_window(samples: F32) -> F32:
    """The last 8 s of ``samples``, zero-padded at the start when shorter."""
    if len(samples) >= N_SAMPLES:
        return samples[len(samples) - N_SAMPLES:]
    return np.concatenate([np.zeros(N_SAMPLES - len(samples), np.float32), samples])


def log_mel(window: F32) -> F32:
    """(80, 800) features of exactly 8 s of 16 kHz float audio (see the module doc)."""
    if window.shape != (N_SAMPLES,):
        raise ValueError(f"log_mel needs {N_SAMPLES} samples, got shape {window.shape}")
    x = window.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (801, 201)
    mel = np.log10(np.maximum(_FILTERS @ power.T, 1e-10))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    out: F32 = ((mel + 4.0) / 4.0).astype(np.float32)
    return out


def features(audio: AudioFrame) -> F32:
    """The model input (1, 80, 800) for 16 kHz ``audio``; ValueError at another rate."""
    if audio.sample_rate != RECOGNITION_RATE:
        raise ValueError(f"Smart Turn needs {RECOGNITION_RATE} Hz audio, got {audio.sample_rate} Hz;"
                         " resample it first (edgeagent.audio.resample.resample)")
    batch: F32 = log_mel(last_window(audio.to_float32()))[None]
    return batch


class SmartTurn:
    """The probability that the user's turn is complete, from the sound of the last 8 s.

    Give it the utterance so far (speech and the silence after it), 16 kHz mono.
    One session; :meth:`probability` runs on the model's own inference thread.
    """

    def __init__(self, model_path: Path | None = None, *, threads: int = 1, warmup: bool = True) -> None:
        import onnxruntime as ort

        fix = f"run `edgeagent models pull {MODEL_NAME}` or pass a Smart Turn v3 .onnx file"
        if model_path is None:
            from edgeagent.model_files.manifest import model_path as manifest_path

            model_path = manifest_path(MODEL_NAME)  # ModelError with the fix when missing
        elif not model_path.is_file():
            raise ModelError(f"Smart Turn model {model_path} is missing; {fix}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load Smart Turn model {model_path}: {exc}; {fix}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or list(inputs[0].shape[1:]) != [N_MELS, N_FRAMES] \
                or len(outputs) != 1:
            raise ModelError(f"{model_path} is not a Smart Turn v3 model (inputs "
                             f"{[(i.name, i.shape) for i in inputs]}); {fix}")
        self._output = outputs[0].name
        self.path = model_path
        self.last_inference_s = 0.0
        """Wall time of the latest model call (features and inference)."""
        self._thread = InferenceThread("turn-smart")
        self._closed = False
        if warmup:  # onnxruntime's first run is several times slower: not in the first turn
            self.probability_sync(AudioFrame.silence(1.0, RECOGNITION_RATE))

    def probability_sync(self, audio: AudioFrame) -> float:
        """P(turn complete) for ``audio`` (16 kHz mono); blocks for the inference, which waits
        (boundedly) while a reply is starting (:data:`~edgeagent.urgency.REPLY_START`)."""
        REPLY_START.wait(REPLY_START_WAIT_S)
        start = time.perf_counter()
        (out,) = self._session.run([self._output], {INPUT_NAME: features(audio)})
        self.last_inference_s = time.perf_counter() - start
        return float(np.asarray(out).reshape(-1)[0])

    async def probability(self, audio: AudioFrame) -> float:
        """:meth:`probability_sync` on the model's inference thread."""
        if self._closed:
            raise StageClosedError("SmartTurn: probability after aclose")
        return await self._thread.run(self.probability_sync, audio)

    async def aclose(self) -> None:
        """Stop the inference thread (a call in progress finishes). Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._thread.shutdown()
