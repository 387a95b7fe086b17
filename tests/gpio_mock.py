"""gpiozero's MockFactory as the pin factory, and an RGB status LED read from its pins
(tests/test_worker_*.py; tests/test_device_gpio.py has its own, with buttons)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import gpiozero  # the [gpio] extra (scripts/setup installs it): missing, the module fails loudly
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edgeagent.config.device import GpioConfig

RED, GREEN, BLUE = 17, 27, 22
OFF, LISTENING, SPEAKING = (0, 0, 0), (0, 0, 1), (0, 1, 0)
LED = GpioConfig(rgb_pins=(str(RED), str(GREEN), str(BLUE)), idle="off", listening="on blue",
                 thinking="on yellow", speaking="on green")
"""An RGB LED: off when idle, blue listening, yellow thinking, green speaking."""


@contextlib.contextmanager
def mock_pins() -> Iterator[MockFactory]:
    """Mock pins that can do PWM, as the default pin factory; reset afterwards."""
    old = gpiozero.Device.pin_factory
    mock = MockFactory(pin_class=MockPWMPin)
    gpiozero.Device.pin_factory = mock
    try:
        yield mock
    finally:
        mock.reset()
        mock.close()
        gpiozero.Device.pin_factory = old


def colour(mock: MockFactory) -> tuple[int, ...]:
    return tuple(round(float(mock.pin(p).state)) for p in (RED, GREEN, BLUE))


class LedWatch:
    """Reads the LED every 10 ms (on the running loop) and keeps (time, colour) at each change."""

    def __init__(self, mock: MockFactory) -> None:
        self.mock, self.seen = mock, [(time.monotonic(), colour(mock))]
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            now = colour(self.mock)
            if now != self.seen[-1][1]:
                self.seen.append((time.monotonic(), now))
            await asyncio.sleep(0.01)

    def between(self, t0: float, t1: float) -> list[tuple[int, ...]]:
        """The colours shown from ``t0`` to ``t1`` (the one shown at ``t0`` first)."""
        before = [c for t, c in self.seen if t < t0][-1:]
        return before + [c for t, c in self.seen if t0 <= t <= t1]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
