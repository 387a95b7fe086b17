"""The HTTP side of every cloud provider: one reused connection pool, two timeouts, clear errors.

    client = CloudHTTP("https://api.openai.com/v1", api_key="sk-...")
    async with client.post("chat/completions", json=body, first_byte_s=2.0) as resp:
        async for event in sse_events(resp):
            ...

Two limits, kept apart on purpose:

- ``first_byte_s`` bounds the time from sending the request to the first byte of
  the body. A server that accepts the connection and then says nothing fails
  here; a per-read timeout alone never fires when the headers come at once and
  the first token does not.
- ``total_s`` bounds the whole request, body included.

Every failure becomes a :class:`CloudError` whose ``reason`` says what happened
(``unreachable``, ``dns``, ``stalled``, ``auth``, ``rate-limited``, ``server``,
``bad-response``, ``dropped``, ``timeout``) and whose ``retryable`` says whether
trying the same provider again later may help.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from edgeagent.aio import wait_for
from edgeagent.errors import EdgeAgentError

log = logging.getLogger(__name__)


class CloudError(EdgeAgentError):
    """A cloud request failed; ``reason`` is a short word for events and logs."""

    retryable = True

    def __init__(self, message: str, *, reason: str, status: int | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.reason = reason
        self.status = status


def _status_error(status: int, body: str, url: str) -> CloudError:
    detail = body.strip().replace("\n", " ")[:200]
    if status in (401, 403):
        return CloudError(f"{url}: HTTP {status}: the API key was refused ({detail}); check cloud.api_key",
                          reason="auth", status=status, retryable=False)
    if status == 429:
        return CloudError(f"{url}: HTTP 429: rate limited ({detail})", reason="rate-limited", status=status)
    if status >= 500:
        return CloudError(f"{url}: HTTP {status}: server error ({detail})", reason="server", status=status)
    return CloudError(f"{url}: HTTP {status}: {detail}", reason="bad-request", status=status, retryable=False)


def connection_error(exc: BaseException, url: str) -> CloudError:
    """A CloudError for an aiohttp/OS failure (DNS, refused, reset)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return CloudError(f"{url}: the host name does not resolve ({exc})", reason="dns")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return CloudError(f"{url}: cannot connect ({exc.os_error or exc})", reason="unreachable")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionError)):
        return CloudError(f"{url}: the connection dropped mid-response ({exc!r})", reason="dropped")
    return CloudError(f"{url}: request failed ({exc!r})", reason="unreachable")


class Response:
    """An open streaming response: the first body bytes already read (see ``first_byte_s``)."""

    def __init__(self, resp: aiohttp.ClientResponse, first: bytes, url: str) -> None:
        self._resp = resp
        self._first = first
        self.url = url
        self.status = resp.status
        self.headers = resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        if self._first:
            yield self._first
            self._first = b""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except asyncio.TimeoutError as exc:
            raise CloudError(f"{self.url}: the whole request took too long", reason="timeout") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise connection_error(exc, self.url) from exc

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def json(self) -> Any:
        body = await self.read()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise CloudError(f"{self.url}: the answer is not JSON ({body[:80]!r})", reason="bad-response") from exc


class CloudHTTP:
    """A pool of keep-alive connections to one OpenAI-compatible base URL.

    The aiohttp session is made on first use (inside the event loop) and reused by
    every request until :meth:`aclose`.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, connect_s: float = 3.0,
                 total_s: float = 60.0, headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_s = connect_s
        self.total_s = total_s
        self._headers = dict(headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Future[None] | None = None

    def set_api_key(self, api_key: str | None) -> None:
        """Use ``api_key`` from the next request on (the pool is reopened with the new header)."""
        self._headers.pop("Authorization", None)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if self._session is not None and not self._session.closed:
            old = self._session
            self._session = None
            self._closing = asyncio.ensure_future(old.close())

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=8, keepalive_timeout=60, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    @contextlib.asynccontextmanager
    async def request(self, method: str, path: str, *, first_byte_s: float, total_s: float | None = None,
                      **kwargs: Any) -> AsyncIterator[Response]:
        """Send a request; yields once the status is good and the first body bytes are in."""
        url = self.url(path)
        total = total_s or self.total_s
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self.connect_s, connect=self.connect_s)
        resp: aiohttp.ClientResponse | None = None

        async def start() -> tuple[aiohttp.ClientResponse, bytes]:
            nonlocal resp
            resp = await self._client().request(method, url, timeout=timeout, **kwargs)
            if resp.status >= 400:
                body = await resp.text(errors="replace")
                raise _status_error(resp.status, body, url)
            return resp, await resp.content.readany()

        try:
            try:
                opened, first = await wait_for(start(), first_byte_s)
            except asyncio.TimeoutError as exc:
                raise CloudError(f"{url}: no answer within {first_byte_s:g} s (first byte)",
                                 reason="stalled") from exc
            except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                raise connection_error(exc, url) from exc
            yield Response(opened, first, url)  # aiohttp's total timeout bounds the body too
        finally:
            if resp is not None:
                resp.release()

    def post(self, path: str, *, first_byte_s: float, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[
            Response]:
        return self.request("POST", path, first_byte_s=first_byte_s, **kwargs)

    async def probe(self, path: str = "models", timeout_s: float = 2.0) -> None:
        """A cheap GET that must answer 2xx with JSON within ``timeout_s``; raises CloudError otherwise."""
        async with self.request("GET", path, first_byte_s=timeout_s, total_s=timeout_s) as resp:
            await resp.json()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def sse_events(resp: Response) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events of a streamed completion, as JSON objects, until ``[DONE]``.

    A ``data:`` line that is not JSON raises CloudError(reason="bad-response"); a
    stream that ends without ``[DONE]`` raises CloudError(reason="dropped").
    """
    buf = b""
    async for chunk in resp.chunks():
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("data:"):
                continue  # comments (": ping"), event names, blank separators
            data = text[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise CloudError(f"{resp.url}: malformed stream event {data[:80]!r}", reason="bad-response") from exc
            if not isinstance(event, dict):
                raise CloudError(f"{resp.url}: malformed stream event {data[:80]!r}", reason="bad-response")
            if "error" in event:
                raise CloudError(f"{resp.url}: the server reported an error mid-stream: {event['error']}",
                                 reason="server")
            yield event
    raise CloudError(f"{resp.url}: the stream ended without [DONE]", reason="dropped")
