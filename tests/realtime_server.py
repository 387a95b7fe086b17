"""A local WebSocket server that follows the OpenAI Realtime event flow, for the realtime tests.

It stands in for the third-party cloud: it hears with our Whisper, thinks with our
llama.cpp model and speaks with our Piper voice, behind the documented events:
``session.update`` → ``session.updated``; ``input_audio_buffer.append`` (pcm16 24 kHz)
with server VAD (an energy detector: ``speech_started`` / ``speech_stopped`` /
``committed``) or the client's ``input_audio_buffer.commit``;
``conversation.item.input_audio_transcription.completed``; ``response.create`` →
``response.created``, ``response.output_audio_transcript.delta`` and
``response.output_audio.delta`` clause by clause, ``response.done``; tool calls
(``response.function_call_arguments.done``, then the client's
``function_call_output`` item and ``response.create``); ``response.cancel`` and
``conversation.item.truncate``. ``drop_after_deltas`` cuts the socket mid-reply.

The one scripted part: a user turn that mentions "light" while a ``set_light`` tool
is declared gets a call of that tool (SmolLM2-135M calls tools too unreliably to
test the protocol with).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from typing import Any

import numpy as np
from aiohttp import web

from edgeagent.audio.frame import AudioFrame
from edgeagent.audio.resample import resample
from edgeagent.llm.base import LLM
from edgeagent.llm.chat import ChatContext
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS

RATE = 24_000
BLOCK = RATE // 50  # 20 ms


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class RealtimeServer:
    def __init__(self, stt: STT, llm: LLM, tts: TTS) -> None:
        self.stt, self.llm, self.tts = stt, llm, tts
        self.received: list[dict[str, Any]] = []
        """Every client event (audio appends without their audio)."""
        self.drop_after_deltas: int | None = None
        """Cut the socket after this many audio deltas of the next response."""
        self.refuse = False
        self.hold_open_s = 0.0
        """Keep each response open this long after its last audio (still "in progress": a user
        who speaks then is cut by this server's VAD before the client's barge-in)."""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.sockets: list[web.WebSocketResponse] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def aclose(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        conn = _Connection(self, ws)
        await conn.run()
        return ws


class _Connection:
    def __init__(self, server: RealtimeServer, ws: web.WebSocketResponse) -> None:
        self.s = server
        self.ws = ws
        self.session: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.buffer: list[np.ndarray] = []
        self.buffer_ms = 0
        self.speaking = False
        self.loud = 0
        self.quiet = 0
        self.speech_start_ms = 0
        self.response: asyncio.Task[None] | None = None
        self.pending = b""

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _id("event"))
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event))

    @property
    def server_vad(self) -> bool:
        turn = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return bool(turn) and turn.get("type") == "server_vad"

    @property
    def interrupt_response(self) -> bool:
        turn = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection") or {}
        return bool(turn.get("interrupt_response", True))

    @property
    def tools(self) -> list[str]:
        return [t.get("name", "") for t in self.session.get("tools") or []]

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"id": _id("sess"), "type": "realtime"}})
        async for msg in self.ws:
            if msg.type != web.WSMsgType.TEXT:
                continue
            ev = json.loads(msg.data)
            kind = ev.get("type")
            self.s.received.append({k: v for k, v in ev.items() if k != "audio"})
            if kind == "session.update":
                self.session.update(ev.get("session") or {})
                await self.send({"type": "session.updated", "session": self.session})
            elif kind == "input_audio_buffer.append":
                await self._audio(base64.b64decode(ev.get("audio", "")))
            elif kind == "input_audio_buffer.commit":
                await self._commit()
            elif kind == "input_audio_buffer.clear":
                self.buffer = []
            elif kind == "conversation.item.create":
                item = dict(ev.get("item") or {})
                item.setdefault("id", _id("item"))
                self.items.append(item)
                await self.send({"type": "conversation.item.created", "item": item})
            elif kind == "response.create":
                self._respond()
            elif kind == "response.cancel":
                if self.response is not None and not self.response.done():
                    self.response.cancel()
            elif kind == "conversation.item.truncate":
                await self.send({"type": "conversation.item.truncated", "item_id": ev.get("item_id"),
                                 "content_index": 0, "audio_end_ms": ev.get("audio_end_ms")})
        if self.response is not None:
            self.response.cancel()

    # -- input ------------------------------------------------------------------------------

    async def _audio(self, data: bytes) -> None:
        data = self.pending + data
        usable = len(data) - len(data) % 2
        self.pending = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        self.buffer.append(pcm)
        if not self.server_vad:
            return
        for i in range(0, len(pcm) - BLOCK + 1, BLOCK):
            block = pcm[i:i + BLOCK].astype(np.float64)
            self.buffer_ms += 20
            loud = np.sqrt(np.mean(block * block)) > 600  # about -35 dBFS
            if not self.speaking:
                self.loud = self.loud + 1 if loud else 0
                if self.loud >= 3:
                    self.speaking, self.quiet = True, 0
                    self.speech_start_ms = self.buffer_ms - 60
                    await self.send({"type": "input_audio_buffer.speech_started",
                                     "audio_start_ms": self.speech_start_ms, "item_id": _id("item")})
                    if self.response is not None and not self.response.done() and self.interrupt_response:
                        self.response.cancel()
            else:
                self.quiet = 0 if loud else self.quiet + 1
                if self.quiet >= 25:  # 500 ms of silence
                    self.speaking = False
                    await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.buffer_ms})
                    await self._commit()
                    self._respond()

    async def _commit(self) -> None:
        audio = np.concatenate(self.buffer) if self.buffer else np.zeros(0, np.int16)
        self.buffer = []
        item_id = _id("item")
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
        heard = await self.s.stt.recognize(resample(AudioFrame.from_int16(audio, RATE), 16_000))
        self.items.append({"id": item_id, "type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": heard.text}]})
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                         "content_index": 0, "transcript": heard.text})

    # -- output -----------------------------------------------------------------------------

    def _respond(self) -> None:
        running = self.response if self.response is not None and not self.response.done() else None
        if running is not None and self.interrupt_response:
            running.cancel()
            running = None
        self.response = asyncio.ensure_future(self._response(after=running))  # else: after the one talking

    async def _response(self, after: asyncio.Future[None] | None = None) -> None:
        if after is not None:
            await asyncio.wait({after})
        rid, item_id = _id("resp"), _id("item")
        await self.send({"type": "response.created", "response": {"id": rid, "status": "in_progress"}})
        status = "completed"
        try:
            last = self.items[-1] if self.items else {}
            user_text = _text(last) if last.get("role") == "user" else ""
            if "light" in user_text.lower() and "set_light" in self.tools:
                call_id = _id("call")
                await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                                 "item": {"id": item_id, "type": "function_call", "name": "set_light",
                                          "call_id": call_id}})
                await self.send({"type": "response.function_call_arguments.done", "response_id": rid,
                                 "item_id": item_id, "output_index": 0, "call_id": call_id, "name": "set_light",
                                 "arguments": json.dumps({"on": "off" not in user_text.lower()})})
                return
            await self._speak(rid, item_id, await self._answer())
            await asyncio.sleep(self.s.hold_open_s)
        except asyncio.CancelledError:
            status = "cancelled"
        finally:
            with contextlib.suppress(Exception):
                await self.send({"type": "response.done", "response": {"id": rid, "status": status}})

    async def _answer(self) -> str:
        last = self.items[-1] if self.items else {}
        if last.get("type") == "function_call_output":
            return f"Done: {last.get('output', '')}"
        ctx = ChatContext()
        ctx.add("system", self.session.get("instructions") or "You are a helpful assistant.")
        for item in self.items:
            if item.get("type") == "message" and _text(item):
                ctx.add("user" if item.get("role") == "user" else "assistant", _text(item))
        stream = self.s.llm.chat(ctx, max_tokens=60)
        try:
            return "".join([c.text async for c in stream]).strip() or "I am not sure."
        finally:
            await stream.aclose()

    async def _speak(self, rid: str, item_id: str, text: str) -> None:
        deltas = 0
        stream = self.s.tts.stream()
        try:
            stream.push(text)
            stream.flush()
            said = ""
            async for chunk in stream:
                if chunk.text and chunk.text != said:
                    said = chunk.text
                    await self.send({"type": "response.output_audio_transcript.delta", "response_id": rid,
                                     "item_id": item_id, "delta": chunk.text + " "})
                if chunk.frame.num_samples:
                    pcm = resample(chunk.frame, RATE).samples.astype("<i2").tobytes()
                    await self.send({"type": "response.output_audio.delta", "response_id": rid,
                                     "item_id": item_id, "output_index": 0, "content_index": 0,
                                     "delta": base64.b64encode(pcm).decode()})
                    deltas += 1
                    if self.s.drop_after_deltas is not None and deltas >= self.s.drop_after_deltas:
                        self.s.drop_after_deltas = None
                        transport = self.ws._req.transport if self.ws._req is not None else None
                        if transport is not None:
                            transport.abort()  # the cloud dies mid-reply
                        raise asyncio.CancelledError
                if chunk.is_final:
                    break
        finally:
            await stream.aclose()
        self.items.append({"id": item_id, "type": "message", "role": "assistant",
                           "content": [{"type": "output_text", "text": text}]})


def _text(item: dict[str, Any]) -> str:
    return " ".join(str(c.get("text") or c.get("transcript") or "") for c in item.get("content") or [])
