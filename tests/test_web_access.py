"""Who may use the web console: pairing, tokens, refusals over HTTP, TLS, the [web] config section.

The real HTTP server (aiohttp) on 127.0.0.1, a real HTTP client; no models, no browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live import bounded

from edgeagent import config as config_mod
from edgeagent.config.web import WebConfig
from edgeagent.control.store import ConfigStore
from edgeagent.errors import ConfigError
from edgeagent.web.audio import WebInput, WebOutput
from edgeagent.web.pairing import CODE_FILE, MAX_FAILURES, Pairing
from edgeagent.web.peer import Peers
from edgeagent.web.server import ConsoleServer
from edgeagent.web.tls import fingerprint, server_context, wants_tls


def test_pairing_code_is_made_once_kept_private_and_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = Pairing.open(None, tmp_path)
    code = (tmp_path / CODE_FILE).read_text().strip()
    assert (tmp_path / CODE_FILE).stat().st_mode & 0o777 == 0o600
    assert code in capsys.readouterr().out  # shown on the first run
    again = Pairing.open(None, tmp_path)
    assert again.secret == first.secret == code
    assert code not in capsys.readouterr().out  # later runs say where it is, not what
    assert again.pair("1111-1111" if code != "1111-1111" else "2222-2222") is None
    token = again.pair(" " + code.replace("-", " ") + " ")  # as typed on a phone
    assert token and again.valid(token)
    assert not again.valid(token + "x") and not again.valid("") and not again.valid(None)
    assert not first.valid(token)  # tokens belong to the running board


def test_wrong_codes_lock_pairing_for_a_while(tmp_path: Path) -> None:
    now = [1000.0]
    pairing = Pairing("12345678", source=str(tmp_path / CODE_FILE), clock=lambda: now[0])
    for _ in range(MAX_FAILURES):
        assert pairing.locked_for() == 0.0
        assert pairing.pair("00000000") is None
    assert pairing.locked_for() > 0
    now[0] += 61
    assert pairing.locked_for() == 0.0
    assert pairing.pair("1234-5678")


def test_password_is_taken_as_typed(tmp_path: Path) -> None:
    pairing = Pairing.open("correct horse", tmp_path)
    assert not (tmp_path / CODE_FILE).exists()
    assert pairing.pair("correct-horse") is None
    assert pairing.pair("correct horse")


def test_web_config_is_checked_and_its_secrets_never_shown(tmp_path: Path) -> None:
    for override, words in (("web.port=70000", "0-65535"), ("web.password=abc", "at least 6"),
                            ("web.max_clients=0", "1-16"), ("web.ice_servers=http://x", "stun:"),
                            ("web.config_access=all", "none, get, set"), ("web.tls=maybe", "auto, on, off"),
                            ("web.host= ", "address")):
        with pytest.raises(ConfigError, match=words):
            config_mod.load(None, overrides=[override])
    cfg = config_mod.load(None, overrides=["web.enabled=true", "web.password=hunter22",
                                           "web.ice_servers=turn:turn.example:3478", "web.turn_credential=pw"])
    assert cfg.web.enabled and cfg.web.host == "127.0.0.1" and cfg.web.max_clients == 1
    assert config_mod.Config().web.enabled is False  # off by default
    shown = ConfigStore.open(cfg, tmp_path / "remote-config.json").get()["config"]["web"]
    assert shown["password"] == "***" and shown["turn_credential"] == "***"


def test_tls_is_on_beyond_loopback_and_the_certificate_is_kept(tmp_path: Path) -> None:
    assert not wants_tls("auto", "127.0.0.1") and not wants_tls("auto", "::1") and not wants_tls("auto", "localhost")
    assert wants_tls("auto", "192.168.1.20") and wants_tls("auto", "0.0.0.0") and wants_tls("auto", "board.local")
    assert wants_tls("on", "127.0.0.1") and not wants_tls("off", "192.168.1.20")
    _, first = server_context(tmp_path, "192.168.1.20")
    _, again = server_context(tmp_path, "192.168.1.20")
    assert first == again == fingerprint(tmp_path / "web-tls.pem")
    assert (tmp_path / "web-tls.key").stat().st_mode & 0o777 == 0o600


@contextlib.asynccontextmanager
async def console(tmp_path: Path, *, tls: bool = False) -> AsyncIterator[tuple[str, str, Peers]]:
    cfg = WebConfig(enabled=True, port=0)
    inp, out = WebInput(), WebOutput()
    peers = Peers(cfg, inp, out)
    pairing = Pairing.open(None, tmp_path)
    ctx = server_context(tmp_path, "127.0.0.1")[0] if tls else None
    server = ConsoleServer(cfg, peers, pairing, ssl_context=ctx)
    url = await bounded(server.start(), "the console to listen")
    try:
        yield url, pairing.secret, peers
    finally:
        await bounded(server.aclose(), "server close")
        await bounded(peers.aclose(), "peers close")
        await inp.aclose()
        await out.aclose()


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_everything_but_the_page_needs_pairing(tmp_path: Path) -> None:
    async with console(tmp_path) as (url, code, peers), aiohttp.ClientSession() as s:
        assert url.startswith("http://127.0.0.1:")
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
            assert resp.status == 200 and "edgeagent" in await resp.text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert (await call(s, "GET", url + "static/console.js"))[0] == 200
        assert (await call(s, "GET", url + "static/.hidden"))[0] == 404
        assert (await call(s, "GET", url + "etc/passwd"))[0] == 404
        status, body = await call(s, "GET", url + "api/info")
        assert status == 401 and "pair first" in body["message"]
        status, body = await call(s, "POST", url + "whip", data="v=0", headers={"Content-Type": "application/sdp"})
        assert status == 401 and body["error"] == "not_paired"
        status, body = await call(s, "POST", url + "api/pair", json={"code": "nope"})
        assert status == 401 and "wrong pairing code" in body["message"]
        status, body = await call(s, "POST", url + "api/pair", data="{not json")
        assert status == 400
        status, body = await call(s, "POST", url + "api/pair", json={"code": code})
        assert status == 200
        auth = {"Authorization": f"Bearer {body['token']}"}
        status, body = await call(s, "GET", url + "api/info", headers=auth)
        assert status == 200 and body == {"ice_servers": [], "max_clients": 1, "connected": 0}
        status, body = await call(s, "POST", url + "whip", data="v=0", headers={**auth, "Content-Type": "text/plain"})
        assert status == 415 and "application/sdp" in body["message"]
        status, body = await call(s, "POST", url + "whip", data="garbage",
                                  headers={**auth, "Content-Type": "application/sdp"})
        assert status == 400 and body["error"] == "bad_offer"
        status, body = await call(s, "DELETE", url + "whip/0123456789abcdef", headers=auth)
        assert status == 404
        assert len(peers) == 0
        # Too many wrong codes: even the right one waits.
        for _ in range(MAX_FAILURES):
            await call(s, "POST", url + "api/pair", json={"code": "0"})
        status, body = await call(s, "POST", url + "api/pair", json={"code": code})
        assert status == 429 and "too many wrong codes" in body["message"]
        status, _ = await call(s, "GET", url + "api/info", headers=auth)
        assert status == 200  # a browser paired before keeps its token


async def test_console_over_https(tmp_path: Path) -> None:
    async with console(tmp_path, tls=True) as (url, _, _):
        assert url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "web-tls.pem"))
        async with aiohttp.ClientSession() as s:
            status, page = await call(s, "GET", url, ssl=ctx)  # the board's own certificate verifies
            assert status == 200 and "edgeagent" in page
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await asyncio.wait_for(call(s, "GET", url), 15)  # not a CA the system knows
