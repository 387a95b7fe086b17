"""What every fallback stage shares: its members, their health, the order, the background probe.

A :class:`Chain` holds the providers of one kind (each a :class:`Member` with
its deadline: the time its first token, transcript or audio must come within).
:meth:`Chain.candidates` gives the order to try now: the policy's order, minus
members that failed and have not come back. A member that fails is marked down
and probed in the background (its ``probe()`` when it has one, e.g. ``GET
/models``; else it is simply tried again after ``probe_interval_s``); when the
probe passes it is back. Every switch and every return is a
:class:`FallbackEvent` to the chain's listeners and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeagent.fallback.policy import Connectivity, cloud_goes_first

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FallbackEvent:
    """A provider failed and the next one took over, or a failed one came back."""

    kind: str
    """stt, llm, tts or realtime."""
    action: Literal["switched", "recovered"]
    from_provider: str
    """switched: the provider that failed; recovered: the one that is back."""
    to_provider: str | None
    """switched: the provider tried next (None: none left)."""
    reason: str
    """stalled, unreachable, dns, auth, rate-limited, server, dropped, bad-response, error, recovered."""
    detail: str = ""
    type: Literal["provider_fallback"] = "provider_fallback"


def failure_reason(exc: BaseException) -> str:
    """The short word for a failure (a CloudError's ``reason``, ``stalled`` for a missed deadline)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "stalled"
    return str(getattr(exc, "reason", "error"))


@dataclass
class Member:
    """One provider in a chain."""

    stage: Any
    deadline_s: float
    """Its first token / transcript / audio must come within this many seconds."""
    cloud: bool
    label: str = ""
    up: bool = True
    failures: int = 0
    last_error: str = ""
    down_since: float | None = None
    probe_task: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.label = self.label or self.stage.label


class Chain:
    """The members of one kind and the rules that order them."""

    def __init__(self, kind: str, members: Sequence[Member], *, policy: str = "local-first",
                 connectivity: Connectivity | None = None, probe_interval_s: float = 5.0) -> None:
        if not members:
            raise ValueError(f"a {kind} fallback chain needs at least one provider")
        self.kind = kind
        self.members = list(members)
        self.policy = policy
        self.connectivity = connectivity
        self.probe_interval_s = probe_interval_s
        self.last_served: str | None = None
        """The label of the member that served the latest request."""
        self._listeners: list[Callable[[FallbackEvent], None]] = []

    def on_event(self, callback: Callable[[FallbackEvent], None]) -> None:
        self._listeners.append(callback)

    def set_policy(self, policy: str) -> None:
        self.policy = policy

    def candidates(self) -> list[Member]:
        """The members to try, in order; all of them (by order) when every one is down."""
        online = self.connectivity.online if self.connectivity is not None else True
        cloud_first = cloud_goes_first(self.policy, bool(online))
        local = [m for m in self.members if not m.cloud]
        cloud = [m for m in self.members if m.cloud]
        if self.policy == "cloud-when-online" and online is False:
            cloud = []  # offline: spend no deadline on a dead link
        ordered = cloud + local if cloud_first else local + cloud
        up = [m for m in ordered if m.up]
        return up or ordered or local

    def served(self, member: Member) -> None:
        self.last_served = member.label

    def failed(self, member: Member, exc: BaseException, next_member: Member | None) -> None:
        """``member`` failed (error or missed deadline): mark it down, probe it, tell the listeners."""
        reason = failure_reason(exc)
        detail = f"no first result within {member.deadline_s:g} s" if reason == "stalled" else str(exc)
        member.failures += 1
        member.last_error = detail
        nxt = next_member.label if next_member is not None else None
        log.warning("%s provider %s failed (%s: %s); %s", self.kind, member.label, reason, detail,
                    f"switching to {nxt}" if nxt else "no provider left")
        if member.up and len(self.members) > 1:
            member.up = False
            member.down_since = time.monotonic()
            member.probe_task = asyncio.ensure_future(self._probe(member))
        self._emit(FallbackEvent(self.kind, "switched", member.label, nxt, reason, detail))

    async def _probe(self, member: Member) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await member.stage.probe()  # a local model's: it can always serve
            except Exception as exc:
                log.debug("%s probe of %s: %r", self.kind, member.label, exc)
                continue
            break
        member.up = True
        down_for = time.monotonic() - (member.down_since or time.monotonic())
        member.down_since = None
        log.info("%s provider %s is back after %.1f s", self.kind, member.label, down_for)
        self._emit(FallbackEvent(self.kind, "recovered", member.label, None, "recovered",
                                 f"down for {down_for:.1f} s"))

    def _emit(self, event: FallbackEvent) -> None:
        for cb in list(self._listeners):
            try:
                cb(event)
            except Exception:
                log.exception("fallback listener failed")

    async def aclose(self) -> None:
        for m in self.members:
            if m.probe_task is not None:
                m.probe_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await m.probe_task
                m.probe_task = None
        if self.connectivity is not None:
            await self.connectivity.aclose()
        for m in self.members:
            await m.stage.aclose()


class Chained:
    """A stage made of a fallback chain's members (FallbackLLM, FallbackSTT, FallbackTTS)."""

    chain: Chain


def chain_of(stage: object) -> Chain | None:
    """The fallback chain ``stage`` is made of; None for a stage of one provider."""
    return stage.chain if isinstance(stage, Chained) else None


async def forward(inner: Any, gen: int, events: asyncio.Queue[tuple[str, int, Any]]) -> None:
    """Put what a member's stream yields on ``events`` as ``("item", gen, x)``, then
    ``("end", gen, None)``, or ``("error", gen, exc)`` when it fails (``gen`` tells a
    fallback stream's current member from one it has left)."""
    try:
        async for item in inner:
            events.put_nowait(("item", gen, item))
    except Exception as exc:
        events.put_nowait(("error", gen, exc))
        return
    events.put_nowait(("end", gen, None))


async def close_member(reader: asyncio.Future[None] | None, inner: Any) -> None:
    """Stop forwarding a member's stream and close it (errors are the member's own business)."""
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    if inner is not None:
        with contextlib.suppress(Exception):
            await inner.aclose()
