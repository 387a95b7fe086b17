"""From ``[cloud]`` to stages: cloud providers built, and wrapped with the local ones in chains.

:func:`with_cloud` is called by :meth:`edgeagent.voice.stages.Models.load` after the
local stages are loaded. A stage kind with no cloud model configured stays as it
is (no chain, no overhead); one with a cloud model becomes a Fallback stage whose
members are the local provider and the cloud one, ordered by ``cloud.policy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeagent import registry
from edgeagent.cloud.provider import CloudProvider, api_key
from edgeagent.config.cloud import CloudConfig
from edgeagent.fallback.chain import Chain, Member, chain_of
from edgeagent.fallback.policy import Connectivity

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.voice.stages import Models

CLOUD_PROVIDER = "openai"
"""The registry name of the cloud providers (OpenAI-compatible APIs) for each kind."""

def cloud_stages(cfg: Config) -> dict[str, Any]:
    """The configured cloud providers by kind (no network use yet: connections open on first
    request), created through the registry as ``openai`` providers with the options each takes
    from the config."""
    c = cfg.cloud
    kinds = [kind for kind, model in (("llm", c.llm_model), ("stt", c.stt_model), ("tts", c.tts_model)) if model]
    return {kind: registry.create(kind, CLOUD_PROVIDER, **registry.provider_class(kind, CLOUD_PROVIDER)
                                  .config_options(cfg)) for kind in kinds}


def make_chain(kind: str, local: Any, cloud: Any, c: CloudConfig, connectivity: Connectivity | None) -> Chain:
    deadline = {"llm": c.llm_first_token_s, "stt": c.stt_first_result_s, "tts": c.tts_first_audio_s}[kind]
    members = [Member(local, c.local_deadline_s, cloud=False), Member(cloud, deadline, cloud=True)]
    return Chain(kind, members, policy=c.policy, connectivity=connectivity, probe_interval_s=c.probe_interval_s)


def wrap(kind: str, chain: Chain) -> Any:
    if kind == "llm":
        from edgeagent.fallback.llm import FallbackLLM

        return FallbackLLM(chain)
    if kind == "stt":
        from edgeagent.fallback.stt import FallbackSTT

        return FallbackSTT(chain)
    from edgeagent.fallback.tts import FallbackTTS

    return FallbackTTS(chain)


async def with_cloud(models: Models, cfg: Config) -> Models:
    """``models`` with each kind that has a cloud model replaced by a fallback chain."""
    clouds = cloud_stages(cfg)
    if not clouds:
        return models
    c = cfg.cloud
    connectivity = None
    if c.policy == "cloud-when-online":
        first = next(iter(clouds.values()))
        connectivity = Connectivity(first.http.base_url, interval_s=c.connectivity_interval_s,
                                    timeout_s=c.connect_s)
        await connectivity.check()
        connectivity.start()
    for kind, cloud in clouds.items():
        chain = make_chain(kind, getattr(models, kind), cloud, c, connectivity)
        setattr(models, kind, wrap(kind, chain))
    return models


def swap_local(current: Any, new: Any) -> tuple[Any, Any, Any]:
    """A reload of ``[llm]``/``[stt]``/``[tts]`` replaces the local member of a chain, not the chain.

    Returns (the stage for the session, the stage to close once it is in use, an undo step).
    Without a chain: (new, current, a no-op).
    """
    chain = chain_of(current)
    if chain is None:
        return new, current, lambda: None
    member = next((m for m in chain.members if not m.cloud), None)
    if member is None:
        return new, current, lambda: None
    previous = member.stage
    member.stage = new
    member.label = new.label
    current.pass_on_metrics_of(new)

    def undo() -> None:
        member.stage = previous
        member.label = previous.label

    return current, previous, undo


def apply_cloud(stages: Any, c: CloudConfig) -> None:
    """Put the hot ``[cloud]`` settings into effect on the session's chains (policy, deadlines,
    probe interval, API key)."""
    deadlines = {"llm": c.llm_first_token_s, "stt": c.stt_first_result_s, "tts": c.tts_first_audio_s}
    key = api_key(c)
    for kind in ("stt", "llm", "tts"):
        chain = chain_of(getattr(stages, kind, None))  # a session, or a stand-in with some kinds
        if chain is None:
            continue
        chain.set_policy(c.policy)
        chain.probe_interval_s = c.probe_interval_s
        for m in chain.members:
            m.deadline_s = deadlines[kind] if m.cloud else c.local_deadline_s
            if m.cloud and isinstance(m.stage, CloudProvider):
                m.stage.http.set_api_key(key)
