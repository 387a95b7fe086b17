"""What the cloud providers share: their connection, its options from ``[cloud]``, their label.

Each OpenAI-compatible provider (:mod:`edgeagent.cloud.openai_llm`, ``openai_stt``,
``openai_tts``) is a :class:`CloudProvider` of its kind: the registry creates it like any
other provider, with the options it takes from ``[cloud]`` (``config_options``), alone or as
the cloud member of a fallback chain (:mod:`edgeagent.fallback.build`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgeagent.cloud.http import CloudHTTP
from edgeagent.stage import Stage

if TYPE_CHECKING:
    from edgeagent.config.cloud import CloudConfig


def api_key(c: CloudConfig) -> str | None:
    """``cloud.api_key``, else ``$OPENAI_API_KEY``, else None (no Authorization header)."""
    return c.api_key or os.environ.get("OPENAI_API_KEY") or None


def connection_options(c: CloudConfig, base_url: str | None, first_byte_s: float) -> dict[str, Any]:
    """The options every cloud provider takes: its server (``base_url``, else ``cloud.base_url``),
    key and time limits (its first byte within ``first_byte_s``, never under ``cloud.timeout_s``)."""
    return {"base_url": base_url or c.base_url, "api_key": api_key(c), "total_s": c.timeout_s,
            "connect_s": c.connect_s, "first_byte_s": max(first_byte_s, c.timeout_s)}


class CloudProvider(Stage):
    """A provider behind an HTTP API: its :attr:`http` connection (whose key a remote
    ``cloud.api_key`` replaces), its label, a probe of the server."""

    model: str
    http: CloudHTTP

    @property
    def label(self) -> str:
        return f"openai:{self.model}@{self.http.base_url}"

    async def probe(self) -> None:
        """Raises CloudError unless the server answers ``GET /models`` quickly."""
        await self.http.probe("models")

    async def aclose(self) -> None:
        await self.http.aclose()
