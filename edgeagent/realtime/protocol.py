"""The OpenAI Realtime protocol over WebSocket: client events out, typed server events in.

    client = RealtimeClient(url, model="gpt-realtime", api_key=key)
    await client.connect(SessionOptions(instructions=..., tools=[...], voice="alloy"))
    client.append_audio(frame)                    # input_audio_buffer.append (pcm16, 24 kHz)
    async for event in client.events():           # AudioDelta, TranscriptDelta, FunctionCall, ...
        ...

Sent: ``session.update``, ``input_audio_buffer.append`` / ``.commit`` / ``.clear``,
``conversation.item.create`` (history, function call output), ``response.create``,
``response.cancel``, ``conversation.item.truncate``. Received, in both the GA names
and the beta ones: ``response.output_audio.delta`` / ``response.audio.delta``,
``response.output_audio_transcript.delta`` / ``response.audio_transcript.delta``,
``conversation.item.input_audio_transcription.completed``,
``input_audio_buffer.speech_started`` / ``speech_stopped``,
``response.function_call_arguments.done``, ``response.created``, ``response.done``,
``error``. A socket that closes or errors ends :meth:`RealtimeClient.events` with a
:class:`RealtimeDropped`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import Resampler
from edgeagent.errors import EdgeAgentError
from edgeagent.llm.tools import FunctionTool

log = logging.getLogger(__name__)

RATE = 24_000
"""pcm16 in the Realtime API is 24 kHz mono."""


class RealtimeError(EdgeAgentError):
    """The realtime model cannot be reached or said something we cannot use."""

    retryable = True


@dataclass(frozen=True)
class SessionOptions:
    instructions: str = ""
    voice: str = "alloy"
    tools: Sequence[FunctionTool] = ()
    server_vad: bool = True
    """False: turn detection is ours (we commit the buffer and ask for responses)."""
    transcribe_model: str = "whisper-1"
    """Input audio transcription (so the history has the user's words)."""
    interrupt_response: bool = True
    """The server stops its response when the user starts talking (``interruption.enabled``)."""


# -- server events we act on -----------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int = 0


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int = 0


@dataclass(frozen=True)
class UserTranscript:
    item_id: str
    text: str


@dataclass(frozen=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True)
class AudioDelta:
    response_id: str
    item_id: str
    frame: AudioFrame


@dataclass(frozen=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True)
class FunctionCall:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: str
    """completed, cancelled, failed, incomplete."""


@dataclass(frozen=True)
class ServerError:
    message: str
    code: str = ""


@dataclass(frozen=True)
class RealtimeDropped:
    """The socket closed or failed: the session must go on without the realtime model."""

    reason: str


ServerEvent = (SpeechStarted | SpeechStopped | UserTranscript | ResponseCreated | AudioDelta | TranscriptDelta
               | FunctionCall | ResponseDone | ServerError | RealtimeDropped)

_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_TEXT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta",
               "response.output_text.delta", "response.text.delta")


def parse_event(msg: dict[str, Any]) -> ServerEvent | None:
    """A typed event, or None for one we do not act on (session.created, rate_limits.updated, ...)."""
    kind = msg.get("type")
    if kind in _AUDIO_DELTA:
        pcm = np.frombuffer(base64.b64decode(msg.get("delta", "")), dtype="<i2").astype(np.int16)
        return AudioDelta(msg.get("response_id", ""), msg.get("item_id", ""), AudioFrame.from_int16(pcm, RATE))
    if kind in _TEXT_DELTA:
        return TranscriptDelta(msg.get("response_id", ""), msg.get("item_id", ""), str(msg.get("delta", "")))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(int(msg.get("audio_start_ms", 0)))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(int(msg.get("audio_end_ms", 0)))
    if kind == "conversation.item.input_audio_transcription.completed":
        return UserTranscript(msg.get("item_id", ""), str(msg.get("transcript", "")))
    if kind == "response.created":
        return ResponseCreated(str((msg.get("response") or {}).get("id", "")))
    if kind == "response.function_call_arguments.done":
        return FunctionCall(msg.get("response_id", ""), msg.get("item_id", ""), str(msg.get("call_id", "")),
                            str(msg.get("name", "")), str(msg.get("arguments", "") or "{}"))
    if kind == "response.done":
        resp = msg.get("response") or {}
        return ResponseDone(str(resp.get("id", "")), str(resp.get("status", "completed")))
    if kind == "error":
        err = msg.get("error") or {}
        return ServerError(str(err.get("message", msg)), str(err.get("code", "") or ""))
    return None


@dataclass
class RealtimeClient:
    """One WebSocket to a realtime model."""

    url: str
    model: str = "gpt-realtime"
    api_key: str | None = None
    connect_s: float = 5.0
    _ws: aiohttp.ClientWebSocketResponse[bool] | None = field(default=None, repr=False)
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)
    _up: Resampler | None = field(default=None, repr=False)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def connect(self, options: SessionOptions) -> None:
        """Open the socket and configure the session; RealtimeError when it cannot."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}model={self.model}" if "model=" not in self.url else self.url
        http = self._http = aiohttp.ClientSession()

        async def open_socket() -> aiohttp.ClientWebSocketResponse[bool]:
            return await http.ws_connect(url, headers=headers, heartbeat=10.0)

        try:
            self._ws = await wait_for(open_socket(), self.connect_s)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await self.aclose()
            raise RealtimeError(f"cannot open the realtime socket {self.url}: {exc!r}") from exc
        await self.send(session_update(options))

    async def send(self, event: dict[str, Any]) -> None:
        if not self.connected:
            raise RealtimeError("the realtime socket is closed")
        assert self._ws is not None
        event.setdefault("event_id", f"evt_{uuid.uuid4().hex[:16]}")
        try:
            await self._ws.send_str(json.dumps(event))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise RealtimeError(f"sending {event.get('type')} failed: {exc!r}") from exc

    async def append_audio(self, frame: AudioFrame) -> None:
        """Mic audio at any rate; resampled to 24 kHz with one stream-wide resampler (no seams)."""
        if frame.sample_rate != RATE:
            if self._up is None or self._up.in_rate != frame.sample_rate:
                self._up = Resampler(frame.sample_rate, RATE)
            frame = self._up.push(frame)
            if not frame.num_samples:
                return
        pcm = frame.samples.astype("<i2").tobytes()
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    async def commit(self) -> None:
        await self.send({"type": "input_audio_buffer.commit"})

    async def clear_input(self) -> None:
        await self.send({"type": "input_audio_buffer.clear"})

    async def create_response(self) -> None:
        await self.send({"type": "response.create"})

    async def cancel_response(self) -> None:
        await self.send({"type": "response.cancel"})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The user heard only ``audio_end_ms`` of item ``item_id`` (interrupted)."""
        await self.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": int(audio_end_ms)})

    async def add_message(self, role: str, text: str) -> None:
        """A history item: user text (input_text) or assistant text (output_text)."""
        part = "input_text" if role in ("user", "system") else "output_text"
        await self.send({"type": "conversation.item.create",
                         "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]}})

    async def function_output(self, call_id: str, output: str) -> None:
        await self.send({"type": "conversation.item.create",
                         "item": {"type": "function_call_output", "call_id": call_id, "output": output}})

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Server events until the socket ends; the last one is then a RealtimeDropped."""
        ws = self._ws
        if ws is None:
            yield RealtimeDropped("not connected")
            return
        reason = "the server closed the socket"
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        log.warning("realtime: a message that is not JSON: %.80r", msg.data)
                        continue
                    event = parse_event(data) if isinstance(data, dict) else None
                    if event is not None:
                        yield event
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"socket error: {ws.exception()!r}"
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"socket error: {exc!r}"
        yield RealtimeDropped(reason)

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None


def session_update(o: SessionOptions) -> dict[str, Any]:
    """The ``session.update`` event (GA shape: audio formats and turn detection under ``audio``)."""
    turn = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
            "create_response": True, "interrupt_response": o.interrupt_response} if o.server_vad else None
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": o.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": turn,
                          "transcription": {"model": o.transcribe_model}},
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": o.voice},
            },
            "tools": [{"type": "function", "name": t.name, "description": t.description,
                       "parameters": t.parameters} for t in o.tools],
            "tool_choice": "auto",
        },
    }
