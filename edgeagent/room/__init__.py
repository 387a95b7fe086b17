"""LiveKit rooms: the device joins as a participant (:class:`RoomLink`), hears remote
participants (:class:`RoomInput`) and speaks into the room (:class:`RoomOutput`)."""

from edgeagent.room.audio import RoomInput, RoomOutput
from edgeagent.room.connection import RoomLink
from edgeagent.room.token import Token, TokenSource, agent_grants, mint_token

__all__ = ["RoomInput", "RoomLink", "RoomOutput", "Token", "TokenSource", "agent_grants", "mint_token"]
