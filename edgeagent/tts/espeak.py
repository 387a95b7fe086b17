"""espeak-ng: the fallback voice, robotic but tiny and always there.

Each clause is one ``espeak-ng --stdout`` process (the Debian package; text on
stdin, so text that starts with "-" is never read as an option). Its WAV
output is read as it arrives; aclose() kills the process. The native rate
(22050 Hz) is read from the WAV header of a probe at start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
import subprocess
from collections.abc import AsyncGenerator, Callable

import numpy as np

from edgeagent.audio.frame import Int16Array
from edgeagent.errors import ConfigError
from edgeagent.tts.clauses import FIRST_CLAUSE_WORDS
from edgeagent.tts.streaming import CHUNK_MS, ClauseTTS, TTSError

WPM = 160
"""espeak-ng's own rate (words per minute): speed 1.0."""
WPM_RANGE = (80, 450)
"""The rates espeak-ng takes."""
log = logging.getLogger(__name__)

_INSTALL = "install it with: sudo apt-get install espeak-ng (or run scripts/setup)"
_READ = 8192


def parse_wav_header(data: bytes) -> tuple[int, int] | None:
    """(sample rate, offset of the samples) of a mono 16-bit WAV stream, or None
    while ``data`` is too short to tell. espeak-ng writes placeholder sizes, so
    the data chunk's size is ignored."""
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TTSError(f"espeak-ng wrote no WAV data (starts with {data[:12]!r})")
    pos, rate = 12, 0
    while len(data) >= pos + 8:
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag == b"data":
            if not rate:
                raise TTSError("espeak-ng WAV has no fmt chunk before its data")
            return rate, pos + 8
        if len(data) < pos + 8 + size:
            return None
        if tag == b"fmt ":
            _fmt, channels, rate, _bps, _align, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            if channels != 1 or bits != 16:
                raise TTSError(f"espeak-ng wrote {channels} channel(s) of {bits}-bit audio; expected mono 16-bit")
        pos += 8 + size + (size & 1)
    return None


class EspeakTTS(ClauseTTS):
    """espeak-ng voice, clause by clause, in a subprocess per clause.

    Options: ``voice`` (an espeak-ng voice, e.g. "en-us", "en-gb", "de"),
    ``wpm`` (speed in words per minute, 80..450), ``pitch`` (0..99),
    ``volume`` (amplitude 0..200, 100 normal), ``executable`` (default the
    ``espeak-ng`` on PATH), ``first_clause_words``, ``chunk_ms``.
    """

    provider = "espeak"

    def __init__(
        self,
        *,
        voice: str = "en-us",
        model: str | None = None,
        speed: float | None = None,
        wpm: int = WPM,
        pitch: int | None = None,
        volume: int | None = None,
        executable: str | None = None,
        first_clause_words: int = FIRST_CLAUSE_WORDS,
        chunk_ms: float = CHUNK_MS,
    ) -> None:
        super().__init__(first_clause_words=first_clause_words, chunk_ms=chunk_ms)
        voice = model or voice  # [tts] model names the voice
        if speed is not None:
            wpm = speed_wpm(speed)
        exe = shutil.which(executable or "espeak-ng")
        if exe is None:
            raise TTSError(f"espeak-ng is not installed ({executable or 'espeak-ng'} not found); {_INSTALL}")
        if not WPM_RANGE[0] <= wpm <= WPM_RANGE[1]:
            raise ConfigError(f"espeak wpm must be within {WPM_RANGE[0]}..{WPM_RANGE[1]}, got {wpm}")
        if pitch is not None and not 0 <= pitch <= 99:
            raise ConfigError(f"espeak pitch must be within 0..99, got {pitch}")
        if volume is not None and not 0 <= volume <= 200:
            raise ConfigError(f"espeak volume must be within 0..200, got {volume}")
        self._argv = [exe, "--stdout", "-v", voice, "-s", str(wpm)]
        if pitch is not None:
            self._argv += ["-p", str(pitch)]
        if volume is not None:
            self._argv += ["-a", str(volume)]
        self._rate = self._probe(voice)

    def _probe(self, voice: str) -> int:
        """Speak one word now: checks the voice and reads the native rate."""
        try:
            done = subprocess.run(self._argv, input=b"a", capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TTSError(f"espeak-ng cannot run ({exc}); {_INSTALL}") from exc
        header = parse_wav_header(done.stdout) if done.stdout else None
        if done.returncode != 0 or header is None:
            why = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            raise ConfigError(f"espeak-ng voice {voice!r} does not work: {why} (list voices: espeak-ng --voices)")
        return header[0]

    @property
    def sample_rate(self) -> int:
        return self._rate

    def speed_change(self, speed: float) -> Callable[[], None]:
        i = self._argv.index("-s") + 1
        argv = [*self._argv[:i], str(speed_wpm(speed)), *self._argv[i + 1:]]
        return lambda: setattr(self, "_argv", argv)

    async def _clause_audio(self, text: str) -> AsyncGenerator[Int16Array, None]:
        proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdin.write(text.encode())
            proc.stdin.close()
            buf, header = b"", None
            while block := await proc.stdout.read(_READ):
                buf += block
                if header is None:
                    if (header := parse_wav_header(buf)) is None:
                        continue
                    buf = buf[header[1] :]
                usable = len(buf) - len(buf) % 2
                if usable:
                    yield np.frombuffer(buf[:usable], dtype="<i2").astype(np.int16)
                    buf = buf[usable:]
            if await proc.wait() != 0:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise TTSError(f"espeak-ng failed (exit {proc.returncode}): {err}", retryable=True)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def speed_wpm(speed: float) -> int:
    """``tts.speed`` as espeak-ng's words per minute: 160 × speed, within :data:`WPM_RANGE`."""
    lo, hi = WPM_RANGE
    wpm = round(WPM * speed)
    if not lo <= wpm <= hi:
        log.warning("tts.speed %.2f is %d wpm, beyond espeak-ng's %d-%d: using %d",
                    speed, wpm, lo, hi, min(hi, max(lo, wpm)))
    return min(hi, max(lo, wpm))
