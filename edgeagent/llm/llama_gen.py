"""The generation loop of the llama provider; runs on the stage's inference thread.

One reply: fit the prompt into the window, reuse the cached prefix, then sample
token by token, handing text deltas out as soon as they are whole UTF-8 and
cannot be the start of a tool call, and checking the cancel flag between tokens.

Tool calls, for a model too small to decide them on its own: at the first token
of a turn the *tool gate* compares log P(the first token of ``<tool_call>``)
with the most likely token; within ``tool_margin`` nats the reply becomes a tool
call. Either way, once ``<tool_call>`` is open (forced by the gate or written by
the model) the rest is sampled under the tools' grammar, so calls are always
valid. A gate that says no bans that token at the first position, so plain
text follows.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeagent.errors import EdgeAgentError
from edgeagent.llm import toolcall
from edgeagent.llm.chat import ChatChunk, ChatMessage
from edgeagent.llm.llama_engine import LlamaEngine, Utf8Stream
from edgeagent.llm.prompt import ChatTemplate
from edgeagent.llm.tools import FunctionTool
from edgeagent.urgency import FIRST_AUDIO

log = logging.getLogger(__name__)


class LLMError(EdgeAgentError):
    """Generation failed (prompt too long for the window, llama.cpp error)."""


@dataclass(frozen=True)
class Request:
    messages: tuple[ChatMessage, ...]
    tools: tuple[FunctionTool, ...]
    temperature: float
    max_tokens: int
    allow_tools: bool
    """False once the turn has used its tool steps: the reply must be text."""
    gate: bool
    """First step of a user turn: the tool gate decides between call and text."""


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Settings:
    repeat_penalty: float = 1.0
    tool_margin: float | None = 3.0
    """Gate width in nats; None leaves the decision to the model (native tool callers)."""


Emit = Callable[[ChatChunk], None]


@dataclass
class Window:
    """Which messages the prompt keeps (sticky, so the prefix stays cached): from ``start`` once the
    context window filled or the caller's history slid (see :meth:`Generator.fit`)."""

    start: ChatMessage | None = None
    seen: list[ChatMessage] = field(default_factory=list)
    """The messages after the system prompt in the last prompt fitted."""


class Generator:
    def __init__(self, engine: LlamaEngine, template: ChatTemplate, settings: Settings) -> None:
        self.engine = engine
        self.template = template
        self.settings = settings
        self.window = Window()
        self._open = engine.tokenize(toolcall.OPEN)

    # -- prompt -------------------------------------------------------------

    def fit(self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool], reserve: int,
            render: Callable[[list[ChatMessage]], str]) -> list[int]:
        """Tokens of the prompt, dropping the oldest turns when it does not fit ``n_ctx - reserve``.

        When trimming is needed it cuts to half the window and remembers where it
        cut, so the following turns keep the same (cached) prefix until it fills again.
        """
        head = [m for m in messages[:1] if m.role == "system"]
        body = self._from_start(list(messages[len(head):]))
        limit = self.engine.n_ctx - reserve
        tokens = self.engine.tokenize(render(head + body))
        if len(tokens) <= limit:
            return tokens
        target = min(limit, self.engine.n_ctx // 2)
        while len(tokens) > target:
            rest = body[1:]
            while rest and rest[0].role != "user":
                rest = rest[1:]
            if not rest:
                if len(tokens) <= limit:
                    break
                raise LLMError(f"the prompt ({len(tokens)} tokens) does not fit the context window "
                               f"({self.engine.n_ctx} tokens, {reserve} kept for the reply); raise n_ctx")
            body = rest
            tokens = self.engine.tokenize(render(head + body))
        self.window.start, self.window.seen = body[0], body
        log.info("context window full: kept %d of %d messages (%d tokens)",
                 len(head + body), len(messages), len(tokens))
        return tokens

    def _from_start(self, body: list[ChatMessage]) -> list[ChatMessage]:
        """``body`` from the window's start. A caller that bounds its history (a session keeps
        its last 64 messages) drops its oldest message at each new one: a prompt from there would
        change right after the system prompt every turn and evaluate the whole history again
        (~5 s here, 2 cores, once 64 messages are reached: scripts/soak). When the first message of the last
        prompt is gone while the conversation goes on, the prompt starts half way through the
        history instead, at a user turn, and stays there until that message is gone too: one
        evaluation of half the history every ~half a history, not of all of it every turn."""
        w = self.window
        if w.start is not None and any(m is w.start for m in body):
            body = body[next(i for i, m in enumerate(body) if m is w.start):]
        elif (w.seen and not any(m is w.seen[0] for m in body)
              and any(m is s for s in w.seen[1:] for m in body)):  # its start is gone, the conversation goes on
            rest = body[len(body) // 2:]
            while rest and rest[0].role != "user":
                rest = rest[1:]
            w.start = rest[0] if rest else None
            if rest:
                log.info("history slid: the prompt starts at message %d of %d", len(body) - len(rest) + 1,
                         len(body))
                body = rest
        else:
            w.start = None
        w.seen = body
        return body

    def reply_reserve(self, max_tokens: int) -> int:
        """Tokens a prompt leaves free for its reply: ``max_tokens``, at most a quarter of the window."""
        return min(max_tokens, self.engine.n_ctx // 4)

    # -- one reply ----------------------------------------------------------

    def run(self, req: Request, emit: Emit, cancel: threading.Event, stats: Stats) -> None:
        eng = self.engine
        reserve = self.reply_reserve(req.max_tokens)
        prompt = self.fit(req.messages, req.tools, reserve, lambda ms: self.template.render(ms, req.tools))
        stats.prompt_tokens = len(prompt)
        stats.cached_tokens = eng.prefill(prompt)
        if cancel.is_set():
            return
        tools = req.tools if req.allow_tools else ()
        if tools and req.gate and self._gate_says_call():
            if self._tool_call(len(prompt), self._open, req, emit, cancel, stats):
                return
            eng.prefill(prompt)  # the model wrote an empty list: answer in text instead
        if req.tools and (self.settings.tool_margin is not None or not req.allow_tools):
            # text it is: in gate mode (and once the tool steps are used up) a reply never starts with the tag
            eng.logits()[self._open[0]] = -math.inf
        self._text(len(prompt), tools, req, emit, cancel, stats)

    def _gate_says_call(self) -> bool:
        margin = self.settings.tool_margin
        if margin is None:
            return False
        lp = self.engine.logprobs()
        gap = float(lp.max() - lp[self._open[0]])
        log.debug("tool gate: log P(open) is %.2f below the best token (margin %.2f)", gap, margin)
        return gap <= margin

    def _text(self, start: int, tools: Sequence[FunctionTool], req: Request, emit: Emit,
              cancel: threading.Event, stats: Stats) -> None:
        eng = self.engine
        sampler = eng.sampler(req.temperature, self.settings.repeat_penalty)
        utf8 = Utf8Stream()
        reply, sent = "", 0
        ends: list[int] = []  # len(reply) after each token
        budget = min(req.max_tokens, eng.n_ctx - eng.n_tokens)
        for _ in range(budget):
            if cancel.is_set():
                return
            if sent:  # text is out: a first clause being voiced has the cores first
                FIRST_AUDIO.wait()
            tok = eng.sample(sampler)
            stats.completion_tokens += 1
            if eng.is_end(tok):
                break
            reply += utf8.feed(eng.piece(tok))
            ends.append(len(reply))
            if tools and (at := reply.find(toolcall.OPEN, sent)) >= 0:
                sent = self._send(reply, sent, at, emit)
                j = next(i for i, e in enumerate(ends) if e > at)
                head = reply[(ends[j - 1] if j else 0):at]
                eng.truncate(start + j)
                if not self._tool_call(start + j, eng.tokenize(head + toolcall.OPEN), req, emit, cancel, stats):
                    log.warning("the model opened a tool call and wrote none; reply ends here")
                return
            safe = len(reply)
            if tools and (lt := reply.rfind("<", sent)) >= 0 and toolcall.OPEN.startswith(reply[lt:]):
                safe = lt  # might be the start of <tool_call>: hold it back
            sent = self._send(reply, sent, safe, emit)
            if cancel.is_set():
                return
            eng.eval([tok])
        reply += utf8.finish()
        self._send(reply, sent, len(reply), emit)

    @staticmethod
    def _send(reply: str, sent: int, upto: int, emit: Emit) -> int:
        """Emit ``reply[sent:upto]`` (leading whitespace of the reply dropped); returns ``upto``."""
        text = reply[sent:upto]
        if not reply[:sent].strip():
            text = text.lstrip()
        if text:
            emit(ChatChunk(text=text))
        return max(sent, upto)

    def _tool_call(self, start: int, forced: list[int], req: Request, emit: Emit,
                   cancel: threading.Event, stats: Stats) -> bool:
        """Write the call under the grammar after ``forced`` (ending in ``<tool_call>``); False if none came."""
        eng = self.engine
        eng.truncate(start)
        eng.eval(forced)
        sampler = eng.grammar_sampler(req.temperature, toolcall.grammar(req.tools))
        utf8 = Utf8Stream()
        body = ""
        for _ in range(min(req.max_tokens, eng.n_ctx - eng.n_tokens)):
            if cancel.is_set():
                return True
            tok = eng.sample(sampler)
            stats.completion_tokens += 1
            if eng.is_end(tok):
                break
            body += utf8.feed(eng.piece(tok))
            if toolcall.CLOSE in body:
                break
            eng.eval([tok])
        calls = toolcall.parse_calls(body + utf8.finish(), req.tools)
        if calls:
            emit(ChatChunk(tool_calls=tuple(calls)))
        return bool(calls)
