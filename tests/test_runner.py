"""``edgeagent run`` for real, as a subprocess: WAV in and out, bad input, and the no-device fallback.

The fallback test needs a machine where PortAudio finds no sound device. What gives
that here: PulseAudio pointed at a socket that does not exist (``PULSE_SERVER``) with
autospawn off (``PULSE_CLIENTCONFIG``), so ALSA's ``pulse``/``default`` PCMs do not
open, and no ALSA sound card. CI containers have no ``/dev/snd``; where there is one,
the command runs in a private mount namespace with an empty tmpfs over ``/dev/snd``
(``unshare``). An empty ``ALSA_CONFIG_PATH`` is no way to do it: PortAudio aborts.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import PulseDevices
from nosound import no_sound_card, no_sound_env
from speech import espeak, piper, save, with_silence

from edgeagent import registry
from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.wav import read_wav
from edgeagent.config import Config, load
from edgeagent.local_job import SAMPLE_QUESTION
from edgeagent.stt.base import STT
from edgeagent.voice.stages import stage_specs, tts_options
from edgeagent.wake.base import WakeEvent, WakeWord

RATE = 16_000
RUN_TIMEOUT_S = 300
METRICS = re.compile(r"^metrics: turn=\w+ end_of_utterance_delay_ms=\d+ .*e2e_latency_ms=(\d+) ", re.M)


NUMBERS = {w: str(i) for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}


def words(text: str) -> set[str]:
    """The words of ``text``, a number word as its digits: Whisper writes "8" for a voice's
    "eight" ("A spider has eight legs." came back as "Spider as 8 legs.")."""
    return {NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def lines(self, prefix: str) -> list[str]:
        return [ln[len(prefix):].strip() for ln in self.out.splitlines() if ln.startswith(prefix)]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a config file or EDGEAGENT__ overrides: the defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    return {**env, "EDGEAGENT_CONFIG": os.devnull, **extra}


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Run:
    proc = subprocess.run([*prefix, sys.executable, "-m", "edgeagent", "run", *args], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, cwd=cwd, env=env or clean_env())
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def whisper() -> Iterator[STT]:
    stt: STT = registry.create("stt", "whisper", partials=False)
    yield stt
    asyncio.run(asyncio.wait_for(stt.aclose(), 30))


def spoken(path: Path) -> tuple[AudioFrame, float]:
    """The reply WAV at 16 kHz, and how many seconds of it are audible (20 ms blocks over -45 dBFS)."""
    audio = read_wav(path, RATE)
    blocks = audio.samples[: len(audio.samples) // 320 * 320].reshape(-1, 320).astype(np.float64)
    rms = np.sqrt((blocks**2).mean(axis=1)) / 32768
    return audio, float((rms > 10 ** (-45 / 20)).sum() * 0.02)


def assert_reply(result: Run, reply: Path, whisper: STT) -> None:
    assert result.code == 0, result.out + result.err
    agent = result.lines("agent:")
    assert len(agent) == 1 and agent[0], result.out
    assert METRICS.search(result.out), result.out
    assert f"edgeagent: reply written to {reply}" in result.out
    audio, loud_s = spoken(reply)
    assert loud_s > 0.5, f"only {loud_s:.2f} s of audible speech in {reply}"
    heard = asyncio.run(asyncio.wait_for(whisper.recognize(audio), 60)).text
    common = words(heard) & words(agent[0])
    assert len(common) >= min(3, len(words(agent[0]))), f"said {agent[0]!r}, the reply WAV says {heard!r}"


def test_wav_in_wav_out_with_the_wake_word(tmp_path: Path, whisper: STT) -> None:
    """Real-time pace, wake mode (the default config): transcript, reply, metrics, the reply WAV."""
    question = AudioFrame.concat([piper("Hey Jarvis."), AudioFrame.silence(0.5, RATE),
                                  piper("How many legs does a spider have?")])
    q = save(with_silence(question, 0.5, 0.5), tmp_path / "q.wav")
    reply = tmp_path / "r.wav"
    result = run("--input", str(q), "--output", str(reply))
    assert {"legs", "spider"} <= words(" ".join(result.lines("user:"))), result.out + result.err
    assert_reply(result, reply, whisper)
    e2e = METRICS.search(result.out)
    assert e2e is not None and 0 < int(e2e.group(1)) < 10_000, result.out  # real time: a real latency
    # Each turn once: the transcript on stdout, the log on stderr without repeating it.
    assert len(result.lines("user:")) == 1 and len(result.lines("metrics:")) == 1, result.out
    assert "state: thinking" in result.err, result.err  # the log is there, at info
    assert not [ln for ln in result.err.splitlines() if " user: " in ln or " agent: " in ln
                or "turn metrics" in ln], result.err


def test_fast_input_without_wake_word_in_always_mode(tmp_path: Path, whisper: STT) -> None:
    q = save(with_silence(espeak("What is the capital of France?"), 0.5, 0.5), tmp_path / "q.wav")
    reply = tmp_path / "r.wav"
    result = run("--input", str(q), "--output", str(reply), "--fast", "--set", "activation.mode=always",
                 "--set", "tts.provider=espeak")
    assert {"capital", "france"} <= words(" ".join(result.lines("user:"))), result.out + result.err
    assert_reply(result, reply, whisper)


def test_no_wake_word_no_answer_and_a_hint(tmp_path: Path) -> None:
    q = save(with_silence(espeak("What is the capital of France?"), 0.5, 0.5), tmp_path / "q.wav")
    result = run("--input", str(q), "--output", str(tmp_path / "r.wav"), "--fast")
    assert result.code == 0, result.out + result.err
    assert not result.lines("user:") and not result.lines("agent:"), result.out
    assert f"edgeagent: heard no question in {q} (activation.mode is wake" in result.err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.wav", None, "cannot read audio from {path}: no such file"),
        ("text.wav", b"not audio at all", "cannot read audio from {path}: not an audio file"),
        ("empty.wav", b"", "cannot read audio from {path}: the file is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run("--input", str(path), "--output", str(tmp_path / "r.wav"))
    assert result.code == 1, result.out + result.err
    assert result.out == "", result.out
    assert result.err.splitlines() == [result.err.strip()], result.err  # one line, on stderr
    assert result.err.startswith("edgeagent: " + message.format(path=path)), result.err
    assert not (tmp_path / "r.wav").exists()


def test_timeout_is_how_long_the_agent_may_take_after_the_input(tmp_path: Path) -> None:
    """--timeout (default 180 s, a slow board or emulation may need more): past it, exit 1 and why."""
    result = run("--input", str(SAMPLE_QUESTION), "--output", str(tmp_path / "r.wav"), "--fast", "--timeout", "0.05")
    assert result.code == 1, result.out + result.err
    assert "edgeagent: the agent did not finish within 0 s (--timeout 0.05 after the input" in result.err, result.err


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_timeout_must_be_a_positive_number_of_seconds(value: str) -> None:
    result = run("--input", str(SAMPLE_QUESTION), "--timeout", value)
    assert result.code == 2, result.out + result.err
    assert "argument --timeout: " in result.err and value in result.err, result.err


def test_unwritable_output_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run("--input", str(SAMPLE_QUESTION), "--output", str(tmp_path / "no" / "r.wav"))
    assert result.code == 1, result.out + result.err
    assert result.out == ""
    assert result.err == f"edgeagent: cannot write {tmp_path / 'no' / 'r.wav'}: no such directory {tmp_path / 'no'}\n"


def test_no_sound_device_answers_the_sample_question(tmp_path: Path, whisper: STT) -> None:
    env = clean_env(**no_sound_env(tmp_path))
    devices = subprocess.run([*no_sound_card(), sys.executable, "-m", "edgeagent", "devices", "--json"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert devices.returncode == 0 and '"input": []' in devices.stdout and '"output": []' in devices.stdout, (
        devices.stdout + devices.stderr)
    work = tmp_path / "work"
    work.mkdir()
    result = run(cwd=work, env=env, prefix=no_sound_card())
    reply = work / "edgeagent-reply.wav"
    first = result.out.splitlines()[0] if result.out else ""
    assert first == (f"edgeagent: no audio device found; answering the bundled sample question instead "
                     f"({SAMPLE_QUESTION}) -> {reply}"), result.out + result.err
    assert {"capital", "france"} <= words(" ".join(result.lines("user:"))), result.out + result.err
    assert_reply(result, reply, whisper)


def test_a_named_device_that_is_missing_is_an_error_not_the_fallback(tmp_path: Path) -> None:
    result = run("--check", "--input-device", "no-such-mic")
    assert result.code == 1, result.out + result.err
    assert "microphone: " in result.err and "no-such-mic" in result.err, result.out + result.err
    assert result.out.startswith("edgeagent: board: "), result.out  # named first, whatever else fails
    result = run("--input-device", "no-such-mic", cwd=tmp_path)
    assert result.code == 1, result.out + result.err
    assert "no-such-mic" in result.err and "sample question" not in result.out, result.out + result.err
    assert not (tmp_path / "edgeagent-reply.wav").exists()


@pytest.mark.pulse
def test_run_on_the_sound_devices_answers_and_stops_on_sigterm(pulse: PulseDevices) -> None:
    """The README's command on PulseAudio's null sinks (--input-device/--output-device chosen by name):
    the sample question played into the virtual mic gets an answer; SIGTERM ends it with 0."""
    out = asyncio.run(asyncio.wait_for(talk_on_devices(pulse), 240))
    assert {"capital", "france"} <= words(" ".join(Run(0, out, "").lines("user:"))), out
    assert Run(0, out, "").lines("agent:"), out
    assert METRICS.search(out) and "stopping" in out, out


async def talk_on_devices(pulse: PulseDevices) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "run", "--input-device", "pulse", "--output-device", "pulse",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=clean_env(),
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def until(text: str, timeout: float) -> None:
        async def read() -> None:
            assert proc.stdout is not None
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if text in line:
                    return
            raise AssertionError(f"edgeagent run exited before {text!r}:\n{''.join(lines)}")
        try:
            await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(lines)}") from None

    try:
        await until('listening; say "hey jarvis"', 180)
        player = await asyncio.create_subprocess_exec("paplay", f"--device={pulse.mic_sink}", str(SAMPLE_QUESTION))
        assert await asyncio.wait_for(player.wait(), 30) == 0
        await until("metrics: ", 60)
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, "".join(lines) + rest.decode()
        return "".join(lines) + rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


def test_the_sample_question_is_16k_mono_and_says_the_wake_word() -> None:
    info = sf.info(str(SAMPLE_QUESTION))
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
    assert 2.0 < info.duration < 8.0

    async def wake_events() -> list[WakeEvent]:
        wake: WakeWord = registry.create("wake", "openwakeword", words=("hey_jarvis",))
        stream = wake.stream()
        try:
            for frame in read_wav(SAMPLE_QUESTION).chunks(320):
                stream.push(frame)
            stream.end_input()
            return [ev async for ev in stream]
        finally:
            await stream.aclose()
            await wake.aclose()

    events = asyncio.run(asyncio.wait_for(wake_events(), 60))
    assert [ev.word for ev in events] == ["hey_jarvis"], events
    assert events[0].timestamp < 2.0, events  # "Hey Jarvis." comes first


# -- the stages from the config (no models loaded) --------------------------------------


def test_stage_options_follow_the_config(tmp_path: Path) -> None:
    specs = {kind: (name, opts) for kind, name, opts in stage_specs(Config())}
    assert specs["vad"] == ("silero", {"activation_threshold": 0.5})
    assert specs["wake"] == ("openwakeword", {"words": ("hey_jarvis",), "threshold": 0.1})
    assert specs["stt"] == ("whisper", {"partials": True})
    assert specs["llm"] == ("llama", {"temperature": 0.2, "max_tokens": 120})
    assert specs["tts"] == ("piper", {})

    cfg = load(None, env={}, overrides=[
        "activation.mode=always", "activation.wake_words=", "stt.provider=vosk", "stt.model=/m/vosk",
        "llm.model=/m/q.gguf", "llm.max_tokens=50", "llm.gpu_layers=-1", "tts.speed=2",
        "vad.activation_threshold=0.7",
    ])
    specs = {kind: (name, opts) for kind, name, opts in stage_specs(cfg)}
    assert specs["vad"] == ("silero", {"activation_threshold": 0.7})
    assert specs["wake"][1]["words"] == ("hey_jarvis",)  # loaded anyway; wake_for() hands the session None
    assert specs["stt"] == ("vosk", {"model": "/m/vosk"})
    assert specs["llm"] == ("llama", {"temperature": 0.2, "max_tokens": 50, "model_path": "/m/q.gguf",
                                      "n_gpu_layers": -1})
    assert specs["tts"] == ("piper", {"speed": 2.0})


@pytest.mark.parametrize(("speed", "wpm"), [(1.0, 160), (1.5, 240), (0.25, 80), (4.0, 450)])
def test_espeak_speed_is_words_per_minute(speed: float, wpm: int) -> None:
    from edgeagent.registry import create

    cfg = load(None, env={}, overrides=["tts.provider=espeak", f"tts.speed={speed}", "tts.model=en-gb"])
    voice = create("tts", "espeak", **tts_options(cfg))
    argv = voice._argv
    assert (argv[argv.index("-v") + 1], argv[argv.index("-s") + 1]) == ("en-gb", str(wpm))


def test_models_dir_is_where_the_stages_load_from(tmp_path: Path) -> None:
    cfg = load(None, env={}, overrides=[f"models.dir={tmp_path}", "tts.model=/voices/x.onnx"])
    specs = {kind: opts for kind, _, opts in stage_specs(cfg)}
    names = {kind: getattr(opts.get(key), "name", None) for kind, key in
             (("vad", "model_path"), ("wake", "model_dir"), ("stt", "model"), ("llm", "model_path"))
             for opts in [specs[kind]]}
    assert names == {"vad": "silero-vad", "wake": "openwakeword", "stt": "whisper-tiny-en", "llm": "smollm2-135m"}
    assert specs["tts"] == {"model": "/voices/x.onnx"}  # an explicit model wins
