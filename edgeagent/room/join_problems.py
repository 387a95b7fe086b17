"""What went wrong with a room join, in one line each: for the log of :class:`~edgeagent.room.connection.RoomLink`.

- :func:`describe_error`: why a join failed, and whether trying again is pointless (an
  authentication refusal is; network trouble is not);
- :func:`missing_grants`: what a joined room's token does not allow, and what the agent
  then cannot do;
- :func:`hide_tokens`: an error text with any JWT in it replaced, so no credential reaches a log.
"""

from __future__ import annotations

import asyncio
import re

from livekit import rtc

_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def hide_tokens(text: str) -> str:
    """``text`` with every JWT in it written as ``<token>``."""
    return _JWT.sub("<token>", text)


def describe_error(exc: BaseException, url: str) -> tuple[str, bool]:
    """One line saying what went wrong, and whether retrying is pointless."""
    text = hide_tokens(str(exc)).strip() or type(exc).__name__
    low = text.lower()
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {url} in time", False
    if "401" in low or "403" in low or "unauthorized" in low or "forbidden" in low:
        if "permission" in low:
            why = "the token lacks the room_join grant for this room"
        elif "expired" in low:
            why = "the token has expired"
        elif "invalid authorization" in low:
            why = "the token is not a valid JWT"
        else:
            why = "the token is invalid, expired or signed with another secret"
        return f"{url} refused the join: {why} ({text})", True
    if "connection refused" in low:
        return f"cannot reach {url}: connection refused (is livekit-server running there?)", False
    if "lookup address" in low or "name or service" in low:
        return f"cannot resolve the host of {url}", False
    return f"cannot join the room at {url}: {text}", False


def missing_grants(room: rtc.Room) -> list[str]:
    """One line per grant the joined ``room``'s token lacks, saying what the agent cannot do."""
    perms = room.local_participant.permissions
    return [f"the token lacks the {grant} grant: {what}" for ok, grant, what in (
        (perms.can_publish, "can_publish", "the agent cannot speak into the room"),
        (perms.can_subscribe, "can_subscribe", "the agent cannot hear the room"),
        (perms.can_publish_data, "can_publish_data", "no transcripts or chat replies"),
        (perms.can_update_metadata, "can_update_own_metadata", "no lk.agent.state attribute"),
    ) if not ok]
