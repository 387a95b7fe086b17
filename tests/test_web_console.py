"""The web console end to end: headless Chromium talks to the board over a direct WebRTC connection.

The board is :func:`edgeagent.web.job.run_web` (real models, its console on 127.0.0.1,
its pairing code and remote config in temp dirs). Chromium's mic is a WAV of the
question in espeak-ng's voice (the agent speaks with Piper's), played once when the page
opens the mic. The page measures what it hears with WebAudio (``window.edgeagent``).

One board and one spoken turn for the whole story, to keep CI short: a wrong pairing
code is refused; the right one pairs; Connect; the question is heard, answered by voice
(energy in the page) and shown in both transcripts, with the turn's latency; a
screenshot is saved (path printed; see :func:`artefacts_dir`); a malformed SDP
offer, an unpaired request and a second browser are refused with clear errors; a change
made in the config editor applies (the next answer follows it) and persists, and a bad
value is refused with the field's problem shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from live import bounded, words
from speech import espeak, save, with_silence

from edgeagent import config as config_mod
from edgeagent.audio.resample import resample
from edgeagent.bench.browser import Browser
from edgeagent.config.voice import ActivationConfig
from edgeagent.config.web import WebConfig
from edgeagent.control.store import ConfigStore
from edgeagent.voice import Models
from edgeagent.web.job import run_web

# One whisper tiny.en gets right in espeak-ng's voice through the browser (scripts/bench-web).
QUESTION = "How many legs does a spider have?"


def artefacts_dir() -> Path:
    """Where tests leave files for people to look at: ``EDGEAGENT_ARTEFACTS``, else
    /tmp/edgeagent-artefacts (the path is printed)."""
    path = Path(os.environ.get("EDGEAGENT_ARTEFACTS", "/tmp/edgeagent-artefacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One HTTP POST (urllib, in a worker thread): (status, JSON body)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, {"sdp": resp.read().decode()}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


async def test_console_pairs_talks_refuses_and_configures(models: Models, tmp_path: Path) -> None:
    cfg = config_mod.Config(activation=ActivationConfig(mode="always"), web=WebConfig(enabled=True, port=0))
    store = ConfigStore.open(cfg, tmp_path / "remote-config.json")
    state = tmp_path / "state"
    # The question after 3 s of silence: time for the page to connect before it is said.
    question = with_silence(espeak(QUESTION, wpm=150), 4.0, 2.0)
    wav = save(resample(question, 48_000), tmp_path / "question.wav")
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    device = asyncio.ensure_future(run_web(models, cfg, stop, store=store, state=state, started=started))
    browsers: list[Browser] = []
    try:
        url = await bounded(asyncio.shield(started), "the console to listen", 120)
        assert url.startswith("http://127.0.0.1:")
        code = (state / "web-pairing-code").read_text().strip()
        assert (state / "web-pairing-code").stat().st_mode & 0o077 == 0

        a = await Browser.open(tmp_path / "profile-a", wav)
        browsers.append(a)
        await a.get(url)
        # A wrong code is refused, and the console stays locked.
        await a.type_into("pair-code", "0000-0001" if code != "0000-0001" else "0000-0002")
        await a.click("pair-button")
        await a.until("document.getElementById('pair-error').textContent", "pairing error")
        assert "wrong pairing code" in await a.text("pair-error")
        assert not await a.visible("talk-card")
        # The right one pairs.
        await a.type_into("pair-code", code)
        await a.click("pair-button")
        await a.until("window.edgeagent.paired", "pairing")
        assert await a.visible("talk-card") and await a.visible("config-card")

        # Connect: the question is said into the page's mic; the reply comes back.
        await a.click("connect")
        await a.until("window.edgeagent.connected && window.edgeagent.state === 'listening'", "connection", 30)
        await a.until("window.edgeagent.transcripts.some(t => t.role === 'agent' && t.final && t.text)",
                      "agent transcript", 120, poll=0.5)
        await a.until("window.edgeagent.replies.length > 0 && window.edgeagent.metrics.length > 0",
                      "reply audio and turn metrics", 30)
        page: dict[str, Any] = await a.js("return window.edgeagent")
        user = " ".join(t["text"] for t in page["transcripts"] if t["role"] == "user" and t["final"])
        agent = " ".join(t["text"] for t in page["transcripts"] if t["role"] == "agent" and t["final"])
        # Heard through Chrome's capture processing and Opus, by whisper tiny.en on a busy machine:
        # most of it is enough ("How many lands does a spider have?" was one).
        assert len({"many", "legs", "spider", "have"} & words(user)) >= 2, user
        assert agent.strip(), page["transcripts"]
        assert page["agentPeak"] > 0.02, page["agentPeak"]  # the reply was heard in the page
        assert page["micPeak"] > 0.02, page["micPeak"]
        latency = page["replies"][0]["latency_ms"]
        assert latency is not None and latency > 0, page["replies"]
        assert page["metrics"][0]["e2e_latency_ms"] is not None
        await a.until("document.querySelectorAll('#transcript li.agent').length > 0", "agent bubble")
        await a.until("document.querySelector('#latency tbody tr')", "latency row")
        shot = await a.screenshot(artefacts_dir() / "web-console-after-turn.png")
        print(f"\nweb console screenshot: {shot}\nbrowser-path latency (page): {latency} ms; "
              f"board e2e: {page['metrics'][0]['e2e_latency_ms']} ms")

        # Refusals: a malformed offer and an unpaired request (over HTTP), a second browser.
        token = await a.js("return localStorage.getItem('edgeagent.token')")
        paired = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        status, body = await asyncio.to_thread(post, url + "whip", b"hello, not sdp", paired)
        assert status == 400 and body["error"] == "bad_offer" and "v=0" in body["message"], (status, body)
        status, body = await asyncio.to_thread(post, url + "whip", b"v=0\r\n", {"Content-Type": "application/sdp"})
        assert status == 401 and "pair first" in body["message"], (status, body)
        b = await Browser.open(tmp_path / "profile-b")
        browsers.append(b)
        await b.get(url)
        await b.type_into("pair-code", code)
        await b.click("pair-button")
        await b.until("window.edgeagent.paired", "pairing in the second browser")
        await b.click("connect")
        await b.until("document.getElementById('conn-error').textContent", "second browser's error", 30)
        assert "another browser is connected" in await b.text("conn-error")
        assert not await b.js("return window.edgeagent.connected")
        assert await a.js("return window.edgeagent.connected")  # the first one is still on

        # The config editor: a bad value is refused with the field's problem, a good change applies.
        await a.until("window.edgeagent.configLoaded", "config editor")
        await a.js("document.querySelectorAll('#config-form details').forEach(d => d.open = true)")
        await a.type_into("cfg-llm-max_tokens", "0")
        await a.click("config-save")
        await a.until("document.getElementById('config-status').textContent.startsWith('refused')", "refusal")
        assert "422" in await a.text("config-status")
        assert await a.text("cfg-llm-max_tokens-problem")
        await a.js("document.querySelectorAll('#config-form details').forEach(d => d.open = true)")
        await a.type_into("cfg-llm-max_tokens", "64")
        await a.type_into("cfg-llm-temperature", "0")  # the answer below is the model's most likely one
        await a.type_into("cfg-agent-instructions", "Your name is Zorblax. Answer in one short sentence.")
        await a.click("config-save")
        await a.until("document.getElementById('config-status').textContent.startsWith('saved')", "saved", 30)
        assert store.config.agent.instructions.startswith("Your name is Zorblax")
        assert store.config.llm.max_tokens == 64 and store.config.llm.temperature == 0.0

        # The agent keeps working after all that, and follows the change: ask by chat.
        before = await a.js("return window.edgeagent.transcripts.length")
        await a.type_into("chat-text", "What is your name?")
        await a.js("document.getElementById('chat-form').requestSubmit()")
        await a.until(f"window.edgeagent.transcripts.slice({before})"
                      ".some(t => t.role === 'agent' && t.final && t.text)", "answer to the chat", 90, poll=0.5)
        answer = " ".join(t["text"] for t in (await a.js("return window.edgeagent.transcripts"))[before:]
                          if t["role"] == "agent" and t["final"])
        assert "zorblax" in words(answer), answer
        await a.click("disconnect")
        await a.until("!window.edgeagent.connected", "disconnection")
    finally:
        for browser in browsers:
            await browser.quit()
        stop.set()
        code_rc = await bounded(device, "run_web to stop", 60)
    assert code_rc == 0
    # The change outlives the board: a new store over the same file has it.
    assert ConfigStore.open(cfg, store.path).config.agent.instructions.startswith("Your name is Zorblax")


async def test_data_channel_config_rules_match_the_room(models: Models, tmp_path: Path) -> None:
    """The console's config calls: same payloads, limits and error codes as the room's RPC methods."""
    from edgeagent.config.control import ControlConfig
    from edgeagent.voice.session import AgentSession
    from edgeagent.web.channel import ChannelHub
    from edgeagent.web.feed import ChatRefused, SessionFeed

    session = AgentSession(vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=models.wake,
                           audio_turn=models.audio_turn)
    sent: list[dict[str, Any]] = []
    feed = SessionFeed(session, sent.append, max_chat_bytes=64)

    def hub_for(access: str, **control: Any) -> tuple[ChannelHub, ConfigStore]:
        cfg = config_mod.Config(web=WebConfig(enabled=True, config_access=access), control=ControlConfig(**control))
        store = ConfigStore.open(cfg, tmp_path / f"{access}.json")
        return ChannelHub(feed, cfg, store), store

    reader, store = hub_for("get")
    got = await reader.call("p1", "edgeagent.config.get", '{"v": 1}')
    assert got["ok"] and json.loads(got["payload"])["revision"] == 0
    schema = await reader.call("p1", "edgeagent.config.schema", {"v": 1})
    assert json.loads(schema["payload"])["schema"]["properties"]["tts"]["properties"]["speed"]["maximum"] == 4.0
    refused = await reader.call("p1", "edgeagent.config.set", '{"v": 1, "patch": {"tts": {"speed": 1.5}}}')
    assert not refused["ok"] and refused["code"] == 403
    assert json.loads(refused["payload"])["error"]["code"] == "forbidden"
    assert store.config.tts.speed == 1.0

    writer, store = hub_for("set", rate_burst=3, max_payload_bytes=256)
    assert (await writer.call("p1", "edgeagent.config.nope", "{}"))["code"] == 400
    stale = await writer.call("p1", "edgeagent.config.set", '{"v": 1, "base_revision": 7, "patch": {"tts": {}}}')
    assert stale["code"] == 409
    big = await writer.call("p2", "edgeagent.config.set", json.dumps({"v": 1, "patch": {"agent": {"name": "x" * 300}}}))
    assert big["code"] == 413
    ok = await writer.call("p2", "edgeagent.config.set", {"v": 1, "base_revision": 0, "patch": {"tts": {"speed": 1.5}}})
    assert ok["ok"] and json.loads(ok["payload"])["changed"][0]["path"] == "tts.speed"
    assert store.config.tts.speed == 1.5
    bad = await writer.call("p2", "edgeagent.config.set",
                            {"v": 1, "base_revision": 1, "patch": {"audio": {"input_device": "x"}}})
    assert bad["code"] == 422 and json.loads(bad["payload"])["error"]["problems"][0]["code"] == "read_only"
    assert (await writer.call("p2", "edgeagent.config.get", '{"v": 1}'))["code"] == 429  # p2's fourth call
    assert (await writer.call("p3", "edgeagent.config.get", '{"v": 1}'))["ok"]  # each browser has its bucket

    for text, why in (("", "empty"), ("   ", "empty"), ("x" * 65, "64 bytes"), (7, "string")):
        try:
            feed.chat(text)
        except ChatRefused as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"chat {text!r} was taken")
    await feed.aclose()
    await session.aclose()
