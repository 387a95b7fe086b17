"""A machine without sound devices, for commands run as subprocesses (see tests/test_runner.py).

PulseAudio pointed at a socket that does not exist (``PULSE_SERVER``) with autospawn off
(``PULSE_CLIENTCONFIG``), so ALSA's ``pulse``/``default`` PCMs do not open, and no ALSA
sound card: CI containers have no ``/dev/snd``; where there is one, the command runs in a
private mount namespace with an empty tmpfs over ``/dev/snd`` (``unshare``).
"""

from __future__ import annotations

from pathlib import Path


def no_sound_env(tmp: Path) -> dict[str, str]:
    """Environment variables under which PulseAudio cannot be reached (files go in ``tmp``)."""
    client_conf = tmp / "client.conf"
    client_conf.write_text("autospawn = no\n")
    return {"PULSE_SERVER": f"unix:{tmp}/no-such-pulse-socket", "PULSE_CLIENTCONFIG": str(client_conf)}


def no_sound_card() -> tuple[str, ...]:
    """A command prefix under which ALSA sees no sound card."""
    if not Path("/dev/snd").exists():
        return ()
    return ("unshare", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs none /dev/snd && exec "$0" "$@"')
