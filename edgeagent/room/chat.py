"""``lk.chat`` in: the user typing to the agent (part of :mod:`edgeagent.room.conventions`).

A message is a text stream on ``lk.chat`` (a byte stream too, strictly UTF-8). Each is
read in a task of its own, bounded in size (``max_chat_bytes``) and time
(:data:`CHAT_READ_TIMEOUT_S`); one over the limit, not UTF-8 (or with U+FFFD from a lossy
decode), empty, or from someone the agent does not listen to is refused with one log line.

The newest message wins: it interrupts the reply to an older one and replaces one still
waiting, so a flood costs at most one reply. "Newest" is the order in which the messages
were *opened* (the room hands us the streams' headers in the order they were sent), not the
order in which their reads finish: the SDK finishes the reads of streams that arrived
together in any order (each has its own native task), so a message sent earlier can finish
reading after a later one. Such a message is superseded: logged, not answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from livekit import rtc

from edgeagent.aio import wait_for
from edgeagent.voice.session import AgentSession
from edgeagent.voice.typed import TypedReplies

log = logging.getLogger("edgeagent.room.conventions")

TOPIC_CHAT = "lk.chat"
CHAT_READ_TIMEOUT_S = 10.0  # a chat stream must be complete within this
MAX_CHAT_READERS = 4  # chat streams read at once; more are refused

Reader = rtc.TextStreamReader | rtc.ByteStreamReader


class ChatRefused(ValueError):
    """An ``lk.chat`` message that is not answered (too big, not UTF-8, empty)."""


class ChatInbox:
    """Reads ``lk.chat`` messages and answers the newest, one reply at a time.

    ``refusal(identity)`` says why someone may not type to the agent (None: they may);
    ``spawn`` runs a task that the owner cancels on detach. :meth:`loop` is the task that
    replies; the owner spawns it on every attach.
    """

    def __init__(self, session: AgentSession, *, max_chat_bytes: int, refusal: Callable[[str], str | None],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        if max_chat_bytes <= 0:
            raise ValueError(f"max_chat_bytes must be positive, not {max_chat_bytes}")
        self.session, self.max_chat_bytes = session, max_chat_bytes
        self._refusal, self._spawn = refusal, spawn
        self._replies = TypedReplies(session, log, TOPIC_CHAT)
        self._readers = 0
        self._opened = 0  # messages opened so far: each one's place in the sending order
        self._newest = 0  # the place of the newest message taken (pending or answered)

    def on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self._take(reader, identity, self._read_text(reader))

    def on_bytes(self, reader: rtc.ByteStreamReader, identity: str) -> None:
        self._take(reader, identity, self._read_bytes(reader))

    def _take(self, reader: Reader, identity: str, read: Coroutine[Any, Any, str]) -> None:
        self._opened += 1
        why = self._refusal(identity)
        if why is None and self._readers >= MAX_CHAT_READERS:
            why = f"{self._readers} messages are already being read"
        if why is not None:
            read.close()
            reader.close()
            log.warning("lk.chat from %s refused: %s; not answered", identity, why)
            return
        self._readers += 1
        self._spawn(self._receive(reader, identity, read, self._opened))

    async def _receive(self, reader: Reader, identity: str, read: Coroutine[Any, Any, str], place: int) -> None:
        try:
            text = await self._read(reader, read)
        except ChatRefused as exc:
            log.warning("lk.chat from %s refused: %s", identity, exc)
            return
        except asyncio.TimeoutError:
            log.warning("lk.chat from %s refused: not complete within %.0f s", identity, CHAT_READ_TIMEOUT_S)
            return
        except Exception as exc:
            log.warning("lk.chat from %s refused: the stream failed: %s", identity, exc)
            return
        finally:
            reader.close()
            self._readers -= 1
        log.info("lk.chat from %s: %s", identity, text)
        self.offer(text, place)

    async def _read(self, reader: Reader, read: Coroutine[Any, Any, str]) -> str:
        size = reader.info.size
        if size and size > self.max_chat_bytes:
            read.close()
            raise ChatRefused(f"{size} bytes, over the limit of {self.max_chat_bytes}")
        text = (await wait_for(read, CHAT_READ_TIMEOUT_S)).strip()
        if not text:
            raise ChatRefused("empty")
        if "\ufffd" in text:
            raise ChatRefused("not valid UTF-8")
        return text

    def offer(self, text: str, place: int) -> None:
        """A message read in full, ``place``-th in the sending order: it becomes the one to
        answer next unless a message sent after it was taken already."""
        if place < self._newest:
            log.info("lk.chat: %r was sent before the message already taken; not answered", text[:40])
            return
        self._newest = place
        self._replies.offer(text)

    async def loop(self) -> None:
        """One chat reply at a time: the newest text, after the reply to the one before."""
        await self._replies.run()

    async def _read_text(self, reader: rtc.TextStreamReader) -> str:
        parts: list[str] = []
        size = 0
        async for chunk in reader:
            size += len(chunk.encode("utf-8", "surrogatepass"))
            if size > self.max_chat_bytes:
                raise ChatRefused(f"over the limit of {self.max_chat_bytes} bytes")
            parts.append(chunk)
        return "".join(parts)

    async def _read_bytes(self, reader: rtc.ByteStreamReader) -> str:
        data = bytearray()
        async for chunk in reader:
            data += chunk
            if len(data) > self.max_chat_bytes:
                raise ChatRefused(f"over the limit of {self.max_chat_bytes} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChatRefused(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
