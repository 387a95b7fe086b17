"""Home Assistant's devices as function tools of the local agent (``[home_assistant]`` url and token).

    tools = home_assistant_tools(cfg.home_assistant)   # () when no url is set
    agent = Agent(instructions=..., tools=tools)

The tools: ``list_devices`` (entities, optionally of one domain), ``turn_on``, ``turn_off``,
``set_brightness`` (a light, in percent), ``read_sensor`` (a state with its unit) and
``ask_home_assistant`` (a command passed to Home Assistant's conversation API, for what the
local model cannot do with the others). A device is named by its entity_id
(``light.kitchen``) or its friendly name ("kitchen light"), as the user says it.

Each tool returns one short sentence for the model to say. A failure (wrong token, no answer
within ``timeout_s``, Home Assistant unreachable, an unknown device) is such a sentence too
(:class:`~edgeagent.home_assistant.client.HomeAssistantError` ``spoken``), never an exception
or a wait longer than the timeout: the user always hears what happened.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from edgeagent.config.home_assistant import HomeAssistantConfig
from edgeagent.home_assistant.client import HomeAssistant, HomeAssistantError, UnknownEntity
from edgeagent.llm.tools import FunctionTool, function_tool

log = logging.getLogger(__name__)

MAX_LISTED = 20
"""list_devices names at most this many entities (a voice answer, not a table)."""
SWITCHABLE = frozenset(("light", "switch", "fan", "input_boolean", "media_player", "climate", "cover", "lock"))
"""Domains whose own turn_on/turn_off services are used; others go through homeassistant.turn_*."""


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _name(state: dict[str, Any]) -> str:
    attrs = state.get("attributes") or {}
    name = attrs.get("friendly_name") if isinstance(attrs, dict) else None
    return str(name) if name else str(state["entity_id"])


def _matches(state: dict[str, Any], key: str, rank: int) -> bool:
    if rank == 0:
        return _norm(_name(state)) == key
    if rank == 1:
        return _norm(str(state["entity_id"]).split(".", 1)[-1]) == key
    return bool(key) and key in _norm(_name(state))


async def _spoken(work: Callable[[], Awaitable[str]]) -> str:
    """``work``'s sentence, or the sentence that says why it failed."""
    try:
        return await work()
    except HomeAssistantError as exc:
        log.warning("home assistant: %s", exc)
        return exc.spoken


class HomeAssistantTools:
    """The tools on one :class:`HomeAssistant` client; :meth:`tools` lists them bound."""

    NAMES = ("list_devices", "turn_on", "turn_off", "set_brightness", "read_sensor", "ask_home_assistant")

    def __init__(self, client: HomeAssistant) -> None:
        self.client = client

    def tools(self) -> list[FunctionTool]:
        found = [getattr(type(self), name) for name in self.NAMES]
        return [t.bind(self) for t in found if isinstance(t, FunctionTool)]

    async def find(self, device: str) -> dict[str, Any]:
        """The state of the entity the user named (entity_id or friendly name)."""
        wanted = device.strip()
        if re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", wanted):
            return await self.client.state(wanted)
        key = _norm(wanted)
        states = await self.client.states()
        # The friendly name as said, then the entity's object id, then a name that contains it.
        for rank in range(3):
            hits = [s for s in states if _matches(s, key, rank)]
            if hits:
                return hits[0]
        raise UnknownEntity(f"Home Assistant has no device called {wanted}.")

    async def _switch(self, device: str, service: str) -> str:
        state = await self.find(device)
        entity_id = str(state["entity_id"])
        domain = entity_id.split(".", 1)[0]
        await self.client.call(domain if domain in SWITCHABLE else "homeassistant", service, {"entity_id": entity_id})
        return f"The {_name(state)} is {'on' if service == 'turn_on' else 'off'}."

    @function_tool
    async def list_devices(self, domain: str | None = None) -> str:
        """List the devices Home Assistant knows and their states.

        Args:
            domain: only this kind of device, e.g. light, switch or sensor (optional).
        """
        async def work() -> str:
            states = await self.client.states()
            if domain:
                states = [s for s in states if s["entity_id"].startswith(domain.strip().lower() + ".")]
            if not states:
                return "Home Assistant has no such devices."
            named = [f"{_name(s)} ({s['entity_id']}) is {s.get('state', 'unknown')}" for s in states[:MAX_LISTED]]
            more = f", and {len(states) - MAX_LISTED} more" if len(states) > MAX_LISTED else ""
            return "; ".join(named) + more + "."
        return await _spoken(work)

    @function_tool
    async def turn_on(self, device: str) -> str:
        """Turn a device on (a light, switch, fan ...) in Home Assistant.

        Args:
            device: its name as the user said it (kitchen light) or its entity_id (light.kitchen).
        """
        return await _spoken(lambda: self._switch(device, "turn_on"))

    @function_tool
    async def turn_off(self, device: str) -> str:
        """Turn a device off in Home Assistant.

        Args:
            device: its name as the user said it (kitchen light) or its entity_id (light.kitchen).
        """
        return await _spoken(lambda: self._switch(device, "turn_off"))

    @function_tool
    async def set_brightness(self, device: str, percent: int) -> str:
        """Set the brightness of a light in Home Assistant.

        Args:
            device: the light, as the user named it or its entity_id.
            percent: brightness from 0 to 100.
        """
        async def work() -> str:
            state = await self.find(device)
            level = max(0, min(100, percent))
            await self.client.call("light", "turn_on", {"entity_id": state["entity_id"], "brightness_pct": level})
            return f"The {_name(state)} is at {level} percent."
        return await _spoken(work)

    @function_tool
    async def read_sensor(self, device: str) -> str:
        """Read the current value of a sensor (temperature, humidity ...) or the state of any device.

        Args:
            device: the sensor, as the user named it or its entity_id.
        """
        async def work() -> str:
            state = await self.find(device)
            attrs = state.get("attributes") or {}
            unit = attrs.get("unit_of_measurement", "") if isinstance(attrs, dict) else ""
            return f"The {_name(state)} is {state.get('state', 'unknown')}{' ' + unit if unit else ''}."
        return await _spoken(work)

    @function_tool
    async def ask_home_assistant(self, command: str) -> str:
        """Pass a request about the home to Home Assistant's own assistant, when no other tool fits.

        Args:
            command: the user's request, in their words.
        """
        return await _spoken(lambda: self.client.converse(command))


def home_assistant_tools(cfg: HomeAssistantConfig) -> list[FunctionTool]:
    """The tools for ``cfg`` (none without a url and token)."""
    if not cfg.url or not cfg.token:
        return []
    client = HomeAssistant(cfg.url, cfg.token, timeout_s=cfg.timeout_s, agent_id=cfg.conversation_agent)
    return HomeAssistantTools(client).tools()


def use_home_assistant(agent: Any, cfg: HomeAssistantConfig) -> None:
    """Give ``agent`` (an :class:`~edgeagent.voice.agent.Agent`) the tools for ``cfg`` in place of
    the Home Assistant tools it has (none when ``cfg`` has no url): a remote change of the url,
    token or timeout takes effect from the next LLM round."""
    kept = tuple(t for t in agent.tools if t.name not in HomeAssistantTools.NAMES)
    agent.tools = (*kept, *home_assistant_tools(cfg))
