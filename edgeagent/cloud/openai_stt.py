"""Cloud STT over the OpenAI-compatible transcription API (``POST {base_url}/audio/transcriptions``).

The API takes a whole recording, so a stream collects the utterance's frames and
sends them as one 16 kHz WAV at flush(); the FINAL comes from the answer. No
INTERIM results (the API has none for uploaded files).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import aiohttp

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.cloud.http import CloudError, CloudHTTP
from edgeagent.cloud.provider import CloudProvider, connection_options
from edgeagent.cloud.wav import wav_bytes
from edgeagent.metrics import STTMetrics
from edgeagent.stage import Flush
from edgeagent.stt.base import STT, SpeechEvent, SpeechEventType, STTStream

if TYPE_CHECKING:
    from edgeagent.config import Config


class OpenAISTT(CloudProvider, STT):
    """Registry name ``openai``: ``base_url``, ``model`` (e.g. whisper-1), ``api_key``, timeouts."""

    provider = "openai"

    @classmethod
    def config_options(cls, cfg: Config) -> dict[str, Any]:
        """``[cloud]``: ``stt_model`` at ``stt_base_url`` (else ``base_url``), its key and limits."""
        c = cfg.cloud
        model = {"model": c.stt_model} if c.stt_model else {}
        return {**model, **connection_options(c, c.stt_base_url, c.stt_first_result_s)}

    def __init__(self, *, base_url: str, model: str = "whisper-1", api_key: str | None = None,
                 language: str | None = "en", first_byte_s: float = 5.0, total_s: float = 30.0,
                 connect_s: float = 3.0) -> None:
        super().__init__()
        self.model = model
        self.language = language
        self.first_byte_s = first_byte_s
        self.http = CloudHTTP(base_url, api_key=api_key, connect_s=connect_s, total_s=total_s)

    def stream(self, language: str | None = None, *, prefix: str = "", prefix_s: float = 0.0) -> STTStream:
        return OpenAISTTStream(self, language or self.language)

    async def recognize(self, audio: AudioFrame, language: str | None = None) -> SpeechEvent:
        return await self._transcribe(audio, language or self.language, time.perf_counter())

    async def _transcribe(self, audio: AudioFrame, language: str | None, flushed_at: float) -> SpeechEvent:
        if audio.sample_rate != RECOGNITION_RATE:
            raise CloudError(f"STT audio must be {RECOGNITION_RATE} Hz, got {audio.sample_rate}",
                             reason="bad-request", retryable=False)
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(audio), filename="speech.wav", content_type="audio/wav")
        form.add_field("model", self.model)
        form.add_field("response_format", "json")
        if language:
            form.add_field("language", language)
        t0 = time.perf_counter()
        async with self.http.post("audio/transcriptions", data=form, first_byte_s=self.first_byte_s) as resp:
            answer = await resp.json()
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise CloudError(f"{self.http.base_url}: transcription answer has no text: {str(answer)[:80]}",
                             reason="bad-response")
        done = time.perf_counter()
        self._report(STTMetrics(provider=self.provider, audio_s=audio.duration, processing_s=done - t0,
                                final_delay_s=done - flushed_at, partials=0))
        return SpeechEvent(SpeechEventType.FINAL, text.strip(), language=language or "",
                           audio_duration=audio.duration, final_delay=done - flushed_at)



class OpenAISTTStream(STTStream):
    def __init__(self, stt: OpenAISTT, language: str | None) -> None:
        self._stt = stt
        self._language = language
        self._frames: list[AudioFrame] = []
        self._last: list[AudioFrame] = []
        super().__init__()

    def reopen(self) -> None:
        """Continue the last utterance: the next FINAL covers it all."""
        self._frames = self._last + self._frames
        self._last = []

    async def _run(self) -> None:
        async for item in self._inputs():
            if isinstance(item, Flush):
                await self._final()
            else:
                self._frames.append(item)
        if self._frames:
            await self._final()

    async def _final(self) -> None:
        flushed_at = time.perf_counter()
        frames, self._frames = self._frames, []
        self._last = frames
        if not frames:
            self._emit(SpeechEvent(SpeechEventType.FINAL, ""))
            return
        self._emit(await self._stt._transcribe(AudioFrame.concat(frames), self._language, flushed_at))
