"""A conversation through a realtime speech-to-speech model, with the local pipeline behind it.

    rt = RealtimeSession(client, models, server_vad=True)
    await rt.start(Assistant(), input=mic, output=speaker)
    ...                                  # rt.mode is "realtime", or "pipeline" after a drop
    await rt.aclose()

While the socket is up, the mic goes to the model (``input_audio_buffer.append``)
and its audio deltas to the speaker; the model's VAD (or ours, with
``server_vad=False``: we commit the turn at the end of speech and ask for the
response) takes the turns. User speech over a reply stops it at once: the queued
audio is dropped, the response cancelled and the assistant item truncated to what
was played. Tool calls run the agent's tools and go back as
``function_call_output``. Transcripts of both sides build the chat history.

When the socket drops (or cannot open), the session switches to a pipeline
:class:`~edgeagent.voice.session.AgentSession` on the same input and output with
the same history: a question the model had not answered yet is answered by the
local models (from its transcript, or from the turn's audio through local STT),
and a reply cut off mid-way is finished by the local LLM. The user hears one gap:
the time the local models take to their first audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from edgeagent.audio.frame import RECOGNITION_RATE, AudioFrame
from edgeagent.audio.io import AudioInput, AudioOutput
from edgeagent.audio.resample import resample
from edgeagent.config import Config
from edgeagent.fallback.chain import FallbackEvent
from edgeagent.llm.chat import ChatContext, ChatMessage
from edgeagent.realtime.live import RealtimeLive
from edgeagent.realtime.protocol import (
    RATE,
    AudioDelta,
    FunctionCall,
    RealtimeClient,
    RealtimeDropped,
    RealtimeError,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    UserTranscript,
)
from edgeagent.realtime.tools import answer_tool_calls
from edgeagent.vad.base import VADEventType
from edgeagent.voice.agent import Agent
from edgeagent.voice.events import AgentState, ConversationItemAddedEvent, ErrorEvent, EventEmitter
from edgeagent.voice.session import AgentSession
from edgeagent.voice.stages import Models

log = logging.getLogger(__name__)

SETTLE_S = 5.0
"""After the input ends: the model has answered once it has said nothing for this long."""
TURN_AUDIO_S = 30.0
"""The user's audio kept since the last answered turn, for local STT if the socket drops."""


class RealtimeSession(RealtimeLive):
    def __init__(self, client: RealtimeClient, models: Models, *, config: Config | None = None,
                 echo_path: bool = False, server_vad: bool = True, voice: str = "alloy",
                 probe_interval_s: float = 5.0) -> None:
        self.client = client
        self.models = models
        self.pipeline: AgentSession | None = None
        self.config = config or Config()
        """The pipeline's config after a drop (:func:`edgeagent.voice.compose.session_for`, with
        ``echo_path``); its turn, interruption and activation as changed live since."""
        self.echo_path = echo_path
        self.server_vad = server_vad
        self.voice = voice
        self.turn = self.config.turn
        self.activation = dataclasses.replace(self.config.activation, mode="always")
        self._interruption = self.config.interruption
        self._sending: set[asyncio.Task[None]] = set()
        self._muted = False
        self._barging: asyncio.Future[None] | None = None
        self.probe_interval_s = probe_interval_s
        """After a switch to the pipeline, the model is tried again this often (and used once the
        pipeline is quiet)."""
        self.history = ChatContext()
        """The conversation (without the system prompt), kept across the switch to the pipeline."""
        self.mode = "starting"
        """starting, realtime, pipeline, closed."""
        self.fallback_events: list[FallbackEvent] = []
        self.pipeline_started = asyncio.Event()
        self._events = EventEmitter()
        self._fallback_listeners: list[Any] = []
        self._agent: Agent | None = None
        self._in: AudioInput | None = None
        self._out: AudioOutput | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._play: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        # the response being spoken
        self._response: str | None = None
        self._item: str | None = None
        self._text: list[str] = []
        self._played_samples = 0
        self._playing = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._calls: list[FunctionCall] = []
        self.interruptions: list[int] = []
        """audio_end_ms of each reply the user cut off."""
        self.realtime_audio_end: float | None = None
        """Monotonic time the last realtime audio was handed to the output before the switch."""
        self.pipeline_first_audio: float | None = None
        """Monotonic time the pipeline started speaking after the switch (the gap ends)."""
        # the user's turn not answered yet
        self._pending_user: str | None = None
        self._turn_audio: list[AudioFrame] = []
        self._switching = False
        self._warming: asyncio.Future[Any] | None = None
        self._last_event = time.monotonic()
        self._probe: asyncio.Task[None] | None = None

    # -- public ----------------------------------------------------------------------------

    def on(self, name: str, handler: Any = None) -> Any:
        """The session events of :class:`AgentSession` (``conversation_item_added``, ``error``, ...)."""
        return self._events.on(name, handler)

    def off(self, name: str, handler: Any) -> None:
        self._events.off(name, handler)

    def on_fallback(self, callback: Any) -> None:
        """``callback(FallbackEvent)`` when the realtime model is left for the pipeline."""
        self._fallback_listeners.append(callback)

    @property
    def speaking(self) -> bool:
        """A realtime reply is being generated or played."""
        return self._response is not None or self._playing

    async def start(self, agent: Agent, *, input: AudioInput, output: AudioOutput) -> None:
        self._agent, self._in, self._out = agent, input, output
        try:
            await self._connect()
        except RealtimeError as exc:
            await self._to_pipeline(f"unreachable: {exc}")
            return
        self._run()

    async def _connect(self) -> None:
        """Open the socket, configure the session and hand it the history so far."""
        assert self._agent is not None
        await self.client.connect(self.options())
        for m in self.history.messages:
            if m.role in ("user", "assistant") and m.content:
                await self.client.add_message(m.role, m.content)

    def _run(self) -> None:
        """Talk through the model from now on."""
        self._response, self._item, self._text, self._calls = None, None, [], []
        self._pending_user, self._turn_audio, self._playing = None, [], False
        self._drained.set()
        self._switching = False
        self.mode = "realtime"
        self._keep_warm()
        self._tasks = [asyncio.ensure_future(self._mic()), asyncio.ensure_future(self._receive()),
                       asyncio.ensure_future(self._player())]
        log.info("realtime: talking through %s (%s turn detection)", self.client.url,
                 "server" if self.server_vad else "local")

    async def wait_until_done(self) -> None:
        """Until the input has ended and the last reply is over (on the pipeline after a switch)."""
        while True:
            if self.pipeline is not None and self.pipeline_started.is_set():
                await self.pipeline.wait_until_done()
                return
            mic = self._tasks[0] if self._tasks else None
            if (mic is not None and mic.done() and not self.speaking and self.mode == "realtime"
                    and time.monotonic() - self._last_event > SETTLE_S):
                return
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        self.mode = "closed"
        self._speech_stopped()  # no barge-in after the close
        for t in [*self._tasks, *([self._probe] if self._probe is not None else [])]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.client.aclose()
        if self.pipeline is not None:
            await self.pipeline.aclose()

    # -- realtime mode ---------------------------------------------------------------------

    async def _mic(self) -> None:
        assert self._in is not None
        vad = None if self.server_vad else self.models.vad.stream()
        reader = asyncio.ensure_future(self._local_turns(vad)) if vad is not None else None
        keep = int(TURN_AUDIO_S * RECOGNITION_RATE)
        kept = 0
        try:
            async for frame in self._in:
                if self._muted:
                    continue
                f16 = resample(frame, RECOGNITION_RATE)
                if not self._turn_audio:
                    kept = 0  # cleared after an answered turn
                self._turn_audio.append(f16)
                kept += f16.num_samples
                while kept > keep and len(self._turn_audio) > 1:
                    kept -= self._turn_audio.pop(0).num_samples
                if vad is not None:
                    vad.push(f16)
                try:
                    await self.client.append_audio(frame)
                except RealtimeError:
                    return  # the receiver sees the drop and switches
        finally:
            if reader is not None:
                reader.cancel()
            if vad is not None:
                await vad.aclose()

    async def _local_turns(self, vad: Any) -> None:
        """Our own turn detection: barge-in at the start of speech, commit + respond at its end."""
        async for ev in vad:
            if ev.type is VADEventType.START_OF_SPEECH:
                self._speech_started()
            elif ev.type is VADEventType.END_OF_SPEECH:
                self._speech_stopped()
                with contextlib.suppress(RealtimeError):
                    await self.client.commit()
                    await self.client.create_response()

    async def _receive(self) -> None:
        async for ev in self.client.events():
            self._last_event = time.monotonic()
            if isinstance(ev, AudioDelta):
                if ev.response_id and ev.response_id != self._response and self._response is not None:
                    continue  # a cancelled response's late audio
                if ev.item_id != self._item:
                    self._item, self._played_samples = ev.item_id, 0
                self._queue_audio(ev.frame)
            elif isinstance(ev, TranscriptDelta):
                self._text.append(ev.text)
            elif isinstance(ev, SpeechStarted):
                self._speech_started()
            elif isinstance(ev, SpeechStopped):
                self._speech_stopped()
            elif isinstance(ev, UserTranscript):
                if ev.text.strip():
                    self._add(ChatMessage("user", ev.text.strip()))
                    self._pending_user = ev.text.strip()
            elif isinstance(ev, ResponseCreated):
                self._response, self._text = ev.response_id, []
            elif isinstance(ev, FunctionCall):
                self._calls.append(ev)
            elif isinstance(ev, ResponseDone):
                await self._response_done(ev)
            elif isinstance(ev, ServerError):
                log.warning("realtime: server error: %s", ev.message)
                self._events.emit(ErrorEvent(RealtimeError(ev.message), "realtime"))
            elif isinstance(ev, RealtimeDropped):
                await self._to_pipeline(f"dropped: {ev.reason}")
                return

    async def _player(self) -> None:
        assert self._out is not None
        while True:
            frame = await self._play.get()
            if frame is None:
                continue
            await self._out.write(frame)
            self._played_samples += frame.num_samples
            if self._play.empty():
                await self._out.drain()
                if self._play.empty():
                    self._playing = False
                    self._drained.set()

    def _queue_audio(self, frame: AudioFrame) -> None:
        self._playing = True
        self._drained.clear()
        self._play.put_nowait(frame)

    async def _barge_in(self) -> None:
        """The user speaks over the reply: silence now, cancel, and truncate to what was heard."""
        if self._response is None and not self._playing:
            return
        while not self._play.empty():
            self._play.get_nowait()
        assert self._out is not None
        self._out.clear()
        self._playing = False
        self._drained.set()
        played_ms = round(1000 * self._played_samples / RATE)
        with contextlib.suppress(RealtimeError):
            if self._response is not None:
                await self.client.cancel_response()
            if self._item:
                await self.client.truncate(self._item, played_ms)
        msgs = self.history.messages
        if self._response is not None:
            text = "".join(self._text).strip()
            if text:
                self._add(ChatMessage("assistant", text, interrupted=True))
        elif msgs and msgs[-1].role == "assistant" and not msgs[-1].interrupted:
            msgs[-1] = ChatMessage("assistant", msgs[-1].content, interrupted=True)
        self.interruptions.append(played_ms)
        log.info("realtime: interrupted after %d ms of the reply", played_ms)
        self._response, self._item, self._text, self._played_samples = None, None, [], 0

    async def _response_done(self, ev: ResponseDone) -> None:
        if ev.response_id and self._response is not None and ev.response_id != self._response:
            return
        calls, self._calls = self._calls, []
        text = "".join(self._text).strip()
        if calls:
            assert self._agent is not None
            await answer_tool_calls(self._agent, self.client, calls, text, self._add)
            self._response, self._text = None, []
            with contextlib.suppress(RealtimeError):
                await self.client.create_response()
            return
        if text and ev.status == "completed":
            self._add(ChatMessage("assistant", text))
            self._pending_user, self._turn_audio = None, []
        elif text and self._response is not None:  # cut by the server (its VAD heard the user) before our barge-in
            self._add(ChatMessage("assistant", text, interrupted=True))
        self._response, self._text = None, []

    def _add(self, msg: ChatMessage) -> None:
        self.history.messages.append(msg)
        self._events.emit(ConversationItemAddedEvent(msg, self._agent.label if self._agent else ""))
        if self.mode == "realtime":
            self._keep_warm()

    def _keep_warm(self) -> None:
        """Evaluate the conversation so far into the idle local LLM's KV cache, so that after a drop
        the pipeline answers without evaluating the whole history first."""
        if self._agent is None or (self._warming is not None and not self._warming.done()):
            return
        ctx = ChatContext()
        ctx.add("system", self._agent.instructions)
        ctx.messages.extend(self.history.messages)
        self._warming = asyncio.ensure_future(self.models.llm.prefill(ctx, self._agent.tools))
        self._warming.add_done_callback(lambda f: f.cancelled() or f.exception())

    # -- the switch to the pipeline --------------------------------------------------------------

    def _pipeline_state(self, ev: Any) -> None:
        if self.pipeline_first_audio is None and ev.new_state is AgentState.SPEAKING:
            self.pipeline_first_audio = time.monotonic()
            if self.realtime_audio_end is not None:
                log.info("realtime -> pipeline: %.0f ms of silence between the model's audio and ours",
                         1000 * (self.pipeline_first_audio - self.realtime_audio_end))

    async def _to_pipeline(self, reason: str) -> None:
        from edgeagent.realtime.handover import to_pipeline

        await to_pipeline(self, reason)


def from_config(models: Models, cfg: Config, *, files: bool = False) -> RealtimeSession:
    """The session ``[cloud].realtime_*`` describes, on ``models`` (its pipeline after a drop)."""
    from edgeagent.cloud.provider import api_key

    c = cfg.cloud
    assert c.realtime_url is not None
    if cfg.activation.mode != "always":
        log.warning("realtime: the model listens all the time (activation.mode %s is not used)",
                    cfg.activation.mode)
    client = RealtimeClient(c.realtime_url, model=c.realtime_model, api_key=api_key(c), connect_s=c.connect_s)
    return RealtimeSession(client, models, config=cfg, echo_path=not files,
                           server_vad=c.realtime_turn_detection == "server_vad", voice=c.realtime_voice,
                           probe_interval_s=c.probe_interval_s)
