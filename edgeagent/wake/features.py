"""openWakeWord's shared front end: melspectrogram → speech embedding, streamed in 80 ms steps.

Mirrors ``openwakeword.utils.AudioFeatures`` (0.5.1) on onnxruntime:

- audio arrives in chunks of 1280 samples (80 ms at 16 kHz), as int16 values
  in float32 (not scaled to [-1, 1]);
- the melspectrogram model sees the chunk plus the 480 samples before it and
  gives 8 frames of 32 mel bins, transformed ``x / 10 + 2``;
- the embedding model turns the last 76 mel frames (one step = 8 frames) into
  one 96-value embedding per chunk;
- word classifiers then score the last 16 embeddings (``[1, 16, 96]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeagent.errors import ModelError

CHUNK = 1280
"""Samples per step (80 ms at 16 kHz)."""
MEL_CONTEXT = 480
"""Samples before the chunk that the melspectrogram needs (3 hops of 160)."""
MEL_WINDOW = 76
"""Mel frames per embedding."""
MEL_BINS = 32
EMBEDDING_DIM = 96
MODEL_NAME = "openwakeword"
"""The manifest name of the default model set."""

F32 = npt.NDArray[np.float32]


def onnx_session(path: Path, threads: int, what: str) -> Any:
    """An onnxruntime CPU session, or ModelError naming the file and the fix."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(
            f"cannot load {what} {path}: {exc}; run `edgeagent models pull {MODEL_NAME}` "
            "or pass an openWakeWord .onnx model"
        ) from exc


class FrontEnd:
    """The two shared models. Thread-safe; per-stream buffers live in :class:`FeatureState`."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        self._mel = onnx_session(model_dir / "melspectrogram.onnx", threads, "melspectrogram model")
        self._emb = onnx_session(model_dir / "embedding_model.onnx", threads, "embedding model")
        self._mel_in = self._mel.get_inputs()[0].name
        self._emb_in = self._emb.get_inputs()[0].name
        # openWakeWord starts the mel buffer with ones; the embedding of that buffer
        # stands in for the history before the stream began.
        self._initial_mel = np.ones((MEL_WINDOW, MEL_BINS), dtype=np.float32)
        self._initial_embedding = self._embed(self._initial_mel)

    def new_state(self, history: int) -> FeatureState:
        """Buffers for one stream; ``history`` is how many embeddings the classifiers need."""
        return FeatureState(self._initial_mel, np.tile(self._initial_embedding, (history, 1)))

    def _embed(self, mel: F32) -> F32:
        out = self._emb.run(None, {self._emb_in: mel[None, :, :, None]})[0]
        return np.asarray(out, dtype=np.float32).reshape(EMBEDDING_DIM)

    def step(self, state: FeatureState, chunk: F32) -> None:
        """Take one 1280-sample chunk (int16 values as float32) and add one embedding."""
        audio = np.concatenate([state.tail, chunk])
        state.tail = audio[-MEL_CONTEXT:]
        mel = self._mel.run(None, {self._mel_in: audio[None, :]})[0]
        mel = np.asarray(mel, dtype=np.float32).reshape(-1, MEL_BINS) / 10.0 + 2.0
        state.mel = np.concatenate([state.mel, mel])[-MEL_WINDOW:]
        state.embeddings = np.concatenate([state.embeddings[1:], self._embed(state.mel)[None, :]])


class FeatureState:
    """One stream's audio tail, mel frames and recent embeddings."""

    def __init__(self, mel: F32, embeddings: F32) -> None:
        self.tail: F32 = np.zeros(MEL_CONTEXT, dtype=np.float32)
        self.mel: F32 = mel.copy()
        self.embeddings: F32 = embeddings.copy()
