"""Home Assistant's devices as the agent's tools, against a real Home Assistant Core 2024.3.3 on
127.0.0.1 (tests/real_home_assistant.py, installed by scripts/install-home-assistant): control,
reads, the conversation API, and the failures the user must hear about (wrong token, a slow
instance, an unknown device, no server).

One Home Assistant serves the whole module (up, onboarded, with a token in about 1.5 s here);
each test starts from the same entity states, set through its API (``ha`` fixture)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from real_home_assistant import RealHomeAssistant

from edgeagent import config as config_mod
from edgeagent.config.home_assistant import HomeAssistantConfig
from edgeagent.control import keys
from edgeagent.errors import ConfigError
from edgeagent.home_assistant.client import REFUSED, TOO_SLOW, UNREACHABLE
from edgeagent.home_assistant.tools import home_assistant_tools
from edgeagent.llm.tools import FunctionTool


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hass(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealHomeAssistant]:
    """``hass`` started once for this module (its start, onboarding included, is printed), stopped by PID."""
    config_dir: Path = tmp_path_factory.mktemp("home-assistant")
    server = await asyncio.wait_for(RealHomeAssistant.start(config_dir), 120)
    print(f"Home Assistant pid {server.pid} at {server.url}: up with a token in {server.start_s:.1f} s")
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 60)


@pytest_asyncio.fixture(loop_scope="function")
async def ha(hass: RealHomeAssistant) -> RealHomeAssistant:
    """The module's Home Assistant, its light and switch off."""
    await asyncio.wait_for(hass.reset(), 30)
    return hass


def tools_for(url: str, token: str, timeout_s: float = 2.0) -> dict[str, FunctionTool]:
    cfg = HomeAssistantConfig(url=url, token=token, timeout_s=timeout_s)
    return {t.name: t for t in home_assistant_tools(cfg)}


async def call(tool: FunctionTool, arguments: str, limit: float = 10.0) -> str:
    """The tool called as the LLM calls it (JSON arguments), bounded."""
    result = await asyncio.wait_for(tool.call(arguments), limit)
    assert isinstance(result, str)
    return result


async def state(ha: RealHomeAssistant, entity_id: str) -> dict[str, Any]:
    return await asyncio.wait_for(ha.state(entity_id), 15)


async def snapshot(ha: RealHomeAssistant) -> dict[str, tuple[str, str]]:
    return await asyncio.wait_for(ha.snapshot(), 15)


async def test_the_tools_control_and_read_devices(ha: RealHomeAssistant) -> None:
    tools = tools_for(ha.url, ha.token)
    assert sorted(tools) == sorted(("list_devices", "turn_on", "turn_off", "set_brightness", "read_sensor",
                                    "ask_home_assistant"))
    assert tools["turn_on"].schema()["function"]["parameters"]["required"] == ["device"]

    assert await call(tools["turn_on"], '{"device": "kitchen light"}') == "The Kitchen Light is on."
    assert (await state(ha, "light.kitchen"))["state"] == "on"
    assert await call(tools["turn_on"], '{"device": "switch.coffee_maker"}') == "The Coffee Maker is on."
    assert (await state(ha, "switch.coffee_maker"))["state"] == "on"
    assert await call(tools["turn_off"], '{"device": "switch.coffee_maker"}') == "The Coffee Maker is off."
    assert (await state(ha, "switch.coffee_maker"))["state"] == "off"
    said = await call(tools["set_brightness"], '{"device": "Kitchen", "percent": 40}')
    assert said == "The Kitchen Light is at 40 percent."
    light = await state(ha, "light.kitchen")
    assert light["state"] == "on" and light["attributes"]["brightness"] == 102  # 40 % of 255
    said = await call(tools["read_sensor"], '{"device": "living room temperature"}')
    assert said == "The Living Room Temperature is 21.5 °C."
    listed = await call(tools["list_devices"], '{"domain": "light"}')
    assert listed == "Kitchen Light (light.kitchen) is on."
    assert "Coffee Maker (switch.coffee_maker) is off" in await call(tools["list_devices"], "{}")
    # Home Assistant's own conversation agent (hassil and its English intents) does it and says so.
    said = await call(tools["ask_home_assistant"], '{"command": "turn on the coffee maker"}')
    assert said == "Turned on the switch"
    assert (await state(ha, "switch.coffee_maker"))["state"] == "on"


async def test_an_unknown_device_is_said_and_nothing_is_called(ha: RealHomeAssistant) -> None:
    tools = tools_for(ha.url, ha.token)
    before = await snapshot(ha)
    said = await call(tools["turn_on"], '{"device": "light.attic"}')  # 404 from /api/states/light.attic
    assert said == "Home Assistant has no device called light.attic."
    said = await call(tools["read_sensor"], '{"device": "garden humidity"}')  # no such friendly name
    assert said == "Home Assistant has no device called garden humidity."
    assert await snapshot(ha) == before  # no entity was switched or even written


async def test_a_wrong_token_is_said(ha: RealHomeAssistant) -> None:
    tools = tools_for(ha.url, token="not-the-token")
    before = await snapshot(ha)
    for name, args in (("turn_on", '{"device": "kitchen light"}'),
                       ("ask_home_assistant", '{"command": "turn on the kitchen light"}'), ("list_devices", "{}")):
        assert await call(tools[name], args) == REFUSED, name
    assert await snapshot(ha) == before


async def test_a_slow_home_assistant_is_said_within_the_timeout(ha: RealHomeAssistant) -> None:
    """The real Home Assistant made slow: its process is stopped (SIGSTOP), so the kernel still
    accepts the connection but nothing answers, then it is continued (SIGCONT)."""
    tools = tools_for(ha.url, ha.token, timeout_s=0.5)
    ha.pause()
    try:
        t0 = time.monotonic()
        said = await call(tools["turn_on"], '{"device": "kitchen light"}')
        took = time.monotonic() - t0
    finally:
        ha.resume()
    assert said == TOO_SLOW
    assert took < 1.5, f"the tool answered after {took:.2f} s with a 0.5 s timeout"
    assert (await state(ha, "light.kitchen"))["state"] == "off"


async def test_an_unreachable_home_assistant_is_said() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tools = tools_for(f"http://127.0.0.1:{port}", "any-token")
    assert await call(tools["read_sensor"], '{"device": "sensor.x"}') == UNREACHABLE


def test_the_token_is_a_secret_and_the_config_is_checked() -> None:
    token = "a-long-lived-token"
    assert "home_assistant.token" in keys.SECRETS | keys.HIDDEN
    cfg = config_mod.load(None, env={}, overrides=["home_assistant.url=http://ha.local:8123",
                                                   f"home_assistant.token={token}"])
    shown = keys.redact(config_mod.to_dict(cfg))
    assert shown["home_assistant"]["token"] == keys.REDACTED and token not in repr(shown)
    assert len(home_assistant_tools(cfg.home_assistant)) == 6
    assert home_assistant_tools(config_mod.Config().home_assistant) == []
    with pytest.raises(ConfigError, match=r"home_assistant\.token"):
        config_mod.load(None, env={}, overrides=["home_assistant.url=http://ha.local:8123"])
    with pytest.raises(ConfigError, match=r"home_assistant\.url"):
        config_mod.load(None, env={}, overrides=["home_assistant.url=ha.local", "home_assistant.token=x"])


async def test_a_remote_change_gives_the_agent_new_tools(ha: RealHomeAssistant) -> None:
    """url, token and timeout are hot remote settings (the token only with control.allow_secrets):
    the running agent's Home Assistant tools are made anew, its other tools stay."""
    from edgeagent.control import live
    from edgeagent.home_assistant.tools import use_home_assistant
    from edgeagent.llm.tools import function_tool
    from edgeagent.voice.agent import Agent

    assert {"home_assistant.url", "home_assistant.token", "home_assistant.timeout_s"} <= keys.HOT
    assert "home_assistant.token" in keys.SECRETS and "home_assistant.satellite" not in keys.SETTABLE
    assert live.unapplied(keys.HOT) == set()

    @function_tool
    async def get_time() -> str:
        """The time."""
        return "noon"

    agent = Agent(instructions="Help.", tools=[get_time])
    use_home_assistant(agent, HomeAssistantConfig(url=ha.url, token="not-the-token"))
    tools = {t.name: t for t in agent.tools}
    assert len(tools) == 7 and await call(tools["turn_on"], '{"device": "kitchen light"}') == REFUSED
    use_home_assistant(agent, HomeAssistantConfig(url=ha.url, token=ha.token))  # the token fixed remotely
    tools = {t.name: t for t in agent.tools}
    assert len(tools) == 7 and await call(tools["turn_on"], '{"device": "kitchen light"}') == "The Kitchen Light is on."
    assert (await state(ha, "light.kitchen"))["state"] == "on"
    use_home_assistant(agent, HomeAssistantConfig())  # the url removed: no Home Assistant tools
    assert [t.name for t in agent.tools] == ["get_time"]


async def test_the_local_model_turns_on_the_kitchen_light(ha: RealHomeAssistant) -> None:
    """The packaged local LLM (SmolLM2, temperature 0), given the tools and the default
    instructions, calls turn_on for "Turn on the kitchen light." (it names the device
    "kitchen_light", which finds the friendly name) and answers with the result."""
    from edgeagent.config.voice import AgentConfig
    from edgeagent.llm.chat import ChatContext
    from edgeagent.registry import create

    tools = tuple(tools_for(ha.url, ha.token).values())
    llm = create("llm", "llama", temperature=0.0)
    try:
        ctx = ChatContext()
        ctx.add("system", AgentConfig().instructions)
        ctx.add("user", "Turn on the kitchen light.")

        async def reply() -> tuple[str, list[Any]]:
            chunks = [c async for c in llm.chat(ctx, tools)]
            return "".join(c.text for c in chunks), [call for c in chunks for call in c.tool_calls]

        _, calls = await asyncio.wait_for(reply(), 120)
        assert [c.name for c in calls] == ["turn_on"], calls
        result = await call(next(t for t in tools if t.name == "turn_on"), calls[0].arguments)
        assert result == "The Kitchen Light is on."
        assert (await state(ha, "light.kitchen"))["state"] == "on"
        ctx.add("assistant", tool_calls=tuple(calls))
        ctx.add("tool", result, tool_call_id=calls[0].id)
        answer, more = await asyncio.wait_for(reply(), 120)
        assert not more and "light" in answer.lower(), answer
    finally:
        await asyncio.wait_for(llm.aclose(), 30)
