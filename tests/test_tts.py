"""TTS: the clause splitter, and the Piper and espeak-ng voices with their real models."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeagent.errors import ConfigError, ModelError
from edgeagent.metrics import TTSMetrics
from edgeagent.registry import create
from edgeagent.tts.base import SynthesizedAudio
from edgeagent.tts.clauses import ClauseSplitter, speakable
from edgeagent.tts.espeak import EspeakTTS, parse_wav_header
from edgeagent.tts.piper import PiperTTS
from edgeagent.tts.streaming import ONSET_DBFS, ONSET_LEAD_S, ClauseStream, ClauseTTS, TTSError

SENTENCE = "The weather today is sunny with a light breeze from the west."
LONG_REPLY = (
    "Sure, I can help with that. The weather today is sunny with a light breeze from the west, "
    "and the temperature will reach about twenty degrees by the afternoon. Tomorrow looks cloudier; "
    "there is a chance of rain in the evening, so take an umbrella if you go out. "
    "The weekend should be dry and warm again, which is good news for the garden party."
)

# -- the clause splitter (pure) ----------------------------------------------------


def split(text: str, by_char: bool = False, **options: int) -> list[str]:
    s = ClauseSplitter(**options)
    out: list[str] = []
    for piece in text if by_char else [text]:
        out += s.push(piece)
    return out + s.flush()


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Hi. Pi is 3.14 and 1,000 is more. Next.", ["Hi.", "Pi is 3.14 and 1,000 is more.", "Next."]),
        ("So. Dr. Smith met Mr. Jones e.g. at noon. Bye.", ["So.", "Dr. Smith met Mr. Jones e.g. at noon.", "Bye."]),
        ("J. R. R. Tolkien wrote it. The U.S. is large.", ["J. R. R. Tolkien wrote it.", "The U.S. is large."]),
        ("Sure, I can do that.", ["Sure,", "I can do that."]),
        # after the first clause a comma needs a few words
        ("Yes. Red, green, blue and yellow are colours.", ["Yes.", "Red, green, blue and yellow are colours."]),
        ("Hi. One two three four, five six.", ["Hi.", "One two three four,", "five six."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
        ("Items:\n- one\n- two", ["Items:", "- one", "- two"]),
        ("It is **very** `important` # yes", ["It is very important yes"]),
        ("Well—maybe not; at 10:30 we go.", ["Well—", "maybe not; at 10:30 we go."]),
    ],
)
def test_splitter_boundaries(text: str, clauses: list[str]) -> None:
    # Punctuation, not the word limit, is under test here: a first clause of up to 6 words.
    assert split(text, first_words=6) == clauses
    assert split(text, by_char=True, first_words=6) == clauses  # token size does not matter


def test_splitter_first_clause_is_short_and_cut_at_a_natural_break() -> None:
    assert split(SENTENCE) == ["The weather", "today is sunny with a light breeze from the west."]
    assert split(SENTENCE, first_words=3) == ["The weather today", "is sunny with a light breeze from the west."]
    assert split("Please remember that the meeting starts at nine tomorrow") == [
        "Please remember",  # cut before "that", not after "meeting"
        "that the meeting starts at nine tomorrow",
    ]
    assert split(SENTENCE, first_words=5) == ["The weather today is sunny", "with a light breeze from the west."]


def test_splitter_caps_clauses_without_spaces() -> None:
    """A rambling model ("7,987,987,...") gives no word to cut at: clauses stay bounded."""
    sp = ClauseSplitter(max_chars=100, first_words=3)  # the first clause ends inside the number
    out = sp.push("There are 7,")
    for _ in range(100):
        out += sp.push("987,")
    out += sp.flush()
    assert len(out) >= 4 and max(len(c) for c in out) <= 100, [len(c) for c in out]
    assert "".join(out) == "There are 7," + "987," * 100
    with pytest.raises(ValueError, match="max_chars"):
        ClauseSplitter(max_chars=5)


def test_splitter_word_limit_grows_per_clause() -> None:
    words = ["w"] * 100
    clauses = split(" ".join(words) + ".")
    assert [len(c.split()) for c in clauses] == [2, 10, 20, 30, 30, 8]
    assert " ".join(clauses) == " ".join(words) + "."


def test_splitter_waits_for_whitespace_after_a_period() -> None:
    s = ClauseSplitter(first_words=5)
    assert s.push("It costs 3.") == []  # could still become 3.50
    assert s.push("50 dollars. ") == ["It costs 3.50 dollars."]
    assert s.push("Bye.") == []
    assert s.flush() == ["Bye."]
    assert s.flush() == []


def test_splitter_nothing_to_say() -> None:
    for text in ["", "   ", "...", "?! -- ,", "\n\n", "**"]:
        assert split(text) == [], text
    assert speakable("  a \n b ") == "a b"
    assert speakable("—") == ""


def test_splitter_resets_per_segment() -> None:
    s = ClauseSplitter()
    assert s.push("Okay, fine then, ") == ["Okay,"]  # later clauses need more words
    assert s.flush() == ["fine then,"]
    # a new segment starts with the short first-clause rules again
    assert s.push("Right, ") == ["Right,"]


def test_splitter_long_text_is_fast() -> None:
    text = ("This is a fairly long sentence, with a comma and some words. " * 500) + ("word " * 5000)
    t0 = time.perf_counter()
    clauses = split(text)
    assert time.perf_counter() - t0 < 5.0
    assert " ".join(clauses).split() == text.split()


def test_splitter_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ClauseSplitter(first_words=0)
    with pytest.raises(ValueError):
        ClauseSplitter(first_words=10, max_words=5)


def test_parse_wav_header() -> None:
    fmt = b"\x01\x00\x01\x00\x22\x56\x00\x00D\xac\x00\x00\x02\x00\x10\x00"  # PCM, mono, 22050 Hz, 16 bit
    header = b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00" + fmt
    assert parse_wav_header(header[:20]) is None
    assert parse_wav_header(header + b"data\xff\xff\xff\x7f") == (22050, 44)
    with pytest.raises(TTSError):
        parse_wav_header(b"not a wav file at all")


# -- the voices (real models) ------------------------------------------------------


@pytest.fixture(scope="module")
def piper_tts() -> Iterator[PiperTTS]:
    tts = PiperTTS()
    yield tts
    asyncio.run(tts.aclose())


@pytest.fixture(scope="module")
def espeak_tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.fixture(params=["piper", "espeak"])
def tts(request: pytest.FixtureRequest) -> ClauseTTS:
    voice: ClauseTTS = request.getfixturevalue(f"{request.param}_tts")
    return voice


async def collect(stream: ClauseStream, timeout: float = 60.0) -> list[SynthesizedAudio]:
    async def run() -> list[SynthesizedAudio]:
        return [chunk async for chunk in stream]

    return await asyncio.wait_for(run(), timeout)


def tokens(text: str) -> list[str]:
    """Text cut like an LLM streams it: words with their leading space, punctuation apart."""
    return re.findall(r"\s*\w+|\s*[^\w\s]", text)


def audio_of(chunks: list[SynthesizedAudio]) -> np.ndarray:
    return np.concatenate([c.frame.samples for c in chunks])


async def test_sentence_has_plausible_duration_rate_and_level(tts: ClauseTTS) -> None:
    frame = await asyncio.wait_for(tts.synthesize(SENTENCE), 60)
    words = len(SENTENCE.split())
    assert frame.sample_rate == tts.sample_rate == 22050
    assert 0.2 * words <= frame.duration <= 0.8 * words, frame
    assert frame.rms_dbfs() > -35.0
    assert int(np.abs(frame.samples.astype(np.int32)).max()) > 3000


async def test_first_clause_is_spoken_while_text_is_still_coming(tts: ClauseTTS) -> None:
    stream = tts.stream()
    try:
        head, rest = "Sure, I can help", LONG_REPLY.removeprefix("Sure, I can help")
        for tok in tokens(head):
            stream.push(tok)
        # Nothing more is pushed until audio arrives: the first clause must be spoken on its own.
        first = await asyncio.wait_for(anext(stream), 30)
        assert first.text == "Sure,"
        assert first.frame.num_samples > 0 and not first.is_final
        for tok in tokens(rest):
            stream.push(tok)
            await asyncio.sleep(0)
        stream.flush()
        stream.end_input()
        chunks = [first, *await collect(stream)]
    finally:
        await stream.aclose()
    spoken: list[str] = []
    for c in chunks:
        if not spoken or spoken[-1] != c.text:
            spoken.append(c.text)
    assert " ".join(spoken).split() == LONG_REPLY.split()  # every word, in order, once
    assert len(spoken) >= 6
    assert chunks[-1].is_final and not any(c.is_final for c in chunks[:-1])
    duration = len(audio_of(chunks)) / tts.sample_rate
    assert 0.2 * len(LONG_REPLY.split()) <= duration <= 0.8 * len(LONG_REPLY.split())


async def test_a_reply_starts_at_its_first_sound(piper_tts: PiperTTS) -> None:
    """Piper begins a clause with 25-60 ms below -60 dBFS: a reply's first audio starts 5 ms
    before its first louder sample."""
    level = 32768 * 10 ** (ONSET_DBFS / 20)
    lone = await asyncio.wait_for(piper_tts.synthesize("Hamlet is a"), 60)  # one clause: its onset trimmed
    raw = np.concatenate([a async for a in piper_tts._clause_audio("Hamlet is a")])
    raw_onset = int(np.flatnonzero(np.abs(raw.astype(np.int32)) > level)[0])
    assert raw_onset / piper_tts.sample_rate > 0.02, "Piper's lead-in is gone: nothing to trim"
    onset = int(np.flatnonzero(np.abs(lone.samples.astype(np.int32)) > level)[0])
    assert onset == round(ONSET_LEAD_S * piper_tts.sample_rate)  # (Piper's noise: no two runs alike)


async def test_segments_have_ids_final_chunks_and_small_chunks(tts: ClauseTTS) -> None:
    metrics: list[object] = []
    tts.on_metrics(metrics.append)
    stream = tts.stream()
    try:
        for tok in tokens("Hello there, how are you today? I am fine."):
            stream.push(tok)
        stream.flush()
        stream.flush()  # an empty segment: one empty final chunk
        stream.push("Goodbye now.")
        stream.end_input()  # ends the pending segment too
        chunks = await collect(stream)
    finally:
        await stream.aclose()
        tts._metric_listeners.remove(metrics.append)
    ids = list(dict.fromkeys(c.segment_id for c in chunks))
    assert len(ids) == 3
    for seg in ids:
        seg_chunks = [c for c in chunks if c.segment_id == seg]
        assert [c.is_final for c in seg_chunks] == [False] * (len(seg_chunks) - 1) + [True]
    empty = [c for c in chunks if c.segment_id == ids[1]]
    assert len(empty) == 1 and empty[0].frame.num_samples == 0
    assert all(c.frame.sample_rate == tts.sample_rate for c in chunks)
    assert max(c.frame.duration for c in chunks) <= 0.16
    assert next(c.text for c in chunks if c.segment_id == ids[2]) == "Goodbye now."
    reports = [m for m in metrics if isinstance(m, TTSMetrics)]
    assert len(reports) == 2  # the empty segment reports nothing
    for m in reports:
        assert m.provider == tts.provider and not m.cancelled
        assert 0 < m.ttfa_s <= m.processing_s + 1.0
        assert m.audio_s > 0.3 and 0 < m.rtf < 1.0


async def test_cancel_mid_sentence_stops_within_100_ms(tts: ClauseTTS) -> None:
    metrics: list[object] = []
    tts.on_metrics(metrics.append)
    stream = tts.stream()
    try:
        stream.push(LONG_REPLY + " " + LONG_REPLY)
        stream.flush()
        first = await asyncio.wait_for(anext(stream), 30)
        assert first.frame.num_samples > 0
        await asyncio.sleep(0.02)  # let later clauses get under way
        t0 = time.perf_counter()
        await asyncio.wait_for(stream.aclose(), 5)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.1, f"aclose took {elapsed * 1000:.0f} ms"
        assert await collect(stream, 5) == []  # nothing queued or new comes out
        await asyncio.sleep(0.3)
        assert await collect(stream, 5) == []
    finally:
        tts._metric_listeners.remove(metrics.append)
    cancelled = [m for m in metrics if isinstance(m, TTSMetrics)]
    assert len(cancelled) == 1 and cancelled[0].cancelled
    # the voice is still usable at once
    frame = await asyncio.wait_for(tts.synthesize("Still here."), 30)
    assert frame.duration > 0.3


async def test_piper_cancel_stops_the_onnx_run_in_flight(piper_tts: PiperTTS) -> None:
    text = " ".join(["the weather is sunny and bright"] * 6)  # 36 words: one long ONNX run
    task = asyncio.create_task(piper_tts.synthesize(text))
    await asyncio.sleep(0.15)  # phonemized; the run is in flight (it takes seconds)
    assert not task.done()
    t0 = time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    # the worker thread is free again: the run was aborted, not waited for
    await asyncio.wait_for(piper_tts._thread.run(time.perf_counter), 5)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.1, f"the inference thread was busy {elapsed * 1000:.0f} ms after the cancel"


async def test_cancel_before_first_audio(tts: ClauseTTS) -> None:
    stream = tts.stream()
    stream.push("This clause is being synthesized right now while we cancel it. And more. ")
    await asyncio.sleep(0.005)  # synthesis has started
    t0 = time.perf_counter()
    await asyncio.wait_for(stream.aclose(), 5)
    assert time.perf_counter() - t0 < 0.1
    assert await collect(stream, 5) == []
    with pytest.raises(Exception, match="push after"):
        stream.push("more")


@pytest.mark.parametrize("text", ["", "   ", "...", "?!", "\n", "* * *"])
async def test_nothing_to_say_gives_no_audio(tts: ClauseTTS, text: str) -> None:
    frame = await asyncio.wait_for(tts.synthesize(text), 30)
    assert frame.num_samples == 0 and frame.sample_rate == tts.sample_rate
    stream = tts.stream()
    try:
        stream.push(text)
        stream.end_input()
        chunks = await collect(stream)
    finally:
        await stream.aclose()
    assert sum(c.frame.num_samples for c in chunks) == 0


async def test_long_text(tts: ClauseTTS) -> None:
    text = LONG_REPLY + " " + "and then it went on " * 15 + "until it ended."
    frame = await asyncio.wait_for(tts.synthesize(text), 120)
    words = len(text.split())
    assert 0.2 * words <= frame.duration <= 0.8 * words


async def test_speed_option() -> None:
    slow = await asyncio.wait_for(EspeakTTS(wpm=110).synthesize(SENTENCE), 30)
    fast = await asyncio.wait_for(EspeakTTS(wpm=260).synthesize(SENTENCE), 30)
    assert slow.duration > 1.5 * fast.duration


async def test_piper_options(piper_tts: PiperTTS) -> None:
    base = await asyncio.wait_for(piper_tts.synthesize(SENTENCE), 60)
    slow_quiet = PiperTTS(model=piper_tts.model_path, length_scale=1.6, volume=0.3, threads=2, warmup=False)
    try:
        other = await asyncio.wait_for(slow_quiet.synthesize(SENTENCE), 60)
    finally:
        await slow_quiet.aclose()
    assert other.duration > 1.3 * base.duration
    assert other.rms_dbfs() < base.rms_dbfs() - 6
    with pytest.raises(ConfigError, match="speaker"):
        PiperTTS(model=piper_tts.model_path, speaker="nobody", warmup=False)
    with pytest.raises(ConfigError):
        PiperTTS(model=piper_tts.model_path, length_scale=0, warmup=False)


def test_piper_bad_model_names_file_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=r"nope\.onnx"):
        PiperTTS(model=missing)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    (tmp_path / "broken.onnx.json").write_text('{"bad": 1}')
    with pytest.raises(ModelError, match=r"broken\.onnx\.json.*piper-voices"):
        PiperTTS(model=broken)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ModelError, match=r"no \.onnx file"):
        PiperTTS(model=empty_dir)


def test_espeak_errors() -> None:
    with pytest.raises(TTSError, match="apt-get install espeak-ng"):
        EspeakTTS(executable="/nonexistent/espeak-ng")
    with pytest.raises(ConfigError, match=r"does not exist|voices"):
        EspeakTTS(voice="nosuchvoice")
    with pytest.raises(ConfigError):
        EspeakTTS(wpm=5)


def test_registry_builds_the_voices() -> None:
    voice = create("tts", "espeak", wpm=180)
    assert isinstance(voice, EspeakTTS) and voice.sample_rate == 22050


# -- adding a voice: its module and one registry line --------------------------------------


class ToneTTS(ClauseTTS):
    """A whole provider as a user would add one: a beep per word, ``speed`` words per 0.2 s.
    It needs nothing outside its own class and one line in edgeagent.registry.PROVIDERS."""

    provider = "tone"

    def __init__(self, *, speed: float = 1.0, model: str | None = None) -> None:
        super().__init__()
        self.speed = speed
        self.model = model or "440"

    @property
    def sample_rate(self) -> int:
        return 16_000

    def speed_change(self, speed: float) -> Callable[[], None]:
        return lambda: setattr(self, "speed", speed)

    async def _clause_audio(self, text: str) -> AsyncGenerator[np.ndarray, None]:
        n = round(0.2 / self.speed * self.sample_rate)
        beep = (8000 * np.sin(2 * np.pi * float(self.model) * np.arange(n) / self.sample_rate)).astype(np.int16)
        for _ in text.split():
            yield beep


async def test_a_new_voice_needs_its_module_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeagent import registry
    from edgeagent.config import load
    from edgeagent.voice.stages import stage_specs

    monkeypatch.setitem(registry.PROVIDERS["tts"], "tone", ("test_tts:ToneTTS", ""))
    cfg = load(None, env={}, overrides=["tts.provider=tone", "tts.speed=2", "tts.model=880"])
    (kind, name, options), = [spec for spec in stage_specs(cfg) if spec[0] == "tts"]
    voice = create(kind, name, **options)
    assert type(voice).__name__ == "ToneTTS" and (voice.speed, voice.model) == (2.0, "880")
    audio = await asyncio.wait_for(voice.synthesize("one two three"), 10)
    assert audio.duration == pytest.approx(3 * 0.1, abs=0.01)
    voice.speed_change(1.0)()  # what a remote tts.speed does while it runs
    assert (await asyncio.wait_for(voice.synthesize("one"), 10)).duration == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ConfigError, match=re.escape("tts.provider: expected one of espeak, openai, piper, tone")):
        load(None, env={}, overrides=["tts.provider=beep"])


def test_every_voice_takes_speed_and_model(piper_tts: PiperTTS) -> None:
    espeak = EspeakTTS(model="en-gb", speed=1.5)
    assert espeak._argv[espeak._argv.index("-v") + 1] == "en-gb"
    assert espeak._argv[espeak._argv.index("-s") + 1] == "240"
    espeak.speed_change(4.0)()  # clamped to what espeak-ng takes
    assert espeak._argv[espeak._argv.index("-s") + 1] == "450"
    fast = PiperTTS(model=piper_tts.model_path, speed=2.0, warmup=False)
    assert fast._syn.length_scale == 0.5
    fast.speed_change(1.0)()
    assert fast._syn.length_scale is None


# A long clause, then RssAnon, in a process of its own: onnxruntime's arena grows to the longest
# input so far and keeps it unless the run shrinks it (edgeagent.tts.piper.run_options).
LONG_CLAUSE = textwrap.dedent("""
    import sys
    from edgeagent.tts import piper

    def anon_mb():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024

    path, fix = piper.resolve_model(None)
    voice = piper._load_voice(path, fix, 2)
    voice.session.run_options = piper.run_options() if sys.argv[1] == "shrink" else piper.ort.RunOptions()
    list(voice.synthesize("Hello there."))
    before = anon_mb()
    seconds = sum(len(c.audio_int16_bytes) for c in voice.synthesize(" ".join([
        "the quick brown fox jumps over the lazy dog and then it runs far away into the green hills"] * 4))) / 2 / 22050
    print(seconds, anon_mb() - before)
""")


def test_a_long_clause_leaves_the_memory_it_took() -> None:
    def grown_mb(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", LONG_CLAUSE, mode], capture_output=True, text=True,
                             timeout=120, check=True).stdout.split()
        assert float(out[0]) > 15, out  # the clause was spoken: ~20 s of audio in one run
        return float(out[1])

    kept, control = grown_mb("shrink"), grown_mb("keep")
    assert kept < 100, f"RssAnon grew {kept} MB after one long clause"
    assert control > 200, f"control (no shrink): RssAnon grew only {control} MB"
