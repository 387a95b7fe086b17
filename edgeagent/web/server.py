"""The console's HTTP server (aiohttp): the page, pairing, and the WHIP-style offer/answer.

Routes (everything else is 404/405):

- ``GET /`` and ``GET /static/...``: the console (plain HTML/JS/CSS, package data);
- ``POST /api/pair`` ``{"code": "1234-5678"}`` → ``{"token"}``; 401 for a wrong code,
  429 after too many (:mod:`edgeagent.web.pairing`);
- ``GET /api/info`` (token) → ``{"ice_servers", "max_clients", "connected"}``;
- ``POST /whip`` (token; ``Content-Type: application/sdp``; the offer) → 201 with the
  answer (``application/sdp``) and ``Location: /whip/<id>``; 400 for a malformed offer,
  409 when ``web.max_clients`` browsers are connected already, 415 for another type;
- ``DELETE /whip/<id>`` (token) → 200: hang up.

The token goes in ``Authorization: Bearer <token>``; without a valid one: 401. Errors
are JSON ``{"error": code, "message": reason}``, and each is logged on one line.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from edgeagent.config.web import WebConfig
from edgeagent.web.pairing import Pairing
from edgeagent.web.peer import OfferRefused, Peers

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_BODY = 128 * 1024
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob: mediastream:; frame-ancestors 'none'",
}


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=HEADERS)


class ConsoleServer:
    """The routes above over ``peers`` and ``pairing``; :meth:`start` binds ``web.host:port``."""

    def __init__(self, cfg: WebConfig, peers: Peers, pairing: Pairing, *, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.cfg, self.peers, self.pairing, self.ssl_context = cfg, peers, pairing, ssl_context
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/static/{name}", self._static)
        self.app.router.add_post("/api/pair", self._pair)
        self.app.router.add_get("/api/info", self._info)
        self.app.router.add_post("/whip", self._offer)
        self.app.router.add_delete("/whip/{peer}", self._hangup)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen; returns the console's URL. Raises OSError when the address cannot be bound."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, ssl_context=self.ssl_context)
        await site.start()
        addresses = self._runner.addresses
        port = int(addresses[0][1]) if addresses else self.cfg.port
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        self.url = f"{'https' if self.ssl_context is not None else 'http'}://{host}:{port}/"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers ---------------------------------------------------------------------

    def _who(self, request: web.Request) -> str:
        return request.remote or "?"

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and self.pairing.valid(token.strip())

    def _refuse_unpaired(self, request: web.Request) -> web.Response:
        log.warning("web: refused %s %s from %s: not paired", request.method, request.path, self._who(request))
        return error(401, "not_paired", "pair first: give the pairing code shown in the board's log")

    # -- routes ----------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=HEADERS)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return error(404, "not_found", f"no such file {name!r}")
        return web.FileResponse(path, headers=HEADERS)

    async def _pair(self, request: web.Request) -> web.Response:
        wait = self.pairing.locked_for()
        if wait > 0:
            log.warning("web: refused pairing from %s: too many wrong codes", self._who(request))
            return error(429, "locked", f"too many wrong codes: try again in {wait:.0f} s")
        try:
            body: Any = await request.json()
            code = body["code"]
            if not isinstance(code, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return error(400, "bad_request", 'expected JSON {"code": "..."}')
        token = self.pairing.pair(code)
        if token is None:
            log.warning("web: refused pairing from %s: wrong pairing code", self._who(request))
            return error(401, "wrong_code", "wrong pairing code (it is in the board's log)")
        log.info("web: browser at %s paired", self._who(request))
        return web.json_response({"token": token}, headers=HEADERS)

    async def _info(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refuse_unpaired(request)
        servers = [{"urls": url, **({"username": self.cfg.turn_username or "",
                                     "credential": self.cfg.turn_credential or ""} if url.startswith("turn") else {})}
                   for url in self.cfg.ice_servers]
        return web.json_response({"ice_servers": servers, "max_clients": self.cfg.max_clients,
                                  "connected": len(self.peers)}, headers=HEADERS)

    async def _offer(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refuse_unpaired(request)
        if request.content_type != "application/sdp":
            return error(415, "bad_type", f"send the SDP offer as application/sdp, not {request.content_type}")
        try:
            sdp = await request.text()
        except (UnicodeDecodeError, web.HTTPRequestEntityTooLarge) as exc:
            return error(400, "bad_offer", f"the offer could not be read: {exc}")
        try:
            peer = await self.peers.answer(sdp, client=self._who(request))
        except OfferRefused as exc:
            log.warning("web: refused an offer from %s: %s", self._who(request), exc)
            return error(exc.status, exc.code, str(exc))
        headers = {**HEADERS, "Location": f"/whip/{peer.id}", "Access-Control-Expose-Headers": "Location"}
        return web.Response(status=201, text=peer.answer_sdp, content_type="application/sdp", headers=headers)

    async def _hangup(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refuse_unpaired(request)
        if not await self.peers.close(request.match_info["peer"]):
            return error(404, "not_found", "no such connection")
        return web.json_response({"ok": True}, headers=HEADERS)
