"""Home Assistant: its devices as the agent's tools, and the board as its Wyoming voice satellite.

- :mod:`edgeagent.home_assistant.client`: the REST API (states, services, conversation), bounded
  by a timeout, every failure one spoken sentence;
- :mod:`edgeagent.home_assistant.tools`: the function tools the local agent gets with
  ``[home_assistant]`` url and token;
- :mod:`edgeagent.home_assistant.server`: the Wyoming satellite server and its zeroconf
  advertisement;
- :mod:`edgeagent.home_assistant.satellite`: the satellite itself: local wake word, VAD, echo
  cancellation and barge-in, Home Assistant's pipeline answering (``home_assistant.satellite``);
- :mod:`edgeagent.home_assistant.job`: ``edgeagent run`` as the satellite on the sound devices.

Needs the ``home_assistant`` extra (wyoming, zeroconf, aiohttp), part of the device stack.
"""

from edgeagent.home_assistant.client import HomeAssistant, HomeAssistantError
from edgeagent.home_assistant.tools import HomeAssistantTools, home_assistant_tools

__all__ = ["HomeAssistant", "HomeAssistantError", "HomeAssistantTools", "home_assistant_tools"]
