"""Sound devices for real: sounddevice/PortAudio through the PulseAudio null sinks.

``paplay --device=mic_feed`` is someone speaking into the virtual mic (the default
source is ``mic_feed.monitor``); ``parec --device=speaker.monitor`` hears what we
played on the default sink. See tests/conftest.py and DESIGN.md §5.

The null sinks start slowly (a sink nobody listened to renders 2 s blocks), so
each test first waits for audio to flow before it plays anything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from conftest import PulseDevices

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import float_to_int16, resample
from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
from edgeagent.audio.soundcards import DeviceInfo, choose_settings, find_device, list_devices
from edgeagent.audio.wav import read_wav
from edgeagent.errors import AudioError, DeviceNotFoundError

pytestmark = pytest.mark.pulse


def best_alignment(captured: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, int]:
    """(normalized cross-correlation, lag in samples) of ``reference`` inside ``captured``."""
    cap = np.asarray(captured, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    n = 1 << int(np.ceil(np.log2(len(cap) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(cap, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(cap)]
    lag = int(np.argmax(corr))
    seg = cap[lag : lag + len(ref)]
    r = ref[: len(seg)]
    denom = float(np.sqrt(np.dot(seg, seg) * np.dot(r, r)))
    return (float(np.dot(seg, r)) / denom if denom else 0.0), lag


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 2 s of real speech from espeak-ng (22.05 kHz mono 16-bit)."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is not installed: run scripts/setup --dev"
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        [espeak, "-w", str(path), "Testing the microphone, one two three."],
        check=True,
        timeout=30,
    )
    return path


async def next_frame(it: AsyncIterator[AudioFrame], timeout: float) -> AudioFrame:
    return await asyncio.wait_for(it.__anext__(), timeout)


@pytest.mark.parametrize(("device", "device_rate"), [("pulse", 48_000), (None, None)])
async def test_wav_played_into_virtual_mic_is_captured(
    pulse: PulseDevices, speech_wav: Path, device: str | None, device_rate: int | None
) -> None:
    ref = read_wav(speech_wav, 16_000)
    inp = DeviceInput(device, rate=16_000, frame_ms=20, device_rate=device_rate)
    await asyncio.wait_for(inp.start(), 10)
    assert inp.stream_rate == (device_rate or 16_000)
    frames: list[AudioFrame] = []
    try:
        it = inp.__aiter__()
        await next_frame(it, 6)  # audio flows
        play = await asyncio.create_subprocess_exec(
            "paplay", f"--device={pulse.mic_sink}", str(speech_wav)
        )
        t_play = time.monotonic()
        played = asyncio.create_task(play.wait())
        end: float | None = None
        while end is None or time.monotonic() < end:
            frames.append(await next_frame(it, 3))
            if end is None and played.done():
                end = time.monotonic() + 0.5  # the tail still in flight
            assert time.monotonic() - t_play < 15, "paplay did not finish"
    finally:
        await asyncio.wait_for(inp.aclose(), 5)
    assert play.returncode == 0
    assert {f.num_samples for f in frames} == {320}
    assert {f.sample_rate for f in frames} == {16_000}
    stamps = np.array([f.timestamp or 0.0 for f in frames])
    assert np.all(np.diff(stamps) > 0), "capture timestamps must increase"
    assert abs(float(np.median(np.diff(stamps))) - 0.02) < 0.002
    assert t_play - 5 < stamps[0] < time.monotonic()
    captured = AudioFrame.concat(frames)
    ncc, lag = best_alignment(captured.samples, ref.samples)
    assert ncc > 0.9, f"captured speech correlates only {ncc:.3f} with what was played"
    level = captured.slice(lag, lag + ref.num_samples).rms_dbfs() - ref.rms_dbfs()
    assert abs(level) < 1.0, f"level changed by {level:.2f} dB"
    assert inp.counters.dropped_frames == 0
    assert inp.counters.frames >= len(frames)


async def test_device_output_is_heard_on_speaker_monitor_and_clear_stops_it(
    pulse: PulseDevices, speech_wav: Path
) -> None:
    ref = read_wav(speech_wav)  # 22.05 kHz, resampled by the output
    rec = await asyncio.create_subprocess_exec(
        "parec",
        f"--device={pulse.speaker_monitor}",
        "--format=s16le",
        "--rate=16000",
        "--channels=1",
        "--latency-msec=20",
        stdout=asyncio.subprocess.PIPE,
    )
    assert rec.stdout is not None
    stdout = rec.stdout
    chunks: list[bytes] = [await asyncio.wait_for(stdout.read(640), 6)]  # audio flows

    async def record() -> None:
        while data := await stdout.read(65536):
            chunks.append(data)

    reader = asyncio.create_task(record())
    out = DeviceOutput("pulse", rate=48_000, latency=0.1, buffer_ms=60)
    started: list[tuple[AudioFrame, float]] = []
    out.on_frame_started = lambda frame, t: started.append((frame, t))
    try:
        await asyncio.wait_for(out.start(), 10)
        t0 = time.monotonic()
        pieces = ref.chunks(441)
        for f in pieces:
            await asyncio.wait_for(out.write(f), 2)
        write_s = time.monotonic() - t0
        await asyncio.wait_for(out.drain(), 5)
        # write() is paced by the device once the small buffer is full.
        assert write_s > ref.duration - 0.3, f"{ref.duration:.2f} s of audio went out in {write_s:.2f} s"
        assert [f for f, _ in started] == pieces
        times = [t for _, t in started]
        assert times == sorted(times) and times[0] >= t0
        assert out.last_written_time == times[-1]
        # Barge-in: queue 3 s of tone, clear after 0.3 s.
        tone = AudioFrame.from_int16(
            float_to_int16(0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 48_000) / 48_000)), 48_000
        )
        writer = asyncio.create_task(out.write(tone))
        await asyncio.sleep(0.3)
        out.clear()
        await asyncio.wait_for(writer, 0.5)  # the cleared write returns at once
        await asyncio.sleep(0.5)
    finally:
        await asyncio.wait_for(out.aclose(), 5)
        rec.terminate()
        await asyncio.wait_for(rec.wait(), 5)
        await asyncio.wait_for(reader, 5)
    heard = np.frombuffer(b"".join(chunks), dtype="<i2")
    ncc, lag = best_alignment(heard, resample(ref, 16_000).samples)
    assert ncc > 0.9, f"recorded output correlates only {ncc:.3f} with what was written"
    after = heard[lag + round(ref.duration * 16_000) :].astype(np.float64)
    env = np.sqrt(np.convolve(after**2, np.ones(160) / 160, mode="same"))
    loud = np.flatnonzero(env > 3000)
    assert loud.size, "the tone was not heard at all"
    tone_s = (loud[-1] - loud[0]) / 16_000
    assert 0.15 < tone_s < 0.8, f"tone went on for {tone_s:.2f} s after clear() at 0.3 s"


async def test_unknown_device_names_list_the_available_ones(pulse: PulseDevices) -> None:
    with pytest.raises(DeviceNotFoundError) as err:
        await asyncio.wait_for(DeviceInput("no-such-microphone").start(), 10)
    msg = str(err.value)
    assert "no-such-microphone" in msg and "'pulse'" in msg and "input devices" in msg
    with pytest.raises(DeviceNotFoundError, match="index 999") as err:
        await asyncio.wait_for(DeviceOutput(999).start(), 10)
    assert "'pulse'" in str(err.value) and "output devices" in str(err.value)
    # Case-insensitive part of a name, and an index, find the device.
    devices = list_devices()
    pulse_dev = find_device("PULS", "input", devices)
    assert pulse_dev.name == "pulse"
    assert find_device(str(pulse_dev.index), "output", devices) == pulse_dev


def test_edgeagent_devices_lists_the_pulse_device(pulse: PulseDevices) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edgeagent", "devices"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "Input devices:" in run.stdout and "Output devices:" in run.stdout
    assert " pulse " in run.stdout and "*" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "edgeagent", "devices", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    for kind in ("input", "output"):
        names = {d["name"] for d in doc[kind]}
        assert "pulse" in names
        assert sum(d["default"] for d in doc[kind]) == 1
        assert all(d["channels"] > 0 and d["default_samplerate"] > 0 for d in doc[kind])


# -- selection logic on a fixed device list (no PortAudio) -----------------------------

DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 2, 48000),
    DeviceInfo(1, "USB Audio Device: - (hw:1,0)", "ALSA", 1, 0, 44100, default_input=True),
    DeviceInfo(2, "HDMI 0 (hw:0,3)", "ALSA", 0, 8, 48000, default_output=True),
    DeviceInfo(3, "usb speakerphone", "ALSA", 1, 2, 16000),
]


def test_find_device_by_exact_name_substring_and_index() -> None:
    assert find_device(None, "input", DEVICES).index == 1
    assert find_device(None, "output", DEVICES).index == 2
    assert find_device("usb speakerphone", "input", DEVICES).index == 3
    assert find_device("alc3246", "input", DEVICES).index == 0
    assert find_device(2, "output", DEVICES).index == 2
    with pytest.raises(DeviceNotFoundError, match="matches several") as err:
        find_device("USB", "input", DEVICES)
    assert "USB Audio Device" in str(err.value)
    with pytest.raises(DeviceNotFoundError, match="no output channels"):
        find_device(1, "output", DEVICES)
    with pytest.raises(DeviceNotFoundError, match="no input device named 'hdmi'") as err:
        find_device("hdmi", "input", DEVICES)
    assert "usb speakerphone" in str(err.value) and "HDMI" not in str(err.value)


def test_rate_choice_falls_back_and_a_device_refusing_every_rate_is_a_clear_error() -> None:
    dev = DEVICES[0]
    tried: list[tuple[int, int]] = []

    def only_441_stereo(rate: int, ch: int) -> str | None:
        tried.append((rate, ch))
        return None if (rate, ch) == (44100, 2) else f"{rate} Hz x{ch}: Invalid sample rate"

    assert choose_settings(dev, "input", 16000, only_441_stereo) == (44100, 2)
    assert [r for r, _ in tried][:2] == [16000, 16000]  # requested rate first, mono then stereo
    assert choose_settings(dev, "input", 16000, lambda r, ch: None) == (16000, 1)
    with pytest.raises(AudioError) as err:
        choose_settings(dev, "input", 16000, lambda r, ch: "Device unavailable", DEVICES)
    msg = str(err.value)
    assert "refuses every rate" in msg
    assert "16000, 48000, 44100, 32000, 22050" in msg
    assert "Device unavailable" in msg and "usb speakerphone" in msg
