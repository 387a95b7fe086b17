"""The drop-in that lets the service use an NVIDIA Jetson's GPU (``llm.gpu_layers``).

The unit allows the service only the sound and GPIO devices (``DevicePolicy=closed``). Where
this machine has an NVIDIA GPU's device nodes (a Jetson: ``/dev/nvmap``, ``/dev/nvhost-*``,
``/dev/nvgpu/*/*``; a PCIe card: ``/dev/nvidia*``; which ones depends on the L4T release),
``edgeagent service install`` writes the drop-in :data:`DROPIN`: ``DeviceAllow=`` for each of
those nodes, and the group ``video`` that owns them on a Jetson. Elsewhere it writes nothing.
The nodes are found, not listed here, so that a JetPack that names them differently still
works; it has not been run on a Jetson by the project (there was none): ``systemctl edit
edgeagent`` changes it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: The GPU's device nodes, as glob patterns under /dev.
PATTERNS = ("nvmap", "nvhost-*", "nvgpu/*/*", "nvidia*", "host1x-fence")
#: The drop-in (``systemctl cat edgeagent`` shows it after the unit).
DROPIN = "/etc/systemd/system/edgeagent.service.d/nvidia-gpu.conf"


def gpu_nodes(dev: Path) -> list[str]:
    """The GPU's device nodes in ``dev`` (a /dev; another root's in tests), as /dev/... paths, sorted."""
    found = {p for pattern in PATTERNS for p in dev.glob(pattern) if not p.is_dir()}
    return sorted("/dev/" + p.relative_to(dev).as_posix() for p in found)


def dropin_text(nodes: Sequence[str]) -> str:
    """The drop-in that allows ``nodes`` (see the module docs)."""
    lines = [
        "# Written by `edgeagent service install` (again by each install): this machine has an NVIDIA",
        "# GPU's device nodes. The unit allows only sound and GPIO (DevicePolicy=closed); these are",
        "# for llm.gpu_layers (llama.cpp built with CUDA, see scripts/setup). Owned by group video.",
        "[Service]",
        "SupplementaryGroups=video",
        *(f"DeviceAllow={node} rw" for node in nodes),
    ]
    return "\n".join(lines) + "\n"
