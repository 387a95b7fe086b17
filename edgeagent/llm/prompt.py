"""Turn a ChatContext (and tools) into the prompt text a GGUF model expects.

Two formats:

- ``chatml``: ``<|im_start|>role\\n...<|im_end|>\\n`` turns (SmolLM2, Qwen2.5,
  Hermes), written here directly so the text of earlier turns never changes
  between calls and the KV cache of the unchanged prefix can be reused;
- ``jinja``: the GGUF's own ``tokenizer.chat_template``, rendered with jinja2,
  for models in other formats.

Tools are described in the system prompt and calls and results are written as
text (see :mod:`edgeagent.llm.toolcall`); the tool role becomes a user turn
holding ``<tool_response>`` blocks. Message contents are stripped, and ChatML
turn markers inside them are dropped (text cannot open a turn of its own).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeagent.errors import ConfigError
from edgeagent.llm import toolcall
from edgeagent.llm.chat import ChatMessage
from edgeagent.llm.tools import FunctionTool

FORMATS = ("chatml", "jinja")
_MARK = "\x00EDGEAGENT-USER-TEXT\x00"


@dataclass(frozen=True)
class TurnPrefix:
    """A user turn cut right after its text: the prompt and the text that would end the turn."""

    prompt: str
    turn_end: str


class ChatTemplate:
    """Renders messages for one model; build it with :func:`template_for`."""

    def __init__(self, fmt: str, default_system: str = "", jinja_source: str = "",
                 bos: str = "", eos: str = "") -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown chat_format {fmt!r}; known: {', '.join(FORMATS)}")
        if fmt == "jinja" and not jinja_source:
            raise ConfigError("chat_format 'jinja' needs the GGUF's tokenizer.chat_template, and this model has none")
        self.format = fmt
        self.default_system = default_system
        self._jinja: Any = None
        if fmt == "jinja":
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._jinja = env.from_string(jinja_source)
        self._bos, self._eos = bos, eos

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool] = (),
               add_generation_prompt: bool = True) -> str:
        """The prompt text; with ``add_generation_prompt`` it ends where the assistant's reply starts."""
        plain = _plain_messages(messages, tools, self.default_system)
        if self.format == "chatml":
            text = "".join(f"<|im_start|>{m['role']}\n{_no_markers(m['content'])}<|im_end|>\n" for m in plain)
            return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
        out: str = self._jinja.render(messages=plain, add_generation_prompt=add_generation_prompt,
                                      bos_token=self._bos, eos_token=self._eos)
        return out

    def user_turn_prefix(self, messages: Sequence[ChatMessage], user_text: str,
                         tools: Sequence[FunctionTool] = ()) -> TurnPrefix:
        """The prompt up to the end of a new user turn's text, and what the template writes next."""
        full = self.render([*messages, ChatMessage("user", _MARK)], tools, add_generation_prompt=False)
        head, _, tail = full.rpartition(_MARK)
        text = user_text.strip()
        return TurnPrefix(prompt=head + (_no_markers(text) if self.format == "chatml" else text), turn_end=tail)


def _no_markers(text: str) -> str:
    """Turn markers inside a message would be parsed as special tokens: drop them."""
    return text.replace("<|im_start|>", "").replace("<|im_end|>", "")


def _plain_messages(messages: Sequence[ChatMessage], tools: Sequence[FunctionTool],
                    default_system: str) -> list[dict[str, str]]:
    """Messages as plain role/content dicts: tools in the system prompt, tool calls and results as text."""
    msgs = list(messages)
    system = default_system
    if msgs and msgs[0].role == "system":
        system = msgs.pop(0).content.strip()
    if tools:
        system = f"{system}\n\n{toolcall.tools_prompt(tools)}" if system else toolcall.tools_prompt(tools)
    out: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for m in msgs:
        if m.role == "tool":
            block = toolcall.response_text(m)
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            continue
        content = m.content.strip()
        if m.tool_calls:
            content = (content + "\n" if content else "") + toolcall.call_text(m.tool_calls)
        out.append({"role": m.role, "content": content})
    return out


def template_for(metadata: dict[str, str], chat_format: str | None = None,
                 bos: str = "", eos: str = "") -> ChatTemplate:
    """The template for a GGUF, from its metadata; ``chat_format`` overrides the guess.

    ChatML is chosen when the GGUF's template uses ``<|im_start|>`` (or has no
    template at all); its default system prompt (SmolLM2 has one) is kept.
    """
    source = metadata.get("tokenizer.chat_template", "")
    fmt = chat_format or ("chatml" if not source or "<|im_start|>" in source else "jinja")
    default_system = ""
    if fmt == "chatml":
        m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", source, re.S)
        default_system = m.group(1).strip() if m else ""
    return ChatTemplate(fmt, default_system, source, bos, eos)
