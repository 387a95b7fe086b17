"""A Home Assistant stand-in on 127.0.0.1: the REST endpoints the agent's tools use.

``GET /api/states``, ``GET /api/states/<entity_id>`` (404 for an unknown one),
``POST /api/services/<domain>/<service>`` (turn_on/turn_off change the state, brightness_pct
too) and ``POST /api/conversation/process``, all behind a bearer token (401 without the right
one), as Home Assistant answers them. ``delay_s`` makes every answer late (a slow instance).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from aiohttp import web

TOKEN = "test-long-lived-token"
STATES: list[dict[str, Any]] = [
    {"entity_id": "light.kitchen", "state": "off", "attributes": {"friendly_name": "Kitchen Light"}},
    {"entity_id": "switch.coffee_maker", "state": "off", "attributes": {"friendly_name": "Coffee Maker"}},
    {"entity_id": "sensor.living_room_temperature", "state": "21.5",
     "attributes": {"friendly_name": "Living Room Temperature", "unit_of_measurement": "°C"}},
]


class FakeHomeAssistant:
    def __init__(self) -> None:
        self.states = {s["entity_id"]: copy.deepcopy(s) for s in STATES}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.conversations: list[dict[str, Any]] = []
        self.delay_s = 0.0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeHomeAssistant:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/states", self._all)
        app.router.add_get("/api/states/{entity_id}", self._one)
        app.router.add_post("/api/services/{domain}/{service}", self._service)
        app.router.add_post("/api/conversation/process", self._converse)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)  # a stalled answer does not hold the teardown
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="401: Unauthorized")
        result: web.StreamResponse = await handler(request)
        return result

    async def _all(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.states.values()))

    async def _one(self, request: web.Request) -> web.Response:
        state = self.states.get(request.match_info["entity_id"])
        if state is None:
            return web.json_response({"message": "Entity not found."}, status=404)
        return web.json_response(state)

    async def _service(self, request: web.Request) -> web.Response:
        domain, service = request.match_info["domain"], request.match_info["service"]
        data = await request.json()
        self.calls.append((domain, service, data))
        state = self.states.get(data.get("entity_id", ""))
        if state is None:
            return web.json_response([])  # Home Assistant changes nothing and says so with []
        if service in ("turn_on", "turn_off"):
            state["state"] = service.removeprefix("turn_")
        if "brightness_pct" in data:
            state["attributes"]["brightness"] = round(255 * data["brightness_pct"] / 100)
        return web.json_response([state])

    async def _converse(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.conversations.append(body)
        return web.json_response({
            "response": {"response_type": "action_done", "language": body.get("language", "en"),
                         "speech": {"plain": {"speech": "The garage door is closed.", "extra_data": None}}},
            "conversation_id": "01TEST",
        })
