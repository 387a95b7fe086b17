"""The soak's verdict arithmetic (edgeagent/bench/soak_judge.py): slope, growth, p50 windows, scaling."""

from __future__ import annotations

import pytest

from edgeagent.bench.soak_judge import (
    Sample,
    judge,
    p50_limit_ratio,
    rss_limit_mb_per_h,
    sample_interval_s,
    slope_per_h,
    warmup_cycles,
    windows_for,
)


def steady(duration_s: float, every_s: float, rss_per_h: float = 0.0, **counts: int) -> list[Sample]:
    """Samples of a process whose RSS grows at ``rss_per_h`` MB/h, with a noisy +-0.5 MB zigzag."""
    base = {"fds": 40, "threads": 35, "tasks": 21} | counts
    out, t, i = [], 0.0, 0
    while t <= duration_s:
        out.append(Sample(t, 700.0 + rss_per_h * t / 3600 + (0.5 if i % 2 else -0.5), **base))
        t, i = t + every_s, i + 1
    return out


def test_slope_is_least_squares_per_hour() -> None:
    assert slope_per_h([(0, 100.0), (1800, 101.0), (3600, 102.0)]) == pytest.approx(2.0)
    # one outlier moves a least-squares fit by its share, not by its height
    assert slope_per_h([(0, 10.0), (60, 10.0), (120, 10.0), (180, 13.0)]) == pytest.approx(54.0)
    assert slope_per_h([(0, 1.0), (60, 2.0)]) is None  # two points: no slope
    assert slope_per_h([(5, 1.0), (5, 2.0), (5, 3.0)]) is None


def test_windows_and_limits_scale_for_a_short_run() -> None:
    assert windows_for(3600).first_s == 600 and windows_for(3600).last_s == 600
    assert windows_for(180).first_s == 60  # a third
    assert windows_for(1800).first_s == 600
    assert rss_limit_mb_per_h(50 * 60) == 5.0 and rss_limit_mb_per_h(90 * 60) == 5.0
    assert rss_limit_mb_per_h(120) == pytest.approx(125.0)  # 4.17 MB over two minutes
    assert sample_interval_s(60) == 30 and sample_interval_s(3) == 10
    assert warmup_cycles(3) == 6 and warmup_cycles(60) == 6  # the history full (64 messages, 12 a pass)


def test_a_short_runs_warm_up_counts_in_no_window() -> None:
    """Samples and turns of the warm-up (negative times): a low thread count, an RSS climb and
    slow turns there are not growth, nor the first window's p50."""
    warm = [Sample(t, 600.0 + t / 2, 40, 33, 21) for t in (-60.0, -50.0, -40.0, -30.0, -20.0, -10.0)]
    lat = [(-50.0, 2000.0), (-20.0, 2000.0), (10.0, 500.0), (170.0, 520.0)]
    fig = judge([*warm, *steady(180, 10)], lat, 4, 4, 180)
    assert fig["failed"] == [] and fig["p50_first_ms"] == 500.0 and fig["threads_first"] == 35


def test_a_steady_hour_passes_and_a_leak_of_6_mb_per_hour_fails() -> None:
    lat = [(t, 500.0 + (t % 7)) for t in range(0, 3600, 20)]
    ok = judge(steady(3600, 30, rss_per_h=4.0), lat, asked=180, answered=180, duration_s=3600)
    assert ok["failed"] == [] and ok["rss_slope_mb_per_h"] == pytest.approx(4.0, abs=0.2)
    leak = judge(steady(3600, 30, rss_per_h=6.0), lat, asked=180, answered=180, duration_s=3600)
    assert len(leak["failed"]) == 1 and leak["failed"][0].startswith("rss: grows 6.0 MB/h")


def test_the_warm_up_is_left_out_of_the_rss_slope() -> None:
    samples = [Sample(s.t_s, s.rss_mb + (80.0 if s.t_s >= 300 else 0.0), 40, 35, 21) for s in steady(3600, 30)]
    assert judge(samples, [(100, 500.0), (3500, 500.0)], 2, 2, 3600)["failed"] == []


def test_any_growth_of_descriptors_threads_or_tasks_fails() -> None:
    lat = [(10.0, 500.0), (170.0, 500.0)]
    samples = steady(180, 10)
    grown = [Sample(s.t_s, s.rss_mb, s.fds + (1 if s.t_s >= 120 else 0), s.threads, s.tasks) for s in samples]
    assert judge(grown, lat, 2, 2, 180)["failed"] == ["fds: 40 -> 41 (the least value of the last window is "
                                                      "above the first's)"]
    # threads started on first use (before the second half of the first window) and a sample
    # taken while a reply's tasks were still finishing are not growth
    warm = [Sample(s.t_s, s.rss_mb, s.fds, 33 if s.t_s < 20 else 35, s.tasks + (9 if s.t_s == 170 else 0))
            for s in samples]
    assert judge(warm, lat, 2, 2, 180)["failed"] == []


def test_p50_of_the_last_window_may_be_at_most_10_percent_above_the_first() -> None:
    samples = steady(3600, 30)
    first = [(float(t), 500.0 + t % 2) for t in range(0, 600, 15)]  # 40 turns a window: the plain 10 %
    ok = [(3000.0 + t, 545.0 + t % 2) for t in range(0, 600, 15)]
    assert judge(samples, [*first, *ok], 80, 80, 3600)["failed"] == []
    slow = judge(samples, [*first, *((3000.0 + t, 560.0) for t in range(0, 600, 15))], 80, 80, 3600)
    assert slow["failed"] == ["latency: p50 560 ms in the last window, 500 ms in the first "
                              "(limit +10 % with 40 turns in the smaller window)"]
    assert judge(samples, first, 40, 40, 3600)["failed"] == ["latency: no timed turn in the first or the last window"]


def test_few_turns_in_a_window_widen_the_p50_allowance_by_sqrt_30_over_n() -> None:
    assert p50_limit_ratio(30) == pytest.approx(1.10) and p50_limit_ratio(70) == pytest.approx(1.10)
    assert p50_limit_ratio(2) == pytest.approx(1.387, abs=1e-3) and p50_limit_ratio(6) == pytest.approx(1.224, abs=1e-3)
    samples = steady(186, 10)
    # the 3-minute run of the final design: 653, 666, 981, 781 ms in the first third, 1279, 564 in the last
    run = [(1.0, 653.0), (14.0, 666.0), (29.0, 981.0), (46.0, 781.0), (89.0, 719.0), (103.0, 569.0),
           (113.0, 575.0), (125.0, 1279.0), (171.0, 564.0)]
    assert judge(samples, run, 9, 9, 186)["failed"] == []
    doubled = [(t, ms * (2.0 if t > 120 else 1.0)) for t, ms in run]
    assert judge(samples, doubled, 9, 9, 186)["failed"] == [
        "latency: p50 1843 ms in the last window, 724 ms in the first (limit +39 % with 2 turns in the smaller window)"]


def test_an_unanswered_question_fails() -> None:
    lat = [(10.0, 500.0), (170.0, 500.0)]
    assert judge(steady(180, 10), lat, 25, 24, 180)["failed"] == ["answers: 1 of 25 questions unanswered"]
    assert "answers: no question was asked" in judge(steady(180, 10), lat, 0, 0, 180)["failed"]
