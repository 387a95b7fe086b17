"""Config section ``[cloud]``: cloud providers, their deadlines, the policy, the realtime model.

Part of :class:`edgeagent.config.Config` (field ``cloud``). Nothing here is used
until a model is named: ``llm_model``, ``stt_model`` or ``tts_model`` adds that
cloud provider to the stage's fallback chain next to the local one from
``[llm]``/``[stt]``/``[tts]``; ``realtime_url`` enables the speech-to-speech model.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeagent.config.settings import HOT, setting
from edgeagent.fallback.policy import POLICIES, check_policy

REALTIME_TURNS = ("server_vad", "local")


@dataclass(frozen=True)
class CloudConfig:
    """Cloud providers (OpenAI-compatible APIs) and the fallback between them and the local models."""

    policy: str = setting("local-first", choices=POLICIES, remote=HOT)
    """local-first, cloud-first, or cloud-when-online (cloud first while a connectivity check
    to the cloud's host passes, local only while it fails)."""
    base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible API root for every cloud stage that sets no base URL of its own."""
    api_key: str | None = setting(None, min_len=1, max_len=4096, remote=HOT, secret=True)
    """Bearer token; None = the OPENAI_API_KEY environment variable (or none)."""
    llm_model: str | None = None
    """Cloud chat model (e.g. gpt-4o-mini); None = no cloud LLM."""
    llm_base_url: str | None = None
    """The LLM's own API root; None = base_url."""
    llm_first_token_s: float = setting(1.0, lo=0.1, hi=60.0, remote=HOT)
    """The cloud LLM's first token must come within this (s), or the next provider answers."""
    stt_model: str | None = None
    """Cloud transcription model (e.g. whisper-1); None = no cloud STT."""
    stt_base_url: str | None = None
    """The STT's own API root; None = base_url."""
    stt_first_result_s: float = setting(2.0, lo=0.1, hi=60.0, remote=HOT)
    """The cloud transcript must come within this (s) after the end of speech."""
    tts_model: str | None = None
    """Cloud speech model (e.g. tts-1); None = no cloud TTS."""
    tts_base_url: str | None = None
    """The TTS's own API root; None = base_url."""
    tts_voice: str = "alloy"
    """Cloud voice name."""
    tts_first_audio_s: float = setting(1.0, lo=0.1, hi=60.0, remote=HOT)
    """The cloud voice's first audio of a reply must come within this (s) of its first clause."""
    local_deadline_s: float = setting(10.0, lo=0.5, hi=120.0, remote=HOT)
    """Deadline of the local providers in a chain (they are last to fail; keep it generous)."""
    timeout_s: float = 30.0
    """Whole-request limit of one cloud request (s)."""
    connect_s: float = 3.0
    """TCP/TLS connect limit (s)."""
    probe_interval_s: float = setting(5.0, lo=0.5, hi=600.0, remote=HOT)
    """A failed provider is probed this often (s) and used again once it answers."""
    connectivity_interval_s: float = 10.0
    """cloud-when-online: how often (s) the connectivity check runs."""
    realtime_url: str | None = None
    """OpenAI Realtime WebSocket URL (e.g. wss://api.openai.com/v1/realtime); None = no realtime model."""
    realtime_model: str = "gpt-realtime"
    """Realtime model name (sent as ?model=)."""
    realtime_voice: str = "alloy"
    """Realtime output voice."""
    realtime_turn_detection: str = "server_vad"
    """server_vad: the model decides when the user is done; local: our VAD commits the turn."""


def check_cloud(c: CloudConfig) -> str | None:
    """A problem with the section, or None."""
    if problem := check_policy(c.policy):
        return problem
    for name in ("llm_first_token_s", "stt_first_result_s", "tts_first_audio_s", "local_deadline_s",
                 "timeout_s", "connect_s", "probe_interval_s", "connectivity_interval_s"):
        if not 0 < getattr(c, name) <= 600:
            return f"cloud.{name}: expected a number of seconds in (0, 600], got {getattr(c, name)}"
    for name in ("base_url", "llm_base_url", "stt_base_url", "tts_base_url"):
        url = getattr(c, name)
        if url is not None and not url.startswith(("http://", "https://")):
            return f"cloud.{name}: expected an http:// or https:// URL, got {url!r}"
    if c.realtime_url is not None and not c.realtime_url.startswith(("ws://", "wss://")):
        return f"cloud.realtime_url: expected a ws:// or wss:// URL, got {c.realtime_url!r}"
    if c.realtime_turn_detection not in REALTIME_TURNS:
        return f"cloud.realtime_turn_detection: expected one of {', '.join(REALTIME_TURNS)}"
    return None


__all__ = ["POLICIES", "REALTIME_TURNS", "CloudConfig", "check_cloud"]
