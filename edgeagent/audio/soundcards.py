"""Sound devices as PortAudio sees them: listing, selection by name or index, rate choice.

sounddevice (and so PortAudio) is imported lazily, so that importing this module
or the CLI stays cheap and a missing ``libportaudio2`` becomes one clear error.
PortAudio is not thread-safe: every call into it goes through :data:`PA_LOCK`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from edgeagent.errors import AudioError, DeviceNotFoundError

Kind = Literal["input", "output"]
DeviceSpec = int | str | None

#: Rates tried, after the requested one and the device's default, when opening a device.
FALLBACK_RATES = (48_000, 44_100, 32_000, 22_050, 16_000)

#: Serialises calls into PortAudio (open, close, query) from worker threads.
PA_LOCK = threading.RLock()


def sounddevice() -> Any:
    """The ``sounddevice`` module, or an :class:`AudioError` saying how to get PortAudio."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioError(
            f"PortAudio is not available ({exc}): install it with `apt install libportaudio2`"
        ) from exc
    return sd


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: int
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def is_default(self, kind: Kind) -> bool:
        return self.default_input if kind == "input" else self.default_output

    def describe(self, kind: Kind | None = None) -> str:
        if kind is None:
            ch = f"{self.max_input_channels} in / {self.max_output_channels} out"
        else:
            ch = f"{self.channels(kind)} ch"
        return f"{self.index}: {self.name!r} ({self.hostapi}, {ch}, {self.default_samplerate} Hz)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_indices(sd: Any) -> tuple[int, int]:
    def idx(value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    default = sd.default.device
    try:
        dflt_in, dflt_out = idx(default[0]), idx(default[1])
    except (TypeError, IndexError):
        dflt_in = dflt_out = idx(default)
    if dflt_in < 0 or dflt_out < 0:  # sounddevice's default is "PortAudio's default"
        for api in sd.query_hostapis():
            if dflt_in < 0 and api["default_input_device"] >= 0:
                dflt_in = int(api["default_input_device"])
            if dflt_out < 0 and api["default_output_device"] >= 0:
                dflt_out = int(api["default_output_device"])
    return dflt_in, dflt_out


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, in its index order."""
    sd = sounddevice()
    with PA_LOCK:
        try:
            raw = sd.query_devices()
            apis = sd.query_hostapis()
            dflt_in, dflt_out = _default_indices(sd)
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot list sound devices: {exc}") from exc
    out = []
    for i, d in enumerate(raw):
        out.append(
            DeviceInfo(
                index=i,
                name=str(d["name"]),
                hostapi=str(apis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=round(float(d["default_samplerate"])),
                default_input=i == dflt_in,
                default_output=i == dflt_out,
            )
        )
    return out


def describe_devices(devices: Sequence[DeviceInfo], kind: Kind) -> str:
    """The devices usable for ``kind``, one per line, for error messages."""
    usable = [d for d in devices if d.channels(kind)]
    if not usable:
        return f"no {kind} devices at all (is the sound card or PulseAudio running?)"
    lines = [f"  {'*' if d.is_default(kind) else ' '} {d.describe(kind)}" for d in usable]
    return f"available {kind} devices (* default):\n" + "\n".join(lines)


def find_device(spec: DeviceSpec, kind: Kind, devices: Sequence[DeviceInfo] | None = None) -> DeviceInfo:
    """The device for ``spec``: None (the default), an index, an exact name, or a unique
    case-insensitive substring of a name. Raises :class:`DeviceNotFoundError` listing
    the devices that are available."""
    devs = list(devices) if devices is not None else list_devices()
    usable = [d for d in devs if d.channels(kind)]

    def fail(why: str) -> DeviceNotFoundError:
        return DeviceNotFoundError(f"{why}; {describe_devices(devs, kind)}")

    if spec is None:
        for d in usable:
            if d.is_default(kind):
                return d
        if usable:
            return usable[0]
        raise fail(f"no default {kind} device")
    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        for d in devs:
            if d.index == spec:
                if not d.channels(kind):
                    raise fail(f"{kind} device {spec} ({d.name!r}) has no {kind} channels")
                return d
        raise fail(f"there is no {kind} device with index {spec}")
    exact = [d for d in usable if d.name == spec]
    if exact:
        return exact[0]
    needle = spec.casefold()
    partial = [d for d in usable if needle in d.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        names = ", ".join(repr(d.name) for d in partial)
        raise fail(f"{kind} device name {spec!r} matches several devices ({names}): give an index")
    raise fail(f"no {kind} device named {spec!r}")


def candidate_rates(requested: int | None, default_rate: int) -> list[int]:
    """The rates to try, in order: the requested one, the device default, then the usual ones."""
    rates: list[int] = []
    for r in (requested, default_rate, *FALLBACK_RATES):
        if r and r not in rates:
            rates.append(int(r))
    return rates


def choose_settings(
    device: DeviceInfo,
    kind: Kind,
    requested_rate: int | None,
    accepts: Callable[[int, int], str | None],
    devices: Sequence[DeviceInfo] = (),
) -> tuple[int, int]:
    """The first (rate, channels) the device accepts; ``accepts`` returns None or why not.

    Mono is preferred; a device that only takes stereo is opened in stereo and
    mixed down. Raises :class:`AudioError` listing the rates tried when none works.
    """
    rates = candidate_rates(requested_rate, device.default_samplerate)
    channel_options = [1] + ([2] if device.channels(kind) >= 2 else [])
    reasons: list[str] = []
    for rate in rates:
        for ch in channel_options:
            why = accepts(rate, ch)
            if why is None:
                return rate, ch
            if why not in reasons:
                reasons.append(why)
    listing = describe_devices(devices, kind) if devices else ""
    raise AudioError(
        f"{kind} device {device.describe(kind)} refuses every rate tried "
        f"({', '.join(str(r) for r in rates)} Hz; mono and stereo): {'; '.join(reasons)}"
        + (f"\n{listing}" if listing else "")
    )


def check_settings(device: DeviceInfo, kind: Kind, rate: int, channels: int) -> str | None:
    """Ask PortAudio whether it can open ``device`` this way; None when it can."""
    sd = sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    with PA_LOCK:
        try:
            check(device=device.index, samplerate=rate, channels=channels, dtype="int16")
        except (sd.PortAudioError, ValueError) as exc:
            return f"{rate} Hz x{channels}: {exc}"
    return None
