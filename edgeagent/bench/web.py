"""Browser-path latency: spoken questions from headless Chromium over the direct WebRTC peer.

The board runs :func:`edgeagent.web.job.run_web` (console on 127.0.0.1, activation
always). Headless Chromium (:mod:`edgeagent.bench.browser`) opens the console, pairs and
connects; its mic is one WAV (``--use-file-for-fake-audio-capture``) with the questions
spoken by espeak-ng, :data:`GAP_S` apart. The page times both ends with WebAudio
(``window.edgeagent``): a question ends at the last 10 ms of its mic signal above -45 dBFS
(after the browser's own capture processing), the reply starts at the first 10 ms of the
agent's track above -60 dBFS in the page (after Opus, the network and Chrome's jitter
buffer), as ``scripts/bench-room`` times the room path. The same run measures the local
path of ``scripts/bench`` (:func:`edgeagent.bench.room.run_local`) for comparison;
``scripts/bench-web`` prints both. The verdict is on the browser path itself
(:data:`PATH_LIMIT_MS`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.aio import wait_for
from edgeagent.audio.frame import AudioFrame
from edgeagent.bench import p90
from edgeagent.bench.scripted import QUESTIONS, espeak, trim
from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)

RATE = 48_000
LEAD_S = 4.0
"""Silence before the first question: the page connects meanwhile."""
GAP_S = 9.0
"""From the end of one question to the start of the next: the reply plays meanwhile."""
PATH_LIMIT_MS = 250.0
"""The browser path (page e2e minus the board's own e2e of the same turn: the way in after the
page's mic plus the way back to the page's ears) may take at most this much at p50. The verdict
is on this figure rather than on page e2e minus a separate local run: here Chromium shares the
board's CPU (two cores), which slows the board's own stages in the browser run; a phone would not."""
INSTRUCTIONS = "You are a helpful voice assistant. Answer in one short sentence."


@dataclass
class WebTurn:
    question: str
    heard: str = ""
    e2e_ms: float | None = None
    """End of the question in the page's mic -> first reply audio in the page."""
    board_e2e_ms: float | None = None
    """The session's own figure: VAD end of speech -> first reply sample handed to the output."""
    raw: dict[str, Any] = field(default_factory=dict)
    """The session's TurnMetrics as the page got them (ms)."""


def question_track(texts: list[str]) -> tuple[AudioFrame, list[float]]:
    """The page's mic: the questions, ``GAP_S`` apart after ``LEAD_S``; and where each one ends (s)."""
    parts, ends, at = [AudioFrame.silence(LEAD_S, RATE)], [], LEAD_S
    for text in texts:
        q = trim(espeak(text, rate=RATE))
        parts += [q, AudioFrame.silence(GAP_S, RATE)]
        at += q.duration
        ends.append(at)
        at += GAP_S
    return AudioFrame.concat(parts), ends


_COMMON = frozenset({"what", "does", "have", "many", "away", "that", "this", "there", "with", "your"})


def _words(text: str) -> set[str]:
    """The content words of ``text`` (what tells one question from another)."""
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) >= 4 and w not in _COMMON}


def match(page: dict[str, Any], texts: list[str]) -> list[WebTurn]:
    """Each question's turn from what the page saw: its mic utterances, reply onsets and metrics."""
    bursts = [b for b in page["micBursts"] if b["end"] - b["start"] > 200]  # a click is no question
    turns = [WebTurn(question=t) for t in texts]
    finals = [t["text"] for t in page["transcripts"] if t["role"] == "user" and t["final"]]
    for i, burst in enumerate(bursts[: len(turns)]):
        # What happened between the end of this question and the start of the next one.
        nxt = bursts[i + 1]["start"] if i + 1 < len(bursts) else float("inf")
        onsets = [r["at"] for r in page["replies"] if burst["end"] < r["at"] < nxt]
        if not onsets:
            continue
        turns[i].e2e_ms = round(onsets[0] - burst["end"], 1)
    # The board sends a turn's metrics when its reply is over (possibly after the next question
    # started): each question takes the unused record whose transcript shares most of its words.
    used: set[int] = set()
    for turn in turns:
        scored = [(len(_words(turn.question) & _words(m["transcript"])), j)
                  for j, m in enumerate(page["metrics"]) if j not in used]
        score, j = max(scored, default=(0, -1))
        if score >= 1:
            used.add(j)
            m = page["metrics"][j]
            turn.board_e2e_ms, turn.heard, turn.raw = m["e2e_latency_ms"], m["transcript"], m
    if len(finals) != len(turns):
        log.info("the page saw %d final user transcripts for %d questions", len(finals), len(turns))
    return turns


def web_summary(turns: list[WebTurn]) -> dict[str, Any]:
    e2e = [t.e2e_ms for t in turns if t.e2e_ms is not None]
    board = [float(t.board_e2e_ms) for t in turns if t.board_e2e_ms is not None]
    path = [t.e2e_ms - t.board_e2e_ms for t in turns if t.e2e_ms is not None and t.board_e2e_ms is not None]
    return {"p50_ms": statistics.median(e2e) if e2e else None, "p90_ms": p90(e2e) if e2e else None,
            "board_p50_ms": statistics.median(board) if board else None,
            "path_p50_ms": round(statistics.median(path), 1) if path else None,
            "answered": len(e2e), "turns": [asdict(t) for t in turns]}


async def run_web_path(models: Any, texts: list[str], workdir: Path) -> list[WebTurn]:
    from edgeagent import config as config_mod
    from edgeagent.audio.wav import write_wav
    from edgeagent.bench.browser import Browser
    from edgeagent.config.voice import ActivationConfig, AgentConfig
    from edgeagent.config.web import WebConfig
    from edgeagent.control.store import ConfigStore
    from edgeagent.web.job import run_web

    track, _ = question_track(texts)
    wav = workdir / "web-questions.wav"
    write_wav(wav, track)
    tmp = Path(tempfile.mkdtemp(prefix="edgeagent-bench-web-"))
    cfg = config_mod.Config(activation=ActivationConfig(mode="always"), agent=AgentConfig(instructions=INSTRUCTIONS),
                            web=WebConfig(enabled=True, port=0))
    store = ConfigStore.open(cfg, tmp / "remote-config.json")
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    board = asyncio.ensure_future(run_web(models, cfg, stop, store=store, state=tmp, started=started))
    browser: Browser | None = None
    try:
        url = await wait_for(asyncio.shield(started), 60)
        code = (tmp / "web-pairing-code").read_text().strip()
        browser = await Browser.open(tmp / "profile", wav)
        await browser.get(url)
        await browser.type_into("pair-code", code)
        await browser.click("pair-button")
        await browser.until("window.edgeagent.paired", "pairing")
        await browser.click("connect")
        await browser.until("window.edgeagent.connected", "connection", 30)
        total = track.duration + 15.0
        await browser.until(f"window.edgeagent.metrics.length >= {len(texts)}", "every turn", total, poll=0.5)
        await asyncio.sleep(2.0)  # the last reply's onset in the page
        page: dict[str, Any] = await browser.js("return window.edgeagent")
        await browser.screenshot(workdir / "web-console.png")
    finally:
        if browser is not None:
            await browser.quit()
        stop.set()
        await wait_for(board, 60)
    return match(page, texts)


async def measure(n: int, workdir: Path, *, local: bool = True) -> dict[str, Any]:
    """The local path (as scripts/bench-room measures it), then the browser path."""
    import shutil

    from edgeagent.voice.stages import Models

    if shutil.which("espeak-ng") is None:
        raise EdgeAgentError("espeak-ng is not installed (scripts/setup --dev)")
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    models = await Models.load()
    try:
        local_fig = None
        if local:
            from edgeagent.bench.room import run_local

            local_fig = await run_local(models, n, workdir)
        turns = await run_web_path(models, texts, workdir)
    finally:
        await models.aclose()
    web = web_summary(turns)
    out: dict[str, Any] = {"questions": n, "web": web, "web_p50_ms": web["p50_ms"], "web_p90_ms": web["p90_ms"],
                           "path_p50_ms": web["path_p50_ms"], "limit_path_ms": PATH_LIMIT_MS, "missed": []}
    if web["answered"] < n:
        out["missed"].append("web_answered_fraction")
    if web["path_p50_ms"] is None or web["path_p50_ms"] > PATH_LIMIT_MS:
        out["missed"].append("path_p50_ms")
    if local_fig is not None:
        out["local"] = local_fig
        out["local_p50_ms"], out["local_p90_ms"] = local_fig.get("p50_ms"), local_fig.get("p90_ms")
        a, b = out["web_p50_ms"], out["local_p50_ms"]
        out["added_p50_ms"] = None if a is None or b is None else round(a - b, 1)
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def report(fig: dict[str, Any]) -> str:
    lines = [f"{'#':>2} {'question':40} {'heard':36} {'page e2e':>9} {'board e2e':>9} {'path':>6} {'local e2e':>9}"]
    lines.append("-" * len(lines[0]))
    local_turns = fig.get("local", {}).get("turns", [])
    for i, t in enumerate(fig["web"]["turns"]):
        le = local_turns[i]["e2e_ms"] if i < len(local_turns) else None
        path = None if t["e2e_ms"] is None or t["board_e2e_ms"] is None else t["e2e_ms"] - t["board_e2e_ms"]
        lines.append(f"{i + 1:>2} {t['question'][:40]:40} {t['heard'][:36]:36} {_ms(t['e2e_ms']):>9} "
                     f"{_ms(t['board_e2e_ms']):>9} {_ms(path):>6} {_ms(le):>9}")
    lines.append("")
    lines.append(f"browser (end of speech in the page's mic -> first agent audio in the page): "
                 f"p50 {_ms(fig['web_p50_ms'])} ms, p90 {_ms(fig['web_p90_ms'])} ms, "
                 f"answered {fig['web']['answered']}/{fig['questions']}")
    verdict = "ok" if "path_p50_ms" not in fig["missed"] else "MISSED"
    lines.append(f"of which the browser path (page e2e - the board's own e2e, same turns): "
                 f"p50 {_ms(fig['web']['path_p50_ms'])} ms (limit {fig['limit_path_ms']:g} ms): {verdict}")
    if "local" in fig:
        lines.append(f"local   (end of speech at the mic -> first agent audio at the speaker): "
                     f"p50 {_ms(fig['local_p50_ms'])} ms, p90 {_ms(fig['local_p90_ms'])} ms")
        lines.append(f"browser run minus local run at p50: {_ms(fig['added_p50_ms'])} ms "
                     "(Chromium shares the CPU in the browser run)")
    return "\n".join(lines)
