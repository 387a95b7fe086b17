"""A small OpenAI-compatible speech server over our local models (Whisper STT, Piper TTS).

    python -m edgeagent.cloud.speech_server --port 8090     # loads the default models

Serves ``POST /v1/audio/transcriptions`` (multipart ``file`` = a WAV, ``model``,
``language``, ``response_format`` json|text), ``POST /v1/audio/speech`` (JSON
``input``, ``voice``, ``response_format`` pcm|wav; pcm is 16-bit mono at 24 kHz,
streamed clause by clause) and ``GET /v1/models``. It is how the tests and the
failover bench get a real cloud STT/TTS on 127.0.0.1 without a third-party
cloud, and it lets one board serve speech to others on a LAN.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
from typing import Any

from aiohttp import web

from edgeagent.audio.frame import RECOGNITION_RATE
from edgeagent.audio.resample import resample
from edgeagent.cloud.openai_tts import PCM_RATE
from edgeagent.cloud.wav import read_wav_bytes, wav_bytes
from edgeagent.errors import AudioFormatError
from edgeagent.stt.base import STT
from edgeagent.tts.base import TTS

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def make_app(stt: STT | None, tts: TTS | None, *, api_key: str | None = None) -> web.Application:
    """The app; ``stt``/``tts`` None leaves that endpoint out (404)."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if api_key and request.headers.get("Authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided")
        resp: web.StreamResponse = await handler(request)
        return resp

    async def models(request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "edgeagent"}
                for name, stage in (("whisper-1", stt), ("tts-1", tts)) if stage is not None]
        return web.json_response({"object": "list", "data": data})

    app = web.Application(middlewares=[auth], client_max_size=32 * 1024 * 1024)
    app.router.add_get("/v1/models", models)
    if stt is not None:
        app.router.add_post("/v1/audio/transcriptions", functools.partial(_transcriptions, stt))
    if tts is not None:
        app.router.add_post("/v1/audio/speech", functools.partial(_speech, tts))
    return app


async def _transcriptions(stt: STT, request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/transcriptions``: a WAV upload, its text as JSON or plain text."""
    try:
        form = await request.post()
    except ValueError as exc:
        return _error(400, f"expected multipart/form-data ({exc})")
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return _error(400, "no file field")
    try:
        audio = resample(read_wav_bytes(upload.file.read()), RECOGNITION_RATE)
    except AudioFormatError as exc:
        return _error(400, str(exc))
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    event = await stt.recognize(audio, fields.get("language") or None)
    if fields.get("response_format") == "text":
        return web.Response(text=event.text)
    return web.json_response({"text": event.text})


async def _speech(tts: TTS, request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/speech``: the voice of ``input``, as a WAV or streamed 24 kHz PCM."""
    try:
        body = await request.json()
        text = str(body["input"])
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected a JSON body with 'input'")
    fmt = body.get("response_format", "pcm")
    if fmt not in ("pcm", "wav"):
        return _error(400, f"response_format {fmt!r} is not served here (pcm or wav)")
    if fmt == "wav":
        frame = resample(await tts.synthesize(text), PCM_RATE)
        return web.Response(body=wav_bytes(frame), content_type="audio/wav")
    resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
    await resp.prepare(request)
    stream = tts.stream()
    try:
        stream.push(text)
        stream.end_input()
        async for chunk in stream:
            if chunk.frame.num_samples:
                await resp.write(resample(chunk.frame, PCM_RATE).to_bytes())
    finally:
        await stream.aclose()
    await resp.write_eof()
    return resp


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start ``app``; returns the runner (``await runner.cleanup()`` stops it) and the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port


async def _main(host: str, port: int, api_key: str | None) -> None:
    from edgeagent import registry

    stt = await asyncio.to_thread(registry.create, "stt", "whisper", partials=False)
    tts = await asyncio.to_thread(registry.create, "tts", "piper")
    runner, bound = await serve(make_app(stt, tts, api_key=api_key), host, port)
    print(f"speech server on http://{host}:{bound}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--api-key", default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(a.host, a.port, a.api_key))


if __name__ == "__main__":
    main()
