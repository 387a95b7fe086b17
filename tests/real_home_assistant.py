"""A real Home Assistant Core (2024.3.3) on 127.0.0.1 for the tests, started by PID and stopped so.

    ha = await RealHomeAssistant.start(tmp_dir)   # hass -c tmp_dir, onboarded, a long-lived token
    await ha.reset()                              # the known states: light and switch off
    await ha.stop()

``scripts/install-home-assistant`` (run by ``scripts/setup --dev`` and ``scripts/test``) installs
it in a virtualenv of its own under the cache; ``EDGEAGENT_TEST_HASS`` names its ``hass``.
A missing install is a loud failure naming the command, never a skip.

Its ``configuration.yaml`` (:data:`CONFIGURATION`) holds only integrations whose requirements
that install holds (hass runs with ``--skip-pip``: it never installs from pip itself): the
default ones, ``api``, ``conversation`` and ``template`` entities: ``light.kitchen`` ("Kitchen
Light", brightness) and ``switch.coffee_maker`` ("Coffee Maker"), optimistic (they take the
state they are switched to), and ``sensor.living_room_temperature`` ("Living Room
Temperature", 21.5 °C).

The token is made as a user makes one: the onboarding API creates the owner
(``POST /api/onboarding/users``, which answers with an authorization code), ``POST /auth/token``
trades the code for an access token, and the websocket command
``auth/long_lived_access_token`` makes the long-lived token the agent is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeagent.paths import cache_dir

VERSION = "2024.3.3"
START_LIMIT_S = 90.0
STOP_LIMIT_S = 30.0
HTTP_LIMIT_S = 10.0

CONFIGURATION = """\
# Written by tests/real_home_assistant.py for one test session.
homeassistant:
  name: edgeagent tests
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
conversation:
logger:
  default: warning
light:
  - platform: template
    lights:
      kitchen:
        friendly_name: Kitchen Light
        turn_on: []
        turn_off: []
        set_level: []
switch:
  - platform: template
    switches:
      coffee_maker:
        friendly_name: Coffee Maker
        turn_on: []
        turn_off: []
template:
  - sensor:
      - name: Living Room Temperature
        state: "21.5"
        unit_of_measurement: "°C"
"""
ENTITIES = ("light.kitchen", "switch.coffee_maker", "sensor.living_room_temperature")
RESET = (("light", "turn_off", "light.kitchen"), ("switch", "turn_off", "switch.coffee_maker"))


def hass_binary() -> Path:
    """The installed ``hass``, or a test failure that says how to install it."""
    env = os.environ.get("EDGEAGENT_TEST_HASS")
    hass = Path(env) if env else cache_dir() / f"home-assistant-{VERSION}" / "venv" / "bin" / "hass"
    if not os.access(hass, os.X_OK):
        pytest.fail(f"Home Assistant {VERSION} is not installed ({hass} is missing): run "
                    "scripts/install-home-assistant (scripts/setup --dev and scripts/test run it)")
    return hass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RealHomeAssistant:
    """One running ``hass``: its ``url``, a long-lived ``token`` and its ``pid``."""

    def __init__(self, config_dir: Path, port: int, process: asyncio.subprocess.Process) -> None:
        self.config_dir = config_dir
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.pid = process.pid
        self.token = ""
        self.start_s = 0.0  # from the exec of hass to the token in hand

    @classmethod
    async def start(cls, config_dir: Path) -> RealHomeAssistant:
        """``hass -c config_dir`` on a free port, onboarded; a failure says why, with hass's log."""
        hass = hass_binary()
        port = free_port()
        (config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=port), encoding="utf-8")
        t0 = time.monotonic()
        out = os.open(config_dir / "hass.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            process = await asyncio.create_subprocess_exec(
                str(hass), "-c", str(config_dir), "--skip-pip", stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(out)
        ha = cls(config_dir, port, process)
        try:
            await asyncio.wait_for(ha._come_up(), START_LIMIT_S)
        except BaseException as exc:
            log = ha.log_tail()
            await ha.stop()
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                pytest.fail(f"Home Assistant did not come up within {START_LIMIT_S:g} s; its log ends:\n{log}")
            raise
        ha.start_s = time.monotonic() - t0
        return ha

    async def _come_up(self) -> None:
        while True:
            if self.process.returncode is not None:
                pytest.fail(f"hass exited with {self.process.returncode} at start; its log ends:\n{self.log_tail()}")
            try:
                await self._get_public("/api/onboarding")
                break
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.1)
        self.token = await self._onboard()
        while True:
            if (await self.get("/api/config"))["state"] == "RUNNING":
                break
            await asyncio.sleep(0.1)
        for entity_id in ENTITIES:
            await self.get(f"/api/states/{entity_id}")  # fails here if the configuration lacks one

    async def _onboard(self) -> str:
        """The owner made through the onboarding API, then a long-lived token for it."""
        client_id = self.url + "/"
        timeout = aiohttp.ClientTimeout(total=HTTP_LIMIT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            user = {"name": "Test Owner", "username": "owner", "password": "owner-password-1",
                    "client_id": client_id, "language": "en"}
            async with http.post(self.url + "/api/onboarding/users", json=user) as resp:
                assert resp.status == 200, f"onboarding: HTTP {resp.status} {await resp.text()}"
                code = (await resp.json())["auth_code"]
            grant = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
            async with http.post(self.url + "/auth/token", data=grant) as resp:
                assert resp.status == 200, f"/auth/token: HTTP {resp.status} {await resp.text()}"
                access = (await resp.json())["access_token"]
            async with http.ws_connect(self.url + "/api/websocket") as ws:
                assert (await ws.receive_json())["type"] == "auth_required"
                await ws.send_json({"type": "auth", "access_token": access})
                assert (await ws.receive_json())["type"] == "auth_ok"
                await ws.send_json({"id": 1, "type": "auth/long_lived_access_token",
                                    "client_name": "edgeagent tests", "lifespan": 1})
                answer = await ws.receive_json()
                assert answer.get("success"), answer
                token: str = answer["result"]
                return token

    async def _get_public(self, path: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=HTTP_LIMIT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(self.url + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=HTTP_LIMIT_S)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.request(method, self.url + path, json=body, headers=headers) as resp:
            assert resp.status == 200, f"{method} {path}: HTTP {resp.status} {await resp.text()}"
            return await resp.json()

    async def get(self, path: str) -> Any:
        return await self._request("GET", path)

    async def state(self, entity_id: str) -> dict[str, Any]:
        """``entity_id``'s state object as Home Assistant has it now."""
        found: dict[str, Any] = await self.get(f"/api/states/{entity_id}")
        return found

    async def snapshot(self) -> dict[str, tuple[str, str]]:
        """Each test entity's state and the time it was last written (any service that touched it moves it)."""
        return {e: (s["state"], s["last_updated"]) for e in ENTITIES for s in [await self.state(e)]}

    async def reset(self) -> None:
        """The known states every test starts from, set through the API: light and switch off."""
        for domain, service, entity_id in RESET:
            await self._request("POST", f"/api/services/{domain}/{service}", {"entity_id": entity_id})
        states = {e: (await self.state(e))["state"] for e in ENTITIES}
        assert states == {"light.kitchen": "off", "switch.coffee_maker": "off",
                          "sensor.living_room_temperature": "21.5"}, states

    def pause(self) -> None:
        """SIGSTOP: the process is frozen, so every request waits (its port still accepts)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.config_dir / "hass.out").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM by PID (SIGCONT first, in case it was paused), SIGKILL after STOP_LIMIT_S."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.resume()
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_LIMIT_S)
        except (asyncio.TimeoutError, TimeoutError):
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 10)
