"""The conventions of LiveKit Agents in a room, so existing LiveKit front ends work unchanged.

    conventions = RoomConventions(room, session, agent_track_sid=lambda: publication.sid)
    conventions.attach()        # after every (re)connect; attach(new_room) after a new Room
    conventions.detach()

- **``lk.agent.state``**: the local participant attribute follows the session's
  state (initializing/idle/listening/thinking/speaking); set on attach, then on
  every change, in order, and again when the SDK has got a lost connection back
  (``reconnected``: changes made while it was away were not sent).
- **``lk.transcription``** text streams, as livekit-agents sends them:

  * the *user*: every transcript (interim or final) is a whole text in its own
    short stream, sent on behalf of the user (``sender_identity``, when known),
    with ``lk.segment_id`` (one per user turn), ``lk.transcription_final``
    ("false"/"true") and ``lk.transcribed_track_id`` (the user's audio track).
    A backlog of interim transcripts is collapsed to the latest one.
  * the *agent*: one stream per reply, opened with ``lk.transcription_final``
    "false", ``lk.segment_id`` and ``lk.transcribed_track_id`` (the agent's
    track), the text written into it as deltas as the reply is handed to the
    speaker (clause by clause, so the text keeps pace with the voice; an
    interrupted reply stops where the voice stopped), closed with
    ``lk.transcription_final`` "true". Readers see the closing attributes in
    ``reader.info.attributes`` once the stream has ended.

- **``lk.chat``**: a text stream on that topic (a byte stream too, strictly
  UTF-8) is the user typing. It is answered by voice (``generate_reply``) and,
  like livekit-agents, by text through the agent's ``lk.transcription`` stream
  of that reply: that is what LiveKit front ends (agent-starter, the playground)
  show as the agent's message, next to the user's own ``lk.chat`` messages;
  sending it on ``lk.chat`` too would show it twice. A newer message (in the
  order sent) interrupts the reply to an older one and replaces one still
  waiting, so a flood of messages costs at most one reply and one waiting text
  (:mod:`edgeagent.room.chat`). Messages over
  ``max_chat_bytes``, not UTF-8 (or with U+FFFD from a lossy decode), or empty
  are refused with one log line each, as are messages from participants the agent
  does not listen to (``listen`` as ``livekit.listen``: ``linked``, only
  ``user_identity()``; ``identities``, those; ``all``, anyone. ``None``: only
  ``user_identity()`` when it names someone, else anyone).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.config.room import LISTEN_MODES
from edgeagent.room.chat import TOPIC_CHAT, ChatInbox
from edgeagent.voice.events import AgentState, AgentStateChangedEvent, SpeechCreatedEvent, UserInputTranscribedEvent
from edgeagent.voice.session import AgentSession
from edgeagent.voice.speech import SpeechHandle, reply_text

log = logging.getLogger(__name__)

ATTR_AGENT_STATE = "lk.agent.state"
TOPIC_TRANSCRIPTION = "lk.transcription"
ATTR_TRACK_ID = "lk.transcribed_track_id"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_FINAL = "lk.transcription_final"

SEND_TIMEOUT_S = 10.0  # bound on every call into the SDK (a stalled room must not stall the agent)
MAX_QUEUED = 16  # queued state updates and user transcripts (the oldest go first)

SidSource = Callable[[], str | None]


class RoomConventions:
    """See the module docs. ``agent_track_sid``/``user_track_sid``/``user_identity`` are asked
    at the moment a transcript goes out (tracks come and go with reconnects)."""

    def __init__(
        self,
        room: rtc.Room,
        session: AgentSession,
        *,
        agent_track_sid: SidSource = lambda: None,
        user_track_sid: SidSource = lambda: None,
        user_identity: SidSource = lambda: None,
        listen: str | None = None,
        identities: Sequence[str] = (),
        max_chat_bytes: int = 4096,
    ) -> None:
        if listen not in (None, *LISTEN_MODES) or (listen == "identities" and not identities):
            raise ValueError(f"listen: one of {', '.join(LISTEN_MODES)} (identities with identities), "
                             f"not {listen!r} with {list(identities)}")
        self.listen, self.identities = listen, tuple(identities)
        self.room, self.session = room, session
        self._agent_track_sid = agent_track_sid
        self._user_track_sid = user_track_sid
        self._user_identity = user_identity
        self._attached = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._states: deque[AgentState] = deque(maxlen=MAX_QUEUED)
        self._user_texts: deque[tuple[str, str, bool]] = deque(maxlen=MAX_QUEUED)
        self._wake_states = asyncio.Event()
        self._wake_user = asyncio.Event()
        self._user_segment: str | None = None
        self._chat = ChatInbox(session, max_chat_bytes=max_chat_bytes, refusal=self._chat_refusal, spawn=self._spawn)
        # Follow the state events from the start, attached or not, so that attach() after a
        # reconnect sends the state the session is in now.
        self._state = session.state
        session.on("agent_state_changed", self._on_state)

    # -- lifecycle ---------------------------------------------------------------------

    def attach(self, room: rtc.Room | None = None) -> None:
        """Start following the session in ``room`` (default: the one given before)."""
        if self._attached:
            self.detach()
        if room is not None:
            self.room = room
        self.room.register_text_stream_handler(TOPIC_CHAT, self._chat.on_text)
        self.room.register_byte_stream_handler(TOPIC_CHAT, self._chat.on_bytes)
        self.room.on("reconnected", self._on_reconnected)
        self.session.on("user_input_transcribed", self._on_user_transcript)
        self.session.on("speech_created", self._on_speech)
        self._attached = True
        self._states.clear()
        self._states.append(self._state)
        self._wake_states.set()
        for loop in (self._state_loop, self._user_loop, self._chat.loop):
            self._spawn(loop())
        reply = self.session.current_reply  # one under way (a rejoin): its text from the start
        if reply is not None and not reply.handle.done():
            self._spawn(self._stream_reply(reply.handle))

    def detach(self) -> None:
        """Stop: handlers off, tasks cancelled (an open agent transcript is abandoned)."""
        if not self._attached:
            return
        self._attached = False
        self.session.off("user_input_transcribed", self._on_user_transcript)
        self.session.off("speech_created", self._on_speech)
        self.room.off("reconnected", self._on_reconnected)
        self.room.unregister_text_stream_handler(TOPIC_CHAT)
        self.room.unregister_byte_stream_handler(TOPIC_CHAT)
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._user_segment = None

    async def aclose(self) -> None:
        """:meth:`detach` for good, then wait (briefly) for the cancelled tasks to end."""
        tasks = list(self._tasks)
        self.detach()
        self.session.off("agent_state_changed", self._on_state)
        if tasks:
            await asyncio.wait(tasks, timeout=SEND_TIMEOUT_S)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("room conventions: %s failed: %r", task.get_coro(), task.exception())

    async def _sdk(self, aw: Coroutine[Any, Any, Any], what: str) -> bool:
        """Run one SDK call, bounded; a failure is one log line, never fatal."""
        if not self.room.isconnected():
            aw.close()
            return False
        try:
            await wait_for(aw, SEND_TIMEOUT_S)
            return True
        except asyncio.TimeoutError:
            log.warning("room: %s timed out after %.0f s", what, SEND_TIMEOUT_S)
        except Exception as exc:
            log.warning("room: %s failed: %s", what, exc)
        return False

    # -- lk.agent.state ------------------------------------------------------------------

    def _on_state(self, ev: AgentStateChangedEvent) -> None:
        self._state = ev.new_state
        if not self._attached:
            return
        self._states.append(ev.new_state)
        self._wake_states.set()

    def _on_reconnected(self) -> None:
        if self._attached:
            log.info("room: connection back: %s=%s again", ATTR_AGENT_STATE, self._state.value)
            self._states.append(self._state)
            self._wake_states.set()

    async def _state_loop(self) -> None:
        while True:
            await self._wake_states.wait()
            self._wake_states.clear()
            while self._states:
                state = self._states.popleft()
                await self._sdk(self.room.local_participant.set_attributes({ATTR_AGENT_STATE: state.value}),
                                f"setting {ATTR_AGENT_STATE}={state.value}")

    # -- lk.transcription: the user ------------------------------------------------------

    def _on_user_transcript(self, ev: UserInputTranscribedEvent) -> None:
        text = ev.transcript.strip()
        if not text:
            return
        if self._user_segment is None:
            self._user_segment = _segment_id()
        item = (self._user_segment, text, ev.is_final)
        if self._user_texts and not self._user_texts[-1][2] and self._user_texts[-1][0] == item[0]:
            self._user_texts[-1] = item  # a newer interim replaces one not sent yet
        else:
            self._user_texts.append(item)
        if ev.is_final:
            self._user_segment = None
        self._wake_user.set()

    async def _user_loop(self) -> None:
        while True:
            await self._wake_user.wait()
            self._wake_user.clear()
            while self._user_texts:
                segment, text, final = self._user_texts.popleft()
                await self._send_user(segment, text, final)

    async def _send_user(self, segment: str, text: str, final: bool) -> None:
        attributes = self._attributes(segment, final, self._user_track_sid())
        identity = self._user_identity()
        writer = await self._open(attributes, identity, "the user transcript")
        if writer is not None and await self._sdk(writer.write(text), "writing the user transcript"):
            await self._sdk(writer.aclose(), "closing the user transcript")

    # -- lk.transcription: the agent -----------------------------------------------------

    def _on_speech(self, ev: SpeechCreatedEvent) -> None:
        if self._attached:
            self._spawn(self._stream_reply(ev.speech_handle))

    async def _stream_reply(self, handle: SpeechHandle) -> None:
        """One reply as one stream of deltas, final when the reply is over."""
        segment = _segment_id()
        writer: rtc.TextStreamWriter | None = None
        sent = ""
        async for text, _over in reply_text(handle):
            if text.startswith(sent) and len(text) > len(sent):
                if writer is None:
                    attributes = self._attributes(segment, False, self._agent_track_sid())
                    writer = await self._open(attributes, None, "the agent transcript")
                    if writer is None:
                        return
                if await self._sdk(writer.write(text[len(sent):]), "writing the agent transcript"):
                    sent = text
        if writer is not None:
            closing = {ATTR_FINAL: "true"}
            track = self._agent_track_sid()
            if track:
                closing[ATTR_TRACK_ID] = track
            await self._sdk(writer.aclose(attributes=closing), "closing the agent transcript")

    # -- lk.transcription: both ----------------------------------------------------------

    @staticmethod
    def _attributes(segment: str, final: bool, track: str | None) -> dict[str, str]:
        attributes = {ATTR_SEGMENT_ID: segment, ATTR_FINAL: "true" if final else "false"}
        if track:
            attributes[ATTR_TRACK_ID] = track
        return attributes

    async def _open(self, attributes: dict[str, str], sender: str | None, what: str) -> rtc.TextStreamWriter | None:
        if not self.room.isconnected():
            return None
        try:
            return await wait_for(
                self.room.local_participant.stream_text(
                    topic=TOPIC_TRANSCRIPTION, attributes=attributes, sender_identity=sender),
                SEND_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("room: opening %s timed out after %.0f s", what, SEND_TIMEOUT_S)
        except Exception as exc:
            log.warning("room: opening %s failed: %s", what, str(exc) or type(exc).__name__)
        return None

    # -- lk.chat -------------------------------------------------------------------------

    def _chat_refusal(self, identity: str) -> str | None:
        """Why ``identity`` may not type to the agent; None when it may."""
        if self.listen == "identities":
            return None if identity in self.identities else f"the agent listens to {', '.join(self.identities)}"
        user = self._user_identity() if self.listen != "all" else None
        if user is None:
            return "nobody is linked yet" if self.listen == "linked" else None
        return None if identity == user else f"the agent listens to {user} (listen = linked)"


def _segment_id() -> str:
    return f"SG_{uuid.uuid4().hex[:12]}"
