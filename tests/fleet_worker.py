"""One worker for the fleet test, in a process of its own (so that it can be killed): the worker
protocol and the room join only, no models. Prints ``registered <worker id>`` and
``joined <room>`` on stdout.

    python tests/fleet_worker.py URL API_KEY API_SECRET AGENT_NAME IDENTITY
"""

from __future__ import annotations

import asyncio
import signal
import sys

from edgeagent.config.room import LiveKitConfig
from edgeagent.room.sdk import then_close_sdk
from edgeagent.worker.jobs import Dispatcher
from edgeagent.worker.link import WorkerLink
from edgeagent.worker.run import room_only


async def main(url: str, key: str, secret: str, name: str, identity: str) -> int:
    lk = LiveKitConfig(url=url, api_key=key, api_secret=secret, mode="worker", agent_name=name, identity=identity)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    dispatcher = Dispatcher(lk, room_only(lk), on_status=lambda text: print(text, flush=True))
    link = WorkerLink(lk, dispatcher)
    dispatcher.link = link
    await link.start()
    try:
        await stop.wait()
    finally:
        await dispatcher.aclose()
        await link.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(then_close_sdk(main(*sys.argv[1:6]))))
