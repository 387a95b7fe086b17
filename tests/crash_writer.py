"""The writer of the SIGKILL-during-write test (test_control_store.py): changes the config
over and over, alternating two patches, in a process the test kills at a random moment.

It runs in children of a multiprocessing forkserver that has imported this module (and the
store, and pytest's main module) once, so a kill costs a fork, not a Python start.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from pathlib import Path

from edgeagent import config
from edgeagent.control.store import ConfigStore

A = {"agent": {"instructions": "A" * 7000}, "tts": {"speed": 1.5}, "activation": {"wake_threshold": 0.6}}
B = {"agent": {"instructions": "B" * 7000}, "tts": {"speed": 0.75}, "activation": {"wake_threshold": 0.4}}
STATES = {1: ("A" * 7000, 1.5, 0.6), 0: ("B" * 7000, 0.75, 0.4)}
"""What the config holds at a revision, by its parity."""


def write_forever(overlay: str, ready: Connection) -> None:
    """Set A, B, A, ... for ever; sends ``ready`` the revision it starts from, just before
    its first write (a kill may land in any write from then on, the first one included)."""

    async def main() -> None:
        store = ConfigStore.open(config.Config(), Path(overlay))
        ready.send(store.revision)
        while True:
            nxt = store.revision + 1
            await store.set(A if nxt % 2 else B, store.revision)

    asyncio.run(main())
