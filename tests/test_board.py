"""``edgeagent run --check`` names the board: its device-tree model, the machine and the cores."""

from __future__ import annotations

import platform
from pathlib import Path

from edgeagent.device.board import board_line, board_model, usable_cores


def test_the_model_is_the_device_tree_string_up_to_its_nul(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert board_model(model) == "Raspberry Pi 5 Model B Rev 1.0"
    line = board_line(model)
    assert line == f"board: Raspberry Pi 5 Model B Rev 1.0 ({platform.machine()}, {usable_cores()} cores)"


def test_no_device_tree_says_so(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert board_model(absent) is None
    assert board_line(absent).startswith(f"board: no {absent} (")
    empty = tmp_path / "empty"
    empty.write_bytes(b"\0")
    assert board_model(empty) is None


def test_jetson_model_with_trailing_whitespace(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit \n\0garbage")
    assert board_model(model) == "NVIDIA Jetson Orin Nano Developer Kit"
