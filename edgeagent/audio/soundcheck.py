"""``edgeagent devices --test``: record a few seconds from the microphone, play them back.

The microphone is opened as the agent opens it (16 kHz mono frames from whatever rate and
channel count the device takes), the speaker likewise; the report says which device,
rate and channel count each end opened at, how loud the recording was (RMS and peak,
dBFS) and how long the playback took. A live level meter goes to stderr while it
records. Every wait is bounded: a device that does not open or stops delivering audio
is a problem in the report, never a hang.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeagent.aio import wait_for
from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
from edgeagent.audio.soundcards import DeviceSpec
from edgeagent.errors import EdgeAgentError

#: Seconds a device may take to open (as ``edgeagent run``).
OPEN_TIMEOUT_S = 15.0
#: A recording whose peak stays under this heard nothing (a muted or disconnected mic).
SILENT_PEAK_DBFS = -70.0
#: How often the level meter is updated, in seconds.
METER_S = 0.1


def dbfs(samples: np.ndarray[Any, Any]) -> tuple[float, float]:
    """(RMS, peak) of int16 samples in dBFS; -inf for digital silence."""
    if samples.size == 0:
        return -math.inf, -math.inf
    x = samples.astype(np.float64) / 32768.0
    rms, peak = float(np.sqrt(np.mean(x * x))), float(np.max(np.abs(x)))
    return (20 * math.log10(rms) if rms > 0 else -math.inf), (20 * math.log10(peak) if peak > 0 else -math.inf)


@dataclass
class End:
    """One end of the check: the device that opened and how."""

    device: str | None = None
    index: int | None = None
    hostapi: str | None = None
    rate: int | None = None
    channels: int | None = None
    seconds: float = 0.0


@dataclass
class SoundCheck:
    input: End = field(default_factory=End)
    output: End = field(default_factory=End)
    rms_dbfs: float | None = None
    peak_dbfs: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("rms_dbfs", "peak_dbfs"):  # JSON has no -inf
            if doc[key] is not None and not math.isfinite(doc[key]):
                doc[key] = None
        return {"ok": self.ok, **doc}


async def record(inp: DeviceInput, seconds: float, meter: Callable[[float], None] | None) -> AudioFrame:
    """``seconds`` of the opened microphone; ``meter`` gets the RMS dBFS every METER_S."""
    frames: list[AudioFrame] = []
    got = 0.0
    window: list[np.ndarray[Any, Any]] = []
    since = 0.0
    deadline = time.monotonic() + seconds + OPEN_TIMEOUT_S
    it = inp.__aiter__()
    while got < seconds:
        try:
            frame = await wait_for(it.__anext__(), max(0.1, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError, StopAsyncIteration):
            raise EdgeAgentError(f"the microphone delivered {got:.1f} s of audio in {seconds + OPEN_TIMEOUT_S:.0f} s"
                                 ) from None
        frames.append(frame)
        got += frame.duration
        window.append(frame.samples)
        since += frame.duration
        if meter is not None and since >= METER_S:
            meter(dbfs(np.concatenate(window))[0])
            window, since = [], 0.0
    return AudioFrame.concat(frames)


async def play(out: DeviceOutput, audio: AudioFrame) -> float:
    """Play ``audio`` to its end on the opened speaker; the seconds it took."""
    t0 = time.monotonic()
    step = round(audio.sample_rate * 0.1)
    for start in range(0, len(audio.samples), step):
        chunk = AudioFrame(audio.samples[start:start + step], audio.sample_rate)
        await wait_for(out.write(chunk), OPEN_TIMEOUT_S)
    await wait_for(out.drain(), audio.duration + OPEN_TIMEOUT_S)
    return time.monotonic() - t0


async def sound_check(input_device: DeviceSpec, output_device: DeviceSpec, *, seconds: float = 3.0,
                      meter: Callable[[float], None] | None = None, output_buffer_ms: float = 60.0) -> SoundCheck:
    """Record ``seconds`` from ``input_device``, then play them on ``output_device``."""
    report = SoundCheck()
    inp = DeviceInput(input_device, rate=RECOGNITION_RATE)
    audio: AudioFrame | None = None
    try:
        await wait_for(inp.start(), OPEN_TIMEOUT_S)
        info = inp.info
        report.input = End(info.name if info else None, info.index if info else None, info.hostapi if info else None,
                           inp.stream_rate, inp.channels)
        audio = await record(inp, seconds, meter)
        report.input.seconds = round(audio.duration, 3)
        report.rms_dbfs, report.peak_dbfs = (round(v, 1) if math.isfinite(v) else v for v in dbfs(audio.samples))
        if report.peak_dbfs < SILENT_PEAK_DBFS:
            report.problems.append(f"microphone: the recording is silent (peak {report.peak_dbfs} dBFS): is it "
                                   "muted, or the wrong device?")
    except (EdgeAgentError, TimeoutError, asyncio.TimeoutError) as exc:
        report.problems.append(f"microphone: {exc or f'did not open within {OPEN_TIMEOUT_S:.0f} s'}")
    finally:
        await inp.aclose()
    out = DeviceOutput(output_device, buffer_ms=output_buffer_ms)
    try:
        await wait_for(out.start(), OPEN_TIMEOUT_S)
        info = out.info
        report.output = End(info.name if info else None, info.index if info else None,
                            info.hostapi if info else None, out.sink_rate, out.channels)
        # With no recording (the mic failed) the speaker still plays a second of a 440 Hz tone.
        sound = audio if audio is not None else tone(1.0)
        report.output.seconds = round(await play(out, sound), 3)
    except (EdgeAgentError, TimeoutError, asyncio.TimeoutError) as exc:
        report.problems.append(f"speaker: {exc or f'did not open within {OPEN_TIMEOUT_S:.0f} s'}")
    finally:
        await wait_for(out.aclose(), OPEN_TIMEOUT_S)
    return report


def tone(seconds: float, hz: float = 440.0, rate: int = RECOGNITION_RATE) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_float(0.25 * np.sin(2 * np.pi * hz * t), rate)
