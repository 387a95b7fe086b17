"""Echo cancellation on real audio paths: the agent must not hear itself.

PulseAudio null sinks have no acoustic path, so a fixture loads a loopback from
``speaker.monitor`` into ``mic_feed``: what :class:`DeviceOutput` plays on the
default sink comes back into the default source, like a speaker next to a mic
(about 80-210 ms from hand-over to capture, measured). ``adjust_time=0`` keeps the
loopback from resampling itself towards its latency target: that moved the echo
by tens of ms mid-run, which no canceller tracks instantly.

Each run records the raw mic frames and the echo-cancelled ones side by side, so
the raw capture is the control that proves the echo is there; a second canceller
that gets the same mic frames but no far-end reference proves the reduction comes
from the reference, not from filtering.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from speech import espeak, piper, save

from edgeagent.audio.echo import EchoCanceller
from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
from edgeagent.errors import AudioFormatError, ConfigError

RATE = 16_000
FAR_TEXT = (
    "Hello there. I am the agent, and this is my own voice coming back through the "
    "microphone. The echo canceller should remove it, so that I never interrupt myself."
)
CONVERGE_S = 2.0  # measured: AEC3 is converged well within the first second here


def level_db(x: npt.ArrayLike) -> float:
    a = np.asarray(x, dtype=np.float64)
    return 10.0 * float(np.log10(np.mean(a**2) + 1e-9))


@dataclass
class Run:
    raw: AudioFrame
    cleaned: AudioFrame
    no_reference: AudioFrame
    play_start: int  # sample index of the raw capture where playback was handed over
    active_during: list[bool] = field(default_factory=list)
    active_after: bool = True


async def run_echo(far: AudioFrame, near: Path | None = None, near_at: float = 0.0) -> Run:
    """Play ``far`` on the speaker while recording the mic (optionally ``near`` spoken into it)."""
    ec = EchoCanceller(RATE)
    blind = EchoCanceller(RATE)  # same mic audio, never attached: no far-end reference
    inp = DeviceInput(None, rate=RATE, frame_ms=20)
    out = DeviceOutput(None, rate=48_000)
    raw: list[AudioFrame] = []
    cleaned: list[AudioFrame] = []
    blinded: list[AudioFrame] = []
    stop = asyncio.Event()
    run_active: list[bool] = []

    async def capture() -> None:
        async for f in inp:
            raw.append(f)
            cleaned.append(ec.process_capture(f))
            blinded.append(blind.process_capture(f))
            if stop.is_set():
                return

    try:
        await asyncio.wait_for(inp.start(), 10)
        await asyncio.wait_for(out.start(), 10)
        ec.attach(out)
        task = asyncio.create_task(capture())
        t0 = time.monotonic()
        while not raw:  # audio flows (a fresh null sink starts slowly)
            assert time.monotonic() - t0 < 6, "no audio from the mic within 6 s"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        t_play = time.monotonic()
        player = None
        for i, chunk in enumerate(far.chunks(480)):
            if near is not None and player is None and i * 480 / far.sample_rate >= near_at:
                player = await asyncio.create_subprocess_exec("paplay", "--device=mic_feed", str(near))
            await asyncio.wait_for(out.write(chunk), 2)
            if i % 50 == 0:
                run_active.append(ec.active)
        await asyncio.wait_for(out.drain(), 5)
        if player is not None:
            assert await asyncio.wait_for(player.wait(), 15) == 0
        await asyncio.sleep(1.2)
        active_after = ec.active
        stop.set()
        await asyncio.wait_for(task, 3)
    finally:
        ec.close()
        blind.close()
        await asyncio.wait_for(out.aclose(), 5)
        await asyncio.wait_for(inp.aclose(), 5)
    assert ec.stats.capture_frames == 2 * len(raw)
    assert abs(ec.stats.reverse_frames - ec.stats.capture_frames) < 0.1 * ec.stats.capture_frames
    assert blind.stats.reverse_frames == 0
    first = raw[0].timestamp
    assert first is not None
    return Run(
        AudioFrame.concat(raw),
        AudioFrame.concat(cleaned),
        AudioFrame.concat(blinded),
        round((t_play - first) * RATE),
        run_active,
        active_after,
    )


@pytest.mark.pulse
async def test_echo_of_the_agents_speech_is_cancelled(loopback: None) -> None:
    far = piper(FAR_TEXT, 48_000)
    run = await run_echo(far)
    start = run.play_start + round(CONVERGE_S * RATE)
    end = run.play_start + round((far.duration + 0.3) * RATE)
    raw = run.raw.samples[start:end]
    # The control: the mic really hears the agent, loud.
    assert level_db(raw) > 55, f"the echo is missing from the capture ({level_db(raw):.1f} dB)"
    reduction = level_db(raw) - level_db(run.cleaned.samples[start:end])
    blind_reduction = level_db(raw) - level_db(run.no_reference.samples[start:end])
    print(f"echo reduction after {CONVERGE_S} s: {reduction:.1f} dB; without reference {blind_reduction:.1f} dB")
    assert reduction > 20, f"echo reduced by only {reduction:.1f} dB"
    assert abs(blind_reduction) < 3, f"without a reference the capture changed by {blind_reduction:.1f} dB"
    # active: while the agent talks, and not once the echo tail is over.
    assert sum(run.active_during) >= len(run.active_during) - 1
    assert not run.active_after


@pytest.mark.pulse
async def test_near_end_speech_survives_double_talk(loopback: None, tmp_path: Path) -> None:
    far = piper(FAR_TEXT, 48_000)
    near_frame = espeak("Stop, what time is it in Paris?", RATE, voice="en-us+f3")
    near = save(near_frame, tmp_path / "near.wav")
    near_at = 3.0
    run = await run_echo(far, near, near_at)
    # Where the near-end speech is in the capture: align it in the blind (uncancelled) path.
    cap = run.no_reference.samples.astype(np.float64)
    ref = near_frame.samples.astype(np.float64)
    lo = run.play_start + round((near_at - 0.5) * RATE)
    window = cap[lo : lo + round(2.0 * RATE) + len(ref)]
    corr = np.correlate(window, ref, mode="valid")
    at = lo + int(np.argmax(np.abs(corr)))
    # The APM's output may lag its input by a few ms (block processing): allow ±20 ms.
    best = (-1.0, 0)
    for shift in range(-320, 321, 4):
        c = run.cleaned.samples[at + shift : at + shift + len(ref)].astype(np.float64)
        ncc = float(np.dot(c, ref) / np.sqrt(np.dot(c, c) * np.dot(ref, ref) + 1e-9))
        best = max(best, (ncc, shift))
    ncc, shift = best
    cleaned = run.cleaned.samples[at + shift : at + shift + len(ref)].astype(np.float64)
    kept = level_db(cleaned) - level_db(ref)
    # The same stretch of far-end echo without the near-end talker is cancelled hard.
    echo_only = run.cleaned.samples[run.play_start + round(CONVERGE_S * RATE) : lo]
    echo_raw = run.raw.samples[run.play_start + round(CONVERGE_S * RATE) : lo]
    raw = run.raw.samples[at : at + len(ref)].astype(np.float64)
    raw_ncc = float(np.dot(raw, ref) / np.sqrt(np.dot(raw, raw) * np.dot(ref, ref) + 1e-9))
    over_residual = level_db(cleaned) - level_db(echo_only)
    print(
        f"double talk: near-end level change {kept:.1f} dB, correlation {ncc:.2f} "
        f"(raw mic {raw_ncc:.2f}), output lags by {shift} samples; echo alone reduced "
        f"{level_db(echo_raw) - level_db(echo_only):.1f} dB; near-end {over_residual:.1f} dB over it"
    )
    # Measured: -4 dB, correlation 0.47 (AEC3 ducks the near end where the far end is loud).
    assert ncc > 0.3, f"the near-end speech did not survive (correlation {ncc:.2f})"
    assert kept > -10, f"the near-end speech lost {-kept:.1f} dB"
    assert over_residual > 30, f"the near-end speech is only {over_residual:.1f} dB over the echo"


async def test_frames_are_cut_into_10ms_and_leftovers_carried() -> None:
    ec = EchoCanceller(RATE)
    try:
        rng = np.random.default_rng(1)
        total_in = total_out = 0
        t = 100.0
        for n in (250, 160, 90, 320, 7, 333):
            frame = AudioFrame.from_int16(rng.integers(-3000, 3000, n), RATE, t)
            out = ec.process_capture(frame)
            assert out.sample_rate == RATE and out.num_samples % 160 == 0
            assert out.timestamp == pytest.approx(100.0 + total_out / RATE)
            total_in += n
            total_out += out.num_samples
            assert 0 <= total_in - total_out < 160
            t += n / RATE
        # The mic's 20 ms frames pass with no delay and keep their timestamp.
        ec2 = EchoCanceller(RATE)
        frame = AudioFrame.from_int16(np.zeros(320, np.int16), RATE, 5.0)
        out = ec2.process_capture(frame)
        assert out.num_samples == 320 and out.timestamp == 5.0
        ec2.close()
    finally:
        ec.close()


def test_wrong_rates_are_clear_errors() -> None:
    ec = EchoCanceller(16_000)
    try:
        with pytest.raises(AudioFormatError, match="16000 Hz, got a 48000 Hz frame"):
            ec.process_capture(AudioFrame.silence(0.02, 48_000))
    finally:
        ec.close()
    with pytest.raises(ConfigError, match="not 44100"):
        EchoCanceller(44_100)
