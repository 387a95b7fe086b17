"""Home Assistant's REST API, the few endpoints the agent's tools use.

    ha = HomeAssistant("http://homeassistant.local:8123", token, timeout_s=5.0)
    states = await ha.states()                               # GET  /api/states
    state = await ha.state("light.kitchen")                  # GET  /api/states/<entity_id>
    await ha.call("light", "turn_on", {"entity_id": "light.kitchen", "brightness_pct": 40})
    speech = await ha.converse("turn on the kitchen light")  # POST /api/conversation/process

Every request carries the long-lived token as a bearer token and is bounded by ``timeout_s``
(connecting included). A failure raises :class:`HomeAssistantError`, whose ``spoken`` is one
short sentence for the user: wrong token (401/403), no answer in time, not reachable, an entity
Home Assistant does not know (404), or another error status. Nothing waits longer than
``timeout_s``; nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)


class HomeAssistantError(EdgeAgentError):
    """A request to Home Assistant failed; ``spoken`` says so in one sentence for the user."""

    def __init__(self, spoken: str, detail: str = "") -> None:
        super().__init__(f"{spoken} ({detail})" if detail else spoken)
        self.spoken = spoken


class UnknownEntity(HomeAssistantError):
    """Home Assistant has no such entity."""


REFUSED = "Home Assistant refused my access token, so I cannot do that."
TOO_SLOW = "Home Assistant did not answer in time, so I could not do that."
UNREACHABLE = "I cannot reach Home Assistant right now."


class HomeAssistant:
    """A client of one Home Assistant instance (a new HTTP session per request: calls are rare)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 5.0, agent_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.agent_id = agent_id

    def __repr__(self) -> str:  # never the token
        return f"HomeAssistant({self.url!r}, timeout_s={self.timeout_s})"

    async def states(self) -> list[dict[str, Any]]:
        found = await self._request("GET", "/api/states")
        return [s for s in found if isinstance(s, dict) and "entity_id" in s] if isinstance(found, list) else []

    async def state(self, entity_id: str) -> dict[str, Any]:
        found = await self._request("GET", f"/api/states/{entity_id}", entity=entity_id)
        if not isinstance(found, dict):
            raise HomeAssistantError("Home Assistant gave an answer I do not understand.", "state is not an object")
        return found

    async def call(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        return await self._request("POST", f"/api/services/{domain}/{service}", body=data)

    async def converse(self, text: str, language: str = "en") -> str:
        """Home Assistant's conversation agent's spoken answer to ``text``."""
        body: dict[str, Any] = {"text": text, "language": language}
        if self.agent_id:
            body["agent_id"] = self.agent_id
        found = await self._request("POST", "/api/conversation/process", body=body)
        try:
            speech = found["response"]["speech"]["plain"]["speech"]
        except (KeyError, TypeError):
            speech = None
        if not isinstance(speech, str) or not speech.strip():
            raise HomeAssistantError("Home Assistant had no answer to that.", f"conversation answer: {found!r:.200}")
        return speech.strip()

    async def _request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                       entity: str | None = None) -> Any:
        import aiohttp

        headers = {"Authorization": f"Bearer {self._token}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.request(method, self.url + path, json=body, headers=headers) as resp:
                if resp.status in (401, 403):
                    raise HomeAssistantError(REFUSED, f"{method} {path}: HTTP {resp.status}")
                if resp.status == 404 and entity is not None:
                    raise UnknownEntity(f"Home Assistant has no device called {entity}.", f"{path}: 404")
                if resp.status >= 400:
                    raise HomeAssistantError(f"Home Assistant answered with error {resp.status}.",
                                             f"{method} {path}: {(await resp.text())[:200]}")
                return await resp.json(content_type=None)
        except HomeAssistantError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise HomeAssistantError(TOO_SLOW, f"{method} {path}: no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise HomeAssistantError(UNREACHABLE, f"{method} {path}: {exc}") from None
        except ValueError as exc:  # not JSON
            raise HomeAssistantError("Home Assistant gave an answer I do not understand.", str(exc)) from None

