"""A reply is followed by events, not polled: ``speech_created`` announces it, and
:func:`reply_text` wakes on each change of its handle (the room's lk.transcription and the
web console read replies this way)."""

from __future__ import annotations

import asyncio

from live import Live

from edgeagent.voice import Models, SpeechCreatedEvent, SpeechHandle
from edgeagent.voice.speech import reply_text


async def _follow(handle: SpeechHandle, into: list[tuple[str, bool]]) -> None:
    async for item in reply_text(handle):
        into.append(item)


async def test_reply_text_wakes_on_each_change_and_ends_with_the_reply() -> None:
    handle = SpeechHandle()
    seen: list[tuple[str, bool]] = []
    follower = asyncio.ensure_future(_follow(handle, seen))
    await asyncio.sleep(0)
    assert seen == [("", False)]
    handle.text = "Hello there."
    await asyncio.sleep(0)
    handle.spoken_text = "Hello"
    await asyncio.sleep(0)
    handle.spoken_text = "Hello there."
    handle._mark_done()
    await asyncio.wait_for(follower, 1)
    assert seen == [("", False), ("", False), ("Hello", False), ("Hello there.", True)]


async def test_a_reply_never_voiced_shows_its_text_and_an_interrupted_one_what_was_said() -> None:
    silent, cut = SpeechHandle(), SpeechHandle()
    silent.text = "Typed answer."
    silent._mark_done()
    assert [item async for item in reply_text(silent)] == [("Typed answer.", True)]
    cut.text, cut.spoken_text = "One. Two.", "One."
    cut.interrupt()
    cut._mark_done()
    assert [item async for item in reply_text(cut)] == [("One.", True)]


async def test_a_change_before_the_wait_is_not_missed() -> None:
    handle = SpeechHandle()
    seen = handle.updates
    handle.spoken_text = "Hi."  # between reading the count and waiting
    assert await asyncio.wait_for(handle.wait_for_update(seen), 1) == seen + 1


async def test_say_announces_its_reply_and_the_follower_reads_it_to_the_end(models: Models) -> None:
    live = Live(models)
    followed: list[tuple[str, bool]] = []
    tasks: list[asyncio.Task[None]] = []

    def on_speech(ev: SpeechCreatedEvent) -> None:
        tasks.append(asyncio.ensure_future(_follow(ev.speech_handle, followed)))

    async with live.running():
        live.session.on("speech_created", on_speech)
        handle = live.session.say("One moment, please. Here it is.")
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    created = live.of(SpeechCreatedEvent)
    assert [(e.speech_handle, e.source, e.user_initiated) for e in created] == [(handle, "say", True)]
    texts = [text for text, _ in followed]
    assert followed[-1] == ("One moment, please. Here it is.", True), followed
    assert any(0 < len(t) < len(texts[-1]) for t in texts), f"no clause-by-clause text: {followed}"
    assert len(followed) < 40, f"woken more than the reply changed: {len(followed)}"
