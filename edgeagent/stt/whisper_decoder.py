"""One Whisper decode: faster-whisper (CTranslate2) on the CPU, synchronous.

Whisper is not streaming, and faster-whisper always encodes a padded 30 s
window, so one decode costs about the same whatever the length. CTranslate2's
encoder does accept a shorter window, and the encoder is most of the cost
(here, for a 5 s utterance: encoder ~400 ms, decoder ~120 ms), so we encode
``max(encoder_window, audio + encoder_margin)`` seconds of the padded window:
20 s by default. Word error rate on Piper and espeak-ng speech (mean WER,
30 s / 20 s / 15 s / 10 s windows, each run under one load):

- 200 utterances of 0.5-9 s: 0.066 / 0.065 / 0.074 / -
- 100 utterances of 0.5-9 s: 0.094 / 0.093 / 0.102 / 0.128
- 78 utterances of 0.5-9 s: 0.078 / 0.114 / 0.116 / 0.216

Decode time of a 5 s utterance on an idle 2 cores: ~490 ms at 30 s, ~240 ms at
15 s. Below 15 s short commands suffer ("No." → "No? No?", repetition loops).
``encoder_window=30`` restores Whisper's own behaviour exactly.

Hallucination guard: temperature fallback is off (one pass, for speed);
segments with ``no_speech_prob > no_speech_threshold`` and ``avg_logprob <
logprob_threshold`` (Whisper's own rule, 0.6 and -1.0) are dropped, and so are
repetition loops (``compression_ratio > 2.4``) and segments without a letter or
digit (a lone "." on noise); audio that never reaches -70 dBFS is not decoded
at all. So silence gives an empty FINAL, not
"Thank you."

Pauses are squeezed: every quiet stretch between sounds (10 ms blocks ``quiet_db`` below
the loudest) longer than ``max_pause_s`` is cut to that length before decoding (the quiet
before and after the speech is left alone: Whisper tiny heard "What is the capital of
France?" as "... capital and friends?" with its 1 s tail cut to 0.3 s). Whisper ends its
transcript at a long pause: "Can you tell me how many, [0.95 s] legs a spider has?"
came out "Can you tell me how many? Let the spider has.", "What language is spoken in,
[0.95 s] Brazil?" as "What languages spoken in?"; squeezed to 0.3 s, "Can you tell me
how many legs a spider has?" and "What languages spoken in Brazil?" (espeak-ng, 5 such
questions: 4 lost or garbled their end before, none after).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.audio.frame import RECOGNITION_RATE, Float32Array
from edgeagent.errors import ModelError
from edgeagent.stt.buffer import BLOCK

log = logging.getLogger(__name__)

DEFAULT_MODEL = "whisper-tiny-en"
"""Manifest name of the default model (a CTranslate2 directory)."""

MAX_COMPRESSION_RATIO = 2.4
MEL_FRAMES_PER_S = 100
FULL_WINDOW_FRAMES = 3000
SILENT_PEAK = 10 ** (-70 / 20)


def default_threads() -> int:
    """CTranslate2 threads: every core up to 4 (a Pi has 4)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Transcript:
    """What one decode found."""

    text: str
    confidence: float
    seconds: float
    """Wall time the decode took."""


class WhisperDecoder:
    """A loaded Whisper model and the decoding options; :meth:`transcribe` blocks."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        language: str = "en",
        cpu_threads: int | None = None,
        compute_type: str = "int8",
        beam_size: int = 1,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        encoder_window: float = 20.0,
        encoder_margin: float = 5.0,
        max_pause_s: float | None = 0.3,
        quiet_db: float = -35.0,
    ) -> None:
        """Options as in :class:`~edgeagent.stt.whisper.WhisperSTT`; ``max_pause_s``: longer quiet
        stretches are cut to it (None: never), quiet being ``quiet_db`` below the loudest 10 ms."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory only, never a hub
        self.language = language
        self.max_pause_s = max_pause_s
        self.quiet_db = quiet_db
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.encoder_window = encoder_window
        self.encoder_margin = encoder_margin
        self.cpu_threads = cpu_threads or default_threads()
        self.model_path = resolve_model(model)
        self._model = _load(self.model_path, compute_type, self.cpu_threads)
        self._lock = threading.Lock()  # the encoder window is set per call
        self.last_decode_s = 0.0
        """Wall time of the latest decode that ran the model."""

    def transcribe(self, audio: Float32Array, language: str | None = None, prefix: str = "") -> Transcript:
        """Decode 16 kHz float32 samples (blocks: call it off the event loop). ``prefix``: words
        the audio begins with, given to Whisper as the start of its text (which keeps them)."""
        start = time.perf_counter()
        if audio.size == 0 or float(abs(audio).max()) < SILENT_PEAK:
            return Transcript("", 0.0, time.perf_counter() - start)
        if self.max_pause_s is not None:
            audio = squeeze_pauses(audio, self.max_pause_s, self.quiet_db)
        with self._lock:
            seconds = max(self.encoder_window, audio.size / RECOGNITION_RATE + self.encoder_margin)
            self._model.window_frames = min(FULL_WINDOW_FRAMES, 2 * math.ceil(seconds * MEL_FRAMES_PER_S / 2))
            return self._transcribe(audio, language, start, prefix)

    def _transcribe(self, audio: Float32Array, language: str | None, start: float, prefix: str) -> Transcript:
        segments, _info = self._model.transcribe(
            audio,
            language=language or self.language,
            task="transcribe",
            beam_size=self.beam_size,
            best_of=1,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=self.no_speech_threshold,
            log_prob_threshold=self.logprob_threshold,
            prefix=prefix or None,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            if seg.no_speech_prob > self.no_speech_threshold and seg.avg_logprob < self.logprob_threshold:
                continue
            if seg.compression_ratio > MAX_COMPRESSION_RATIO:
                log.debug("dropping a repetition loop: %r", seg.text)
                continue
            text = seg.text.strip()
            if any(ch.isalnum() for ch in text):  # "." or "..." alone is not speech
                texts.append(text)
                logprobs.append(seg.avg_logprob)
        seconds = time.perf_counter() - start
        self.last_decode_s = seconds
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return Transcript(" ".join(texts), confidence, seconds)


def squeeze_pauses(audio: Float32Array, max_pause_s: float, quiet_db: float = -35.0) -> Float32Array:
    """``audio`` with every pause (a quiet stretch between sounds) longer than ``max_pause_s``
    cut to that length; quiet: a 10 ms block ``quiet_db`` below the loudest one. The quiet
    before and after the speech is kept as it is."""
    n = audio.size // BLOCK
    if n == 0:
        return audio
    blocks = audio[: n * BLOCK].reshape(n, BLOCK).astype(np.float64)
    rms = np.sqrt((blocks**2).mean(axis=1))
    quiet = rms < rms.max() * 10 ** (quiet_db / 20)
    idx = np.arange(n)
    run_start = np.maximum.accumulate(np.where(quiet, 0, idx + 1))  # first block of each quiet run
    loud = np.flatnonzero(~quiet)
    inside = (idx > loud[0]) & (idx < loud[-1])  # the quiet before and after the speech stays
    keep = ~quiet | ~inside | (idx - run_start < round(max_pause_s * 100))
    if keep.all():
        return audio
    mask = np.concatenate([np.repeat(keep, BLOCK), np.ones(audio.size - n * BLOCK, bool)])
    out: Float32Array = audio[mask]
    return out


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    if model is None:
        from edgeagent.model_files.manifest import model_path

        return model_path(DEFAULT_MODEL)
    path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelError(
            f"{path} is not a CTranslate2 Whisper model directory (no model.bin); "
            f"fix: pass the directory that holds model.bin, or run `edgeagent models pull {DEFAULT_MODEL}`"
        )
    return path


def _load(path: Path, compute_type: str, threads: int) -> Any:
    from faster_whisper import WhisperModel

    # Its INFO line for every decode ("Processing audio with duration 00:01.000", several per
    # question) filled the service's journal (scripts/check-service): warnings and errors only.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)

    class ShortWindowWhisper(WhisperModel):  # type: ignore[misc]
        """Encodes only the first ``window_frames`` mel frames of the padded window."""

        window_frames: int = FULL_WINDOW_FRAMES

        def encode(self, features: Any) -> Any:
            return super().encode(features[..., : self.window_frames])

    try:
        return ShortWindowWhisper(
            str(path), device="cpu", compute_type=compute_type, cpu_threads=threads, local_files_only=True
        )
    except Exception as exc:
        raise ModelError(
            f"cannot load the Whisper model in {path}: {exc}; "
            f"fix: `edgeagent models pull {DEFAULT_MODEL}` (or `edgeagent models verify`)"
        ) from exc
