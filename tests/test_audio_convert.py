"""Audio conversion at the edges: WAV formats, resampling accuracy, file input and output.

Real files, written with soundfile and converted with sox; no mocks.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import (
    Decimator,
    FrameAssembler,
    Resampler,
    float_to_int16,
    frame_from_array,
    frame_from_pcm,
    mix_to_mono,
    resample,
    to_float32,
    to_int16,
)
from edgeagent.audio.wav import WavFileInput, WavFileOutput, read_wav, write_wav
from edgeagent.errors import AudioError, AudioFormatError

SOX = shutil.which("sox")


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> npt.NDArray[np.float64]:
    t = np.arange(round(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(frame: AudioFrame) -> float:
    x = frame.to_float32().astype(np.float64)
    x = x[len(x) // 10 : -len(x) // 10 or None]  # skip the edges
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.argmax(spec) * frame.sample_rate / (8 * len(x)))


def rms_db(x: npt.ArrayLike) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(a**2))))


def inner(frame: AudioFrame, margin: float = 0.05) -> npt.NDArray[np.float64]:
    """The frame as floats without ``margin`` seconds at each edge (filter transients)."""
    m = round(margin * frame.sample_rate)
    return frame.to_float32().astype(np.float64)[m:-m]


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def sox(*args: str) -> None:
    assert SOX is not None, "sox is not installed: run scripts/setup --dev"
    subprocess.run([SOX, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def ref16(tmp_path: Path) -> tuple[Path, AudioFrame]:
    """A 16-bit mono 16 kHz WAV of a 440 Hz tone plus a 3 kHz partial, and its frame."""
    x = sine(440, 16000, 0.5, 0.4) + sine(3000, 16000, 0.5, 0.2)
    frame = AudioFrame.from_int16(float_to_int16(x), 16000)
    path = tmp_path / "ref16.wav"
    sf.write(path, frame.samples, 16000, subtype="PCM_16")
    return path, frame


# -- reading odd WAVs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sox_args", "tolerance"),
    [
        ("stereo", ["-c", "2"], 0),
        ("24bit", ["-b", "24"], 0),
        ("32bit", ["-b", "32"], 0),
        ("float32", ["-e", "floating-point", "-b", "32"], 0),
        ("8bit", ["-D", "-b", "8", "-e", "unsigned-integer"], 128),
        ("stereo-24bit", ["-c", "2", "-b", "24"], 0),
    ],
)
def test_read_wav_formats_converted_by_sox(
    tmp_path: Path, ref16: tuple[Path, AudioFrame], name: str, sox_args: list[str], tolerance: int
) -> None:
    src, ref = ref16
    out = tmp_path / f"{name}.wav"
    sox(str(src), *sox_args, str(out))
    assert sf.info(str(out)).channels == (2 if "stereo" in name else 1)
    got = read_wav(out)
    assert got.sample_rate == 16000
    assert got.num_samples == ref.num_samples
    diff = np.abs(got.samples.astype(np.int32) - ref.samples.astype(np.int32))
    assert diff.max() <= tolerance, f"{name}: max error {diff.max()} LSB"


def test_read_wav_stereo_averages_channels(tmp_path: Path) -> None:
    left = sine(300, 16000, 0.25, 0.6)
    right = sine(700, 16000, 0.25, 0.3)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    got = read_wav(path)
    expected = float_to_int16((left + right) / 2)
    assert np.abs(got.samples.astype(int) - expected.astype(int)).max() <= 1


def test_read_wav_441k_stereo_24bit_at_own_rate_and_resampled(tmp_path: Path) -> None:
    x = sine(1000, 44100, 1.0, 0.5)
    path = tmp_path / "cd.wav"
    sf.write(path, np.stack([x, x], axis=1), 44100, subtype="PCM_24")
    native = read_wav(path)
    assert native.sample_rate == 44100 and native.num_samples == 44100
    assert np.abs(native.samples.astype(int) - float_to_int16(x).astype(int)).max() <= 1
    at16 = read_wav(path, rate=16000)
    assert at16.sample_rate == 16000
    assert abs(at16.num_samples - 16000) <= 1
    assert abs(peak_hz(at16) - 1000) < 2
    assert abs(rms_db(inner(at16)) - rms_db(x)) < 0.5


def test_read_wav_float_beyond_full_scale_is_clipped(tmp_path: Path) -> None:
    path = tmp_path / "hot.wav"
    sf.write(path, np.array([0.0, 1.5, -1.5, 0.25], np.float32), 16000, subtype="FLOAT")
    assert read_wav(path).samples.tolist() == [0, 32767, -32768, 8192]


def test_text_file_given_as_wav_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        read_wav(path)
    msg = str(err.value)
    assert str(path) in msg and "not an audio file" in msg


@pytest.mark.parametrize("what", ["missing", "empty", "directory", "truncated"])
def test_unreadable_files_name_the_file_and_the_problem(tmp_path: Path, what: str) -> None:
    path = tmp_path / f"{what}.wav"
    expected = {
        "missing": "no such file",
        "empty": "the file is empty",
        "directory": "directory",
        "truncated": "damaged or unsupported WAV",
    }[what]
    if what == "empty":
        path.write_bytes(b"")
    elif what == "directory":
        path.mkdir()
    elif what == "truncated":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    with pytest.raises(AudioError, match=expected) as err:
        read_wav(path)
    assert str(path) in str(err.value)


# -- the frame type and width/channel helpers -------------------------------------


def test_audio_frame_rejects_wrong_input() -> None:
    with pytest.raises(AudioFormatError, match="int16"):
        AudioFrame(np.zeros(4, np.float32), 16000)  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError, match="1-D"):
        AudioFrame(np.zeros((4, 2), np.int16), 16000)
    with pytest.raises(AudioFormatError, match="read-only"):
        AudioFrame(np.zeros(4, np.int16), 16000)
    with pytest.raises(AudioFormatError, match="sample rate"):
        AudioFrame.from_int16(np.zeros(4), 0)
    with pytest.raises(AudioFormatError, match="even byte count"):
        AudioFrame.from_bytes(b"\x00\x01\x02", 16000)
    with pytest.raises(AudioFormatError, match="sample rate"):
        resample(AudioFrame.silence(0.01, 16000), 100)
    with pytest.raises(AudioFormatError, match="whole number"):
        frame_from_pcm(b"\x00" * 5, 16000, width=2, channels=2)
    with pytest.raises(AudioFormatError, match="width"):
        frame_from_pcm(b"\x00" * 5, 16000, width=5)
    with pytest.raises(AudioFormatError):
        to_float32(np.array(["a"]))


def test_width_and_channel_helpers() -> None:
    i16 = np.array([-32768, -1, 0, 1, 16384, 32767], np.int16)
    assert to_int16(to_float32(i16)).tolist() == i16.tolist()  # lossless round trip
    i32 = i16.astype(np.int32) << 16
    assert to_int16(i32).tolist() == i16.tolist()
    assert to_int16(np.array([0, 128, 255], np.uint8)).tolist() == [-32768, 0, 32512]
    stereo = np.array([[1000, 3000], [-2000, 0]], np.int16)
    assert float_to_int16(mix_to_mono(stereo)).tolist() == [2000, -1000]
    assert float_to_int16(mix_to_mono(stereo.T, channels_last=False)).tolist() == [2000, -1000]
    # packed little-endian 24-bit stereo: (0x123456, -0x123456), (0x7fffff, -0x800000)
    vals = [0x123456, -0x123456, 0x7FFFFF, -0x800000]
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in vals)
    frame = frame_from_pcm(raw, 48000, width=3, channels=2)
    assert frame.samples.tolist() == [0, 0]
    mono24 = frame_from_pcm(raw, 48000, width=3, channels=1)
    assert mono24.samples.tolist() == [0x1234, -0x1234, 32767, -32768]
    assert frame_from_array(np.zeros((10, 1), np.float32), 8000).num_samples == 10


# -- resampling accuracy ------------------------------------------------------------

RATE_PAIRS = [(48000, 16000), (22050, 48000), (44100, 16000), (16000, 48000), (16000, 22050)]


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3100.0])
def test_one_shot_resampling_keeps_frequency_and_level(src: int, dst: int, freq: float) -> None:
    x = sine(freq, src, 1.0, 0.5)
    out = resample(AudioFrame.from_int16(float_to_int16(x), src), dst)
    assert out.sample_rate == dst
    assert abs(out.num_samples - dst) <= 1
    assert abs(peak_hz(out) - freq) < 2.0
    assert abs(rms_db(inner(out)) - rms_db(x)) < 0.5


def stream_through(r: Resampler, frame: AudioFrame, sizes: list[int]) -> list[AudioFrame]:
    outs = []
    pos = 0
    i = 0
    while pos < frame.num_samples:
        n = sizes[i % len(sizes)]
        outs.append(r.push(frame.slice(pos, pos + n)))
        pos += n
        i += 1
    outs.append(r.flush())
    return outs


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_resampler_matches_one_shot_without_clicks(src: int, dst: int) -> None:
    x = sine(1000, src, 1.0, 0.5) + sine(2500, src, 1.0, 0.2)
    frame = AudioFrame.from_int16(float_to_int16(x), src)
    one_shot = resample(frame, dst)
    for sizes in ([src // 50], [src // 100, 7, 1, src // 33, 0, 480]):
        outs = stream_through(Resampler(src, dst), frame, sizes)
        streamed = AudioFrame.concat(outs)
        assert abs(streamed.num_samples - one_shot.num_samples) <= 1
        n = min(streamed.num_samples, one_shot.num_samples)
        diff = np.abs(streamed.samples[:n].astype(int) - one_shot.samples[:n].astype(int))
        assert diff.max() <= 3, f"chunked {sizes}: differs from one-shot by {diff.max()} LSB"
        # No clicks: the largest sample-to-sample jump is that of the clean signal.
        jumps = np.abs(np.diff(streamed.samples[:n].astype(int)))
        clean = np.abs(np.diff(one_shot.samples[:n].astype(int)))
        assert jumps.max() <= clean.max() + 3
        assert abs(peak_hz(streamed) - 1000) < 2.0
        assert abs(rms_db(inner(streamed)) - rms_db(inner(one_shot))) < 0.05


def test_streaming_resampler_carries_timestamps_and_restarts_after_flush() -> None:
    r = Resampler(48000, 16000)
    t0 = 100.0
    x = float_to_int16(sine(500, 48000, 0.2))
    produced = 0
    for i in range(10):
        block = AudioFrame.from_int16(x[i * 960 : (i + 1) * 960], 48000, t0 + i * 0.02)
        out = r.push(block)
        if out.num_samples:
            assert out.timestamp == pytest.approx(t0 + produced / 16000, abs=1e-9)
        produced += out.num_samples
    tail = r.flush()
    assert tail.timestamp == pytest.approx(t0 + produced / 16000, abs=1e-9)
    assert produced + tail.num_samples == 3200
    again = AudioFrame.concat(
        [r.push(AudioFrame.from_int16(x, 48000, 5.0)), r.flush()]
    )  # a fresh stream after flush
    assert again.num_samples == 3200 and again.timestamp == pytest.approx(5.0)
    same = Resampler(16000, 16000)
    f = AudioFrame.silence(0.01, 16000)
    assert same.push(f) is f and same.flush().num_samples == 0
    with pytest.raises(AudioFormatError, match="expects 16000"):
        same.push(AudioFrame.silence(0.01, 8000))


def test_frame_assembler_regroups_and_pads() -> None:
    asm = FrameAssembler(16000, 320)
    x = np.arange(1000, dtype=np.int16)
    out = asm.push(AudioFrame.from_int16(x[:100], 16000, 10.0))
    out += asm.push(AudioFrame.from_int16(x[100:], 16000, 10.0 + 100 / 16000))
    out += asm.flush()
    assert [f.num_samples for f in out] == [320, 320, 320, 320]
    assert np.concatenate([f.samples for f in out])[:1000].tolist() == x.tolist()
    assert out[-1].samples[1000 - 960 :].tolist() == [0] * 280
    assert [f.timestamp for f in out] == pytest.approx([10.0, 10.02, 10.04, 10.06])



def test_decimator_gives_each_chunk_its_output_at_once_and_filters_aliases() -> None:
    """48 -> 16 kHz for live room audio: 160 samples out for every 10 ms in (no bursts),
    chunking does not change the result, speech frequencies pass and what would fold
    back below 8 kHz is removed."""
    dec = Decimator(48_000, 16_000)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3000, 48_000).astype(np.int16)
    chunks = [dec.push(x[i : i + 480]) for i in range(0, len(x), 480)]
    assert {len(c) for c in chunks} == {160}
    dec.reset()
    whole = dec.push(x)
    dec.reset()
    odd = np.concatenate([dec.push(x[i : i + 7]) for i in range(0, len(x), 7)])
    assert np.array_equal(np.concatenate(chunks), whole) and np.array_equal(odd, whole)
    t = np.arange(48_000) / 48_000

    def gain_db(freq: float) -> float:
        dec.reset()
        y = dec.push((10_000 * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.int16))[500:].astype(np.float64)
        return float(20 * np.log10(np.sqrt(np.mean(y * y)) / (10_000 / np.sqrt(2)) + 1e-12))

    assert all(abs(gain_db(f)) < 0.1 for f in (300.0, 1000.0, 3000.0, 6000.0))
    assert all(gain_db(f) < -60 for f in (8300.0, 9100.0, 12345.0, 19999.0))
    with pytest.raises(AudioFormatError):
        Decimator(48_000, 22_050)
    dec.reset()  # frames: each output stamped with the input instant its first sample stands for
    frames = [dec.push_frame(AudioFrame.from_int16(x[i : i + 960], 48_000, 5.0 + i / 48_000))
              for i in range(0, 9600, 960)]
    assert [f.num_samples for f in frames] == [320] * 10
    assert [f.timestamp for f in frames] == pytest.approx([5.0 - 60 / 48_000 + k * 0.02 for k in range(10)])


# -- files out and in ------------------------------------------------------------------


def test_write_wav_round_trip_is_exact_and_atomic(tmp_path: Path) -> None:
    frame = AudioFrame.from_int16(float_to_int16(sine(440, 22050, 0.3)), 22050)
    path = tmp_path / "out.wav"
    write_wav(path, frame)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    assert read_wav(path).samples.tolist() == frame.samples.tolist()
    assert names_in(tmp_path) == ["out.wav"]
    with pytest.raises(AudioError, match="cannot write"):
        write_wav(tmp_path / "no-such-dir" / "x.wav", frame)


async def test_wav_file_output_resamples_and_appears_only_at_close(tmp_path: Path) -> None:
    path = tmp_path / "said.wav"
    out = WavFileOutput(path, 16000)
    x = float_to_int16(sine(1000, 22050, 1.0, 0.5))
    started: list[float] = []
    out.on_frame_started = lambda frame, t: started.append(t)
    for i in range(0, len(x), 441):
        await asyncio.wait_for(out.write(AudioFrame.from_int16(x[i : i + 441], 22050)), 5)
    await asyncio.wait_for(out.drain(), 5)
    assert not path.exists(), "the final name must appear only at aclose"
    await asyncio.wait_for(out.aclose(), 5)
    await asyncio.wait_for(out.aclose(), 5)  # safe twice
    assert names_in(tmp_path) == ["said.wav"]
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    got = read_wav(path)
    assert abs(got.num_samples - 16000) <= 1
    assert abs(peak_hz(got) - 1000) < 2
    assert abs(rms_db(inner(got)) - rms_db(sine(1000, 16000, 1.0, 0.5))) < 0.5
    assert out.counters.frames == len(started) == 50
    with pytest.raises(AudioError, match="closed"):
        await asyncio.wait_for(out.write(AudioFrame.silence(0.01, 16000)), 5)


async def test_realtime_wav_output_paces_and_clear_drops_queued_audio(tmp_path: Path) -> None:
    path = tmp_path / "rt.wav"
    out = WavFileOutput(path, 16000, realtime=True, buffer_ms=40, block_ms=10)
    tone = AudioFrame.from_int16(float_to_int16(sine(500, 16000, 0.3, 0.5)), 16000)
    t0 = time.monotonic()
    for f in tone.chunks(320):
        await asyncio.wait_for(out.write(f), 5)
    elapsed = time.monotonic() - t0
    # write() waits once the 40 ms buffer is full: 0.3 s of audio takes about 0.26 s.
    assert 0.2 < elapsed < 0.6, elapsed
    assert out.last_written_time is not None and out.last_written_time >= t0
    await asyncio.wait_for(out.drain(), 5)
    played_before_clear = out.samples_written
    # Queue one second, let 0.1 s play, then barge in.
    long = AudioFrame.from_int16(float_to_int16(sine(500, 16000, 1.0, 0.5)), 16000)
    writer = asyncio.create_task(out.write(long))
    await asyncio.sleep(0.1)
    out.clear()
    await asyncio.wait_for(writer, 1)  # the cleared write returns at once
    await asyncio.wait_for(out.drain(), 1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(out.aclose(), 5)
    got = read_wav(path)
    # Everything of the first tone; of the long one only ~0.1 s (+ buffer), then silence.
    assert got.num_samples >= played_before_clear
    loud = np.flatnonzero(np.abs(got.samples[played_before_clear:].astype(int)) > 1000)
    assert loud.size > 0
    assert (loud[-1] - loud[0]) / 16000 < 0.3
    assert out.counters.underruns == 0


async def test_wav_file_input_fast_and_realtime(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    x = sine(440, 44100, 0.5, 0.5)
    sf.write(path, np.stack([x, x], 1), 44100, subtype="PCM_24")
    fast = WavFileInput(path, rate=16000, frame_ms=20, realtime=False)
    t0 = time.monotonic()
    frames = [f async for f in fast]
    assert time.monotonic() - t0 < 0.3
    assert len(frames) == 25 and {f.num_samples for f in frames} == {320}
    assert {f.sample_rate for f in frames} == {16000}
    ts = [f.timestamp or 0.0 for f in frames]
    assert np.allclose(np.diff(ts), 0.02)
    joined = AudioFrame.concat(frames)
    assert abs(peak_hz(joined) - 440) < 2
    assert fast.counters.frames == 25

    rt = WavFileInput(path, rate=16000, frame_ms=20, realtime=True)
    got: list[tuple[float, AudioFrame]] = []

    async def consume() -> None:
        async for f in rt:
            got.append((time.monotonic(), f))

    t0 = time.monotonic()
    await asyncio.wait_for(consume(), 5)
    assert len(got) == 25
    # Frame i is released once captured, at start + (i + 1) * 20 ms: no drift.
    lateness = [t - (t0 + (i + 1) * 0.02) for i, (t, _) in enumerate(got)]
    assert min(lateness) > -0.005
    assert max(lateness) < 0.05, lateness
    assert got[-1][0] - t0 == pytest.approx(0.5, abs=0.05)

    stop = WavFileInput(path, realtime=False)
    n = 0
    async for _ in stop:
        n += 1
        if n == 3:
            await stop.aclose()
    assert n == 3
