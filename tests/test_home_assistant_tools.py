"""Home Assistant's devices as the agent's tools, against a stand-in speaking Home Assistant's REST API
on 127.0.0.1 (tests/home_assistant_server.py): control, reads, the conversation API, and the
failures the user must hear about (wrong token, a slow instance, an unknown device, no server)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from home_assistant_server import TOKEN, FakeHomeAssistant

from edgeagent import config as config_mod
from edgeagent.config_home_assistant import HomeAssistantConfig
from edgeagent.control import keys
from edgeagent.errors import ConfigError
from edgeagent.home_assistant.client import REFUSED, TOO_SLOW, UNREACHABLE
from edgeagent.home_assistant.tools import home_assistant_tools
from edgeagent.llm.tools import FunctionTool


@pytest_asyncio.fixture(loop_scope="function")  # the test's own loop serves it
async def ha() -> AsyncIterator[FakeHomeAssistant]:
    server = await asyncio.wait_for(FakeHomeAssistant().start(), 10)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


def tools_for(url: str, token: str = TOKEN, timeout_s: float = 2.0) -> dict[str, FunctionTool]:
    cfg = HomeAssistantConfig(url=url, token=token, timeout_s=timeout_s)
    return {t.name: t for t in home_assistant_tools(cfg)}


async def call(tool: FunctionTool, arguments: str, limit: float = 10.0) -> str:
    """The tool called as the LLM calls it (JSON arguments), bounded."""
    result = await asyncio.wait_for(tool.call(arguments), limit)
    assert isinstance(result, str)
    return result


async def test_the_tools_control_and_read_devices(ha: FakeHomeAssistant) -> None:
    tools = tools_for(ha.url)
    assert sorted(tools) == sorted(("list_devices", "turn_on", "turn_off", "set_brightness", "read_sensor",
                                    "ask_home_assistant"))
    assert tools["turn_on"].schema()["function"]["parameters"]["required"] == ["device"]

    assert await call(tools["turn_on"], '{"device": "kitchen light"}') == "The Kitchen Light is on."
    assert ha.calls[-1] == ("light", "turn_on", {"entity_id": "light.kitchen"})
    assert ha.states["light.kitchen"]["state"] == "on"
    assert await call(tools["turn_off"], '{"device": "switch.coffee_maker"}') == "The Coffee Maker is off."
    assert ha.calls[-1] == ("switch", "turn_off", {"entity_id": "switch.coffee_maker"})
    said = await call(tools["set_brightness"], '{"device": "Kitchen", "percent": 40}')
    assert said == "The Kitchen Light is at 40 percent."
    assert ha.calls[-1] == ("light", "turn_on", {"entity_id": "light.kitchen", "brightness_pct": 40})
    said = await call(tools["read_sensor"], '{"device": "living room temperature"}')
    assert said == "The Living Room Temperature is 21.5 °C."
    listed = await call(tools["list_devices"], '{"domain": "light"}')
    assert listed == "Kitchen Light (light.kitchen) is on."
    assert "Coffee Maker" in await call(tools["list_devices"], "{}")
    said = await call(tools["ask_home_assistant"], '{"command": "is the garage door open"}')
    assert said == "The garage door is closed."
    assert ha.conversations == [{"text": "is the garage door open", "language": "en"}]


async def test_an_unknown_device_is_said_and_nothing_is_called(ha: FakeHomeAssistant) -> None:
    tools = tools_for(ha.url)
    said = await call(tools["turn_on"], '{"device": "light.attic"}')  # 404 from /api/states/light.attic
    assert said == "Home Assistant has no device called light.attic."
    said = await call(tools["read_sensor"], '{"device": "garden humidity"}')  # no such friendly name
    assert said == "Home Assistant has no device called garden humidity."
    assert ha.calls == []


async def test_a_wrong_token_is_said(ha: FakeHomeAssistant) -> None:
    tools = tools_for(ha.url, token="not-the-token")
    for name, args in (("turn_on", '{"device": "kitchen light"}'), ("ask_home_assistant", '{"command": "hi"}'),
                       ("list_devices", "{}")):
        assert await call(tools[name], args) == REFUSED, name
    assert ha.calls == [] and ha.conversations == []


async def test_a_slow_home_assistant_is_said_within_the_timeout(ha: FakeHomeAssistant) -> None:
    ha.delay_s = 5.0
    tools = tools_for(ha.url, timeout_s=0.5)
    t0 = time.monotonic()
    said = await call(tools["turn_on"], '{"device": "kitchen light"}')
    took = time.monotonic() - t0
    assert said == TOO_SLOW
    assert took < 1.5, f"the tool answered after {took:.2f} s with a 0.5 s timeout"


async def test_an_unreachable_home_assistant_is_said() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tools = tools_for(f"http://127.0.0.1:{port}")
    assert await call(tools["read_sensor"], '{"device": "sensor.x"}') == UNREACHABLE


def test_the_token_is_a_secret_and_the_config_is_checked() -> None:
    assert "home_assistant.token" in keys.SECRETS | keys.HIDDEN
    cfg = config_mod.load(None, env={}, overrides=["home_assistant.url=http://ha.local:8123",
                                                   f"home_assistant.token={TOKEN}"])
    shown = keys.redact(config_mod.to_dict(cfg))
    assert shown["home_assistant"]["token"] == keys.REDACTED and TOKEN not in repr(shown)
    assert len(home_assistant_tools(cfg.home_assistant)) == 6
    assert home_assistant_tools(config_mod.Config().home_assistant) == []
    with pytest.raises(ConfigError, match=r"home_assistant\.token"):
        config_mod.load(None, env={}, overrides=["home_assistant.url=http://ha.local:8123"])
    with pytest.raises(ConfigError, match=r"home_assistant\.url"):
        config_mod.load(None, env={}, overrides=["home_assistant.url=ha.local", "home_assistant.token=x"])


async def test_a_remote_change_gives_the_agent_new_tools(ha: FakeHomeAssistant) -> None:
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
    use_home_assistant(agent, HomeAssistantConfig(url=ha.url, token=TOKEN))  # the token fixed remotely
    tools = {t.name: t for t in agent.tools}
    assert len(tools) == 7 and await call(tools["turn_on"], '{"device": "kitchen light"}') == "The Kitchen Light is on."
    use_home_assistant(agent, HomeAssistantConfig())  # the url removed: no Home Assistant tools
    assert [t.name for t in agent.tools] == ["get_time"]


async def test_the_local_model_turns_on_the_kitchen_light(ha: FakeHomeAssistant) -> None:
    """The packaged local LLM (SmolLM2, temperature 0), given the tools and the default
    instructions, calls turn_on for "Turn on the kitchen light." (it names the device
    "kitchen_light", which finds the friendly name) and answers with the result."""
    from edgeagent.config_voice import AgentConfig
    from edgeagent.llm.chat import ChatContext
    from edgeagent.registry import create

    tools = tuple(tools_for(ha.url).values())
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
        assert ha.calls == [("light", "turn_on", {"entity_id": "light.kitchen"})]
        ctx.add("assistant", tool_calls=tuple(calls))
        ctx.add("tool", result, tool_call_id=calls[0].id)
        answer, more = await asyncio.wait_for(reply(), 120)
        assert not more and "light" in answer.lower(), answer
    finally:
        await asyncio.wait_for(llm.aclose(), 30)
