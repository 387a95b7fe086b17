"""The pure parts of scripts/bench-room: loud blocks, the true end of speech, the first reply
heard, and the verdict (room p50 against local p50 + 150 ms)."""

from __future__ import annotations

import json

import numpy as np

from edgeagent.bench.participant import BLOCK, RATE, first_loud_after, last_loud_block, loud
from edgeagent.bench.room import RoomTurn, figures, report


def tone(seconds: float, dbfs: float = -20.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (10 ** (dbfs / 20) * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.int16)


def test_loud_is_rms_above_the_threshold() -> None:
    assert loud(tone(0.01))
    assert not loud(tone(0.01, -60.0))
    assert not loud(quiet(0.01))
    assert not loud(np.zeros(0, np.int16))
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 10 ** (-65 / 20) * 32768, BLOCK)).astype(np.int16)  # the participant's room noise
    assert not loud(noise)


def test_last_loud_block_is_the_true_end_not_the_length() -> None:
    speech = np.concatenate([quiet(0.1), tone(0.3), quiet(0.05), tone(0.1, -30.0), quiet(0.2)])
    assert last_loud_block(speech) == 54  # 0.1 + 0.3 + 0.05 + 0.1 s = block 54 is the last loud one
    assert last_loud_block(quiet(0.5)) == -1
    # a partial last block counts when it is loud
    assert last_loud_block(np.concatenate([quiet(0.02), tone(0.005)])) == 2


def test_first_loud_after_skips_what_came_before_the_end() -> None:
    heard = [(1.0, tone(0.01)), (2.0, tone(0.01, -60.0)), (2.5, tone(0.01)), (3.0, tone(0.01))]
    assert first_loud_after(heard, 1.5) == 2.5
    assert first_loud_after(heard, 0.0) == 1.0
    assert first_loud_after(heard, 3.1) is None


def turns(values: list[float | None]) -> list[RoomTurn]:
    return [RoomTurn(f"q{i}", e2e_ms=v, out_ms=None if v is None else 50.0) for i, v in enumerate(values)]


def test_verdict_is_room_p50_minus_local_p50_against_150_ms() -> None:
    local = {"p50_ms": 600.0, "p90_ms": 700.0, "answered": 4, "turns": []}
    ok = figures(turns([700.0, 740.0, 760.0, 900.0]), local, 4)
    assert ok["room_p50_ms"] == 750.0 and ok["room_p90_ms"] == 900.0
    assert ok["added_p50_ms"] == 150.0 and ok["missed"] == []
    slow = figures(turns([700.0, 760.0, 770.0, 900.0]), local, 4)
    assert slow["added_p50_ms"] == 165.0 and slow["missed"] == ["added_p50_ms"]
    unanswered = figures(turns([700.0, None, 740.0, 760.0]), local, 4)
    assert unanswered["room"]["answered"] == 3 and "room_answered_fraction" in unanswered["missed"]
    no_local = figures(turns([700.0]), None, 1)
    assert no_local["added_p50_ms"] is None and "added_p50_ms" in no_local["missed"]
    json.dumps(ok)  # one JSON line


def test_report_shows_both_paths_and_the_verdict() -> None:
    local = {"p50_ms": 600.0, "p90_ms": 700.0, "answered": 2,
             "turns": [{"e2e_ms": 590.0}, {"e2e_ms": 610.0}]}
    text = report(figures(turns([800.0, 900.0]), local, 2))
    assert "room adds 250 ms at p50 (limit 150 ms): MISSED" in text
    assert "p50 850 ms" in text and "p50 600 ms" in text
    assert "590" in text and "610" in text
