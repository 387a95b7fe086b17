"""Piper voices (piper-tts 1.8, onnxruntime): the default TTS.

The default voice is the packaged en_US-joe-medium (22.05 kHz), manifest name
``piper-en-us-joe``. Each clause is one Piper call (phonemize with espeak-ng,
then one ONNX run per sentence) on the stage's :class:`InferenceThread`;
audio comes out at the voice's own rate and is resampled only at the output.

Cancellation reaches into the ONNX run in flight: Piper's session is wrapped
so every run gets an onnxruntime ``RunOptions`` whose ``terminate`` flag is set
when the stream is closed; onnxruntime stops within a few ms (between graph
nodes), so the worker thread is free at once for the next reply.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import onnxruntime as ort
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from edgeagent.audio.frame import Int16Array
from edgeagent.errors import ConfigError, ModelError
from edgeagent.stage import InferenceThread
from edgeagent.tts.clauses import FIRST_CLAUSE_WORDS
from edgeagent.tts.streaming import CHUNK_MS, ClauseTTS

if TYPE_CHECKING:
    from edgeagent.config import Config

#: The manifest name of the default voice (edgeagent/data/manifest.toml).
DEFAULT_MODEL = "piper-en-us-joe"
_VOICE_HELP = "a Piper voice is NAME.onnx with NAME.onnx.json beside it (voices: the rhasspy/piper-voices collection)"


def resolve_model(model: str | Path | None) -> tuple[Path, str]:
    """The .onnx file of a voice given as a file, a directory, or None (the default),
    and the fix to print when it cannot load."""
    if model is None:
        from edgeagent.model_files.manifest import model_path  # lazy: only when the default is used

        path, fix = model_path(DEFAULT_MODEL), f"run: edgeagent models pull {DEFAULT_MODEL}"
    else:
        path, fix = Path(model).expanduser(), f"check the path; {_VOICE_HELP}"
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            what = "no .onnx file" if not found else f"{len(found)} .onnx files"
            raise ModelError(f"Piper voice directory {path} holds {what}; pass the file itself or {fix}")
        path = found[0]
    if not path.is_file():
        raise ModelError(f"Piper voice {path} does not exist; {fix}")
    return path, fix


def _load_voice(path: Path, fix: str, threads: int) -> PiperVoice:
    config_path = path.with_name(path.name + ".json")
    try:
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"Piper voice config {config_path} cannot be read ({exc}); {fix}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: the LLM writes the rest of the reply on the
    # same cores while a clause is voiced.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Each clause has a length of its own: a memory pattern planned for one input shape is kept
    # for each new one, and onnxruntime's arena, grown for the longest clause so far, is never
    # given back (with these defaults, 150 replies of a soak's log voiced one after the other took
    # a voice's RSS from 145 MB to 1.26 GB; with no pattern and the arena shrunk after each run, it
    # stayed at 207-217 MB). No pattern
    # here, and each run gives the arena back when it ends (run_options;
    # tests/test_tts.py::test_a_long_clause_leaves_the_memory_it_took).
    options.enable_mem_pattern = False
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"Piper voice {path} failed to load ({exc}); {fix}") from exc
    # PiperVoice.load() hides the session options, so build the voice ourselves.
    return PiperVoice(session=cast(ort.InferenceSession, _TerminableSession(session)), config=config)


class _TerminableSession:
    """Piper's view of the ONNX session: each run uses the current RunOptions,
    whose ``terminate`` flag the stream sets on cancellation."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.run_options: ort.RunOptions | None = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self.run_options)


def run_options() -> ort.RunOptions:
    """A clause's run: the arena gives back what the run took when it ends (see _load_voice)."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _next_audio(session: _TerminableSession, pieces: Iterator[Any], options: ort.RunOptions) -> Int16Array | None:
    """Runs on the inference thread: the next sentence's audio, or None at the end."""
    if options.terminate:
        return None
    session.run_options = options
    try:
        chunk = next(pieces, None)
    finally:
        session.run_options = None
    return None if chunk is None else chunk.audio_int16_array


class PiperTTS(ClauseTTS):
    """Piper voice, clause by clause.

    Options: ``model`` (a .onnx file or a directory holding one; default the
    packaged en_US-joe-medium), ``speaker`` (id or name, multi-speaker voices),
    ``speed`` (1.0: the voice's own; sets ``length_scale`` to 1 / speed),
    ``length_scale`` (> 1 slower, < 1 faster; default the voice's),
    ``volume`` (gain, 1.0 = peak-normalized), ``threads`` (onnxruntime
    intra-op threads; 2: a first clause in ~45 ms here, ~75 with 1),
    ``first_clause_words``, ``chunk_ms``, ``warmup`` (one short synthesis at load so
    the first reply is not slow).
    """

    provider = "piper"
    default_model = ("model", DEFAULT_MODEL)

    @classmethod
    def check_loadable(cls, cfg: Config) -> None:
        """``tts.model``, when set, is a voice file or a directory holding one (else the
        manifest's default voice is there)."""
        if cfg.tts.model:
            resolve_model(cfg.tts.model)  # not a voice file (or a directory holding one): ModelError
        else:
            super().check_loadable(cfg)

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        speaker: int | str | None = None,
        speed: float = 1.0,
        length_scale: float | None = None,
        volume: float = 1.0,
        threads: int = 2,
        first_clause_words: int = FIRST_CLAUSE_WORDS,
        chunk_ms: float = CHUNK_MS,
        warmup: bool = True,
    ) -> None:
        super().__init__(first_clause_words=first_clause_words, chunk_ms=chunk_ms)
        if threads < 1:
            raise ConfigError(f"piper threads must be >= 1, got {threads}")
        if length_scale is None and speed != 1.0:
            length_scale = _length_scale(speed)
        if length_scale is not None and not 0.1 <= length_scale <= 10:
            raise ConfigError(f"piper length_scale must be within 0.1..10, got {length_scale}")
        if not 0 <= volume <= 10:
            raise ConfigError(f"piper volume must be within 0..10, got {volume}")
        path, fix = resolve_model(model)
        self.model_path = path
        self._voice = _load_voice(path, fix, threads)
        self._syn = SynthesisConfig(
            speaker_id=self._speaker_id(speaker), length_scale=length_scale, volume=volume
        )
        self._thread = InferenceThread("tts-piper")
        if warmup:
            for _ in self._voice.synthesize("Hello.", self._syn):
                pass

    def _speaker_id(self, speaker: int | str | None) -> int | None:
        config = self._voice.config
        if speaker is None:
            return None
        if isinstance(speaker, str):
            if speaker not in config.speaker_id_map:
                known = ", ".join(sorted(config.speaker_id_map)) or "none (single-speaker voice)"
                raise ConfigError(f"Piper voice {self.model_path.name} has no speaker {speaker!r}; known: {known}")
            return int(config.speaker_id_map[speaker])
        if not 0 <= speaker < max(1, config.num_speakers):
            raise ConfigError(
                f"Piper voice {self.model_path.name} has {config.num_speakers} speaker(s); got id {speaker}"
            )
        return speaker

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def speed_change(self, speed: float) -> Callable[[], None]:
        new = dataclasses.replace(self._syn, length_scale=None if speed == 1.0 else _length_scale(speed))
        return lambda: setattr(self, "_syn", new)

    async def _clause_audio(self, text: str) -> AsyncGenerator[Int16Array, None]:
        pieces = iter(self._voice.synthesize(text, self._syn))  # lazy: all work on the thread
        session = cast(_TerminableSession, self._voice.session)
        options = run_options()
        try:
            while (audio := await self._thread.run(_next_audio, session, pieces, options)) is not None:
                if len(audio):
                    yield audio
        finally:
            options.terminate = True  # cancelled: abort the ONNX run still in flight

    async def clause_cpu_s(self, text: str) -> float:
        """CPU seconds the voice's thread spends synthesising ``text`` (scripts/bench-stages)."""
        return await self._thread.run(self._clause_cpu_s, text)

    def _clause_cpu_s(self, text: str) -> float:
        t0 = time.thread_time()
        for _ in self._voice.synthesize(text, self._syn):
            pass
        return time.thread_time() - t0

    async def aclose(self) -> None:
        self._thread.shutdown()


def _length_scale(speed: float) -> float:
    if speed <= 0:
        raise ConfigError(f"piper speed must be above 0, got {speed}")
    return 1.0 / speed
