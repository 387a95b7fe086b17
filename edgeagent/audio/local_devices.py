"""The configured microphone and speaker of this machine: made from ``[audio]``, opened with a timeout.

    inp, out = make_devices(cfg.audio)      # not yet opened
    await open_device(inp)                  # EdgeAgentError naming the fix when it does not open

Every start-up path that uses the local devices (``edgeagent run``, room+local, the worker's
local agent, the Home Assistant satellite) makes and opens them here, so a device that hangs
fails the same way everywhere, and ``run --check`` and the no-device fallback ask the same
questions.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edgeagent.aio import wait_for
from edgeagent.errors import AudioError, EdgeAgentError

if TYPE_CHECKING:
    from edgeagent.audio.soundcard import DeviceInput, DeviceOutput
    from edgeagent.config import AudioConfig

#: Seconds a sound device may take to open (PulseAudio can be slow to answer).
DEVICE_OPEN_TIMEOUT_S = 15.0


def make_devices(audio: AudioConfig) -> tuple[DeviceInput, DeviceOutput]:
    """The configured microphone (16 kHz frames) and speaker, not yet opened."""
    return make_input(audio), make_output(audio)


def make_input(audio: AudioConfig) -> DeviceInput:
    from edgeagent.audio.frame import RECOGNITION_RATE
    from edgeagent.audio.soundcard import DeviceInput

    return DeviceInput(audio.input_device, rate=RECOGNITION_RATE, frame_ms=audio.frame_ms)


def make_output(audio: AudioConfig) -> DeviceOutput:
    from edgeagent.audio.soundcard import DeviceOutput

    return DeviceOutput(audio.output_device, buffer_ms=audio.output_buffer_ms)


async def open_device(device: DeviceInput | DeviceOutput) -> None:
    """Start ``device``; :class:`EdgeAgentError` when it fails or takes over :data:`DEVICE_OPEN_TIMEOUT_S`."""
    try:
        await wait_for(device.start(), DEVICE_OPEN_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise EdgeAgentError(
            f"the device did not open within {DEVICE_OPEN_TIMEOUT_S:.0f} s; check `edgeagent devices`"
        ) from None


async def check_devices(audio: AudioConfig) -> list[str]:
    """Open and close the microphone and the speaker; one line per problem."""
    problems: list[str] = []
    inp, out = make_devices(audio)
    for what, device in (("microphone", inp), ("speaker", out)):
        try:
            await open_device(device)
        except EdgeAgentError as exc:
            problems.append(f"{what}: {exc}")
        finally:
            await device.aclose()
    return problems


def missing_devices() -> str | None:
    """Why no sound device can be used at all; None when PortAudio lists an input and an output."""
    from edgeagent.audio.soundcards import list_devices

    try:
        devices = list_devices()
    except AudioError as exc:
        return str(exc)
    lacking = [kind for kind in ("input", "output") if not any(d.channels(kind) for d in devices)]
    return f"PortAudio lists no {' and no '.join(lacking)} device" if lacking else None
