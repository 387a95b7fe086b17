"""WAV bytes in memory, for uploads and for our local speech server."""

from __future__ import annotations

import io
import wave

import numpy as np

from edgeagent.audio.frame import AudioFrame
from edgeagent.errors import AudioFormatError


def wav_bytes(frame: AudioFrame) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(frame.sample_rate)
        w.writeframes(frame.samples.astype("<i2").tobytes())
    return buf.getvalue()


def read_wav_bytes(data: bytes) -> AudioFrame:
    """A mono 16-bit WAV from bytes; AudioFormatError for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise AudioFormatError(f"expected 16-bit WAV, got {8 * w.getsampwidth()}-bit")
            channels, rate = w.getnchannels(), w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"not a WAV file ({exc})") from exc
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return AudioFrame.from_int16(pcm, rate)
