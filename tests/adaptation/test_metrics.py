"""Metrics on synthetic series whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaloco.adaptation.metrics import (
    EVAL_KEYS, EpisodeSeries, count_falls, episode_metrics, phase_metrics, recovery_time_s, recovery_tolerance_mps,
    stride_average, summarize,
)

DT = 0.01
T = np.round(np.arange(0.0, 10.0 + DT / 2, DT), 6)
CMD = np.full_like(T, 0.5)


def speed(slow_from: float, slow_until: float, slow: float = 0.1) -> np.ndarray:
    return np.where((T >= slow_from) & (T < slow_until), slow, 0.5)


def test_recovery_time_is_time_from_last_event_until_error_settles():
    vx = speed(4.0, 5.5)
    assert recovery_time_s(T, CMD, vx, [2.0, 4.0]) == pytest.approx(1.5, abs=1e-9)


def test_recovery_needs_the_error_to_hold_for_a_full_second():
    vx = speed(4.0, 5.5)
    vx[(T >= 6.0) & (T < 6.1)] = 0.3  # back within tolerance at 5.5, out again at 6.0 for 0.1 s
    assert recovery_time_s(T, CMD, vx, [4.0]) == pytest.approx(2.1, abs=1e-9)


def test_never_recovering_gives_none():
    assert recovery_time_s(T, CMD, speed(4.0, 99.0), [4.0]) is None
    # back in tolerance only 0.5 s before the data ends: not "for 1 s"
    assert recovery_time_s(T, CMD, speed(4.0, 9.5), [4.0]) is None


def test_no_events_means_zero_recovery_time():
    assert recovery_time_s(T, CMD, speed(4.0, 99.0), []) == 0.0


def test_the_tolerance_recovery_would_need_says_by_how_much_it_was_missed():
    slow = speed(4.0, 99.0, slow=0.36)  # settles 0.14 m/s under the command for good
    assert recovery_time_s(T, CMD, slow, [4.0]) is None
    assert recovery_tolerance_mps(T, CMD, slow, [4.0]) == pytest.approx(0.14)
    late = speed(4.0, 5.5)  # back on the command 1.5 s after the event: the first 1 s window starts at most 1 s in
    assert recovery_tolerance_mps(T, CMD, late, [4.0]) == pytest.approx(0.4)
    assert recovery_tolerance_mps(T, CMD, speed(4.0, 4.7), [4.0]) == pytest.approx(0.0)
    assert recovery_tolerance_mps(T, CMD, slow, []) is None
    fallen = T >= 4.5
    assert recovery_tolerance_mps(T, CMD, CMD.copy(), [4.0], fallen=fallen) == math.inf
    m = episode_metrics(EpisodeSeries(T, CMD, slow, event_times=[4.0]))
    assert m["recovery_tolerance_mps"] == pytest.approx(0.14)
    assert m["settled_speed_mps"] == pytest.approx(0.36)
    assert episode_metrics(EpisodeSeries(T, CMD, slow))["settled_speed_mps"] is None


def test_the_needed_tolerance_is_at_most_the_tolerance_exactly_when_recovery_is_within_one_second():
    rng = np.random.default_rng(0)
    for _ in range(200):
        vx = 0.5 + np.cumsum(rng.normal(0.0, 0.01, len(T)))  # a wandering speed: windows of every kind
        event = float(rng.uniform(1.0, 8.0))
        needed = recovery_tolerance_mps(T, CMD, vx, [event])
        for tol in (0.05, 0.1, 0.2):
            rec = recovery_time_s(T, CMD, vx, [event], tolerance=tol)
            assert (needed <= tol) == (rec is not None and rec <= 1.0)
        if math.isfinite(needed):
            rec = recovery_time_s(T, CMD, vx, [event], tolerance=needed)
            assert rec is not None and rec <= 1.0


def test_a_fallen_robot_is_not_recovered_even_when_the_speeds_agree():
    cmd = np.where(T >= 5.0, 0.0, 0.5)  # the command drops to 0 while the robot lies still
    vx = np.where(T >= 4.0, 0.0, 0.5)
    fallen = (T >= 4.0) & (T < 7.0)
    assert recovery_time_s(T, cmd, vx, [4.0]) == pytest.approx(1.0, abs=1e-9)
    assert recovery_time_s(T, cmd, vx, [4.0], fallen=fallen) == pytest.approx(3.0, abs=1e-9)


def test_distance_energy_and_cost_of_transport():
    tau = np.full((len(T), 12), 2.0)
    qdot = np.full((len(T), 12), -3.0)  # negative work counts: |tau * qdot|
    ep = EpisodeSeries(T, CMD, np.full_like(T, 0.5), tau=tau, qdot=qdot, mass_kg=12.0)
    m = episode_metrics(ep)
    assert m["distance_m"] == pytest.approx(5.0)
    assert m["energy_j"] == pytest.approx(12 * 6.0 * 10.0)
    assert m["cost_of_transport"] == pytest.approx(720.0 / (12.0 * 9.81 * 5.0))
    assert m["tracking_error_mps"] == pytest.approx(0.0)
    assert m["recovery_time_s"] == 0.0


def test_cost_of_transport_is_none_without_progress_or_mass():
    tau = np.ones((len(T), 12))
    standing = episode_metrics(EpisodeSeries(T, CMD, np.zeros_like(T), tau=tau, qdot=tau, mass_kg=12.0))
    assert standing["cost_of_transport"] is None
    assert standing["tracking_error_mps"] == pytest.approx(0.5)
    no_mass = episode_metrics(EpisodeSeries(T, CMD, CMD.copy(), tau=tau, qdot=tau))
    assert no_mass["cost_of_transport"] is None and no_mass["energy_j"] == pytest.approx(120.0)


def test_phases_split_at_events_and_add_up_to_the_episode():
    vx = speed(4.0, 5.5)
    tau = np.where(T[:, None] >= 7.0, 4.0, 1.0) * np.ones((1, 12))
    ep = EpisodeSeries(T, CMD, vx, tau=tau, qdot=np.ones_like(tau), event_times=[4.0, 7.0], mass_kg=10.0)
    phases = phase_metrics(ep)
    assert [(p["start_s"], p["end_s"]) for p in phases] == [(0.0, 4.0), (4.0, 7.0), (7.0, 10.0)]
    whole = episode_metrics(ep)
    assert sum(p["distance_m"] for p in phases) == pytest.approx(whole["distance_m"])
    assert sum(p["energy_j"] for p in phases) == pytest.approx(whole["energy_j"])
    assert phases[0]["tracking_error_mps"] == pytest.approx(0.0, abs=1e-3)  # the trapezoid spans the step at 4.0
    assert phases[1]["mean_speed_mps"] == pytest.approx((0.1 * 1.5 + 0.5 * 1.5) / 3.0, abs=0.01)
    assert phases[2]["energy_j"] == pytest.approx(4.0 * 12 * 3.0, rel=0.01)


def test_stride_average_removes_the_surge_within_a_stride():
    gait = 0.5 + 0.2 * np.sign(np.sin(2 * np.pi * 2.0 * T + 0.1))  # surges and brakes at 2 Hz: ±0.2 m/s
    assert recovery_time_s(T, CMD, gait, [1.0]) is None
    smooth = stride_average(T, gait)
    assert np.abs(smooth[50:-50] - 0.5).max() < 0.02
    assert recovery_time_s(T, CMD, smooth, [1.0]) == pytest.approx(0.0, abs=0.3)


def test_falls_are_counted_once_per_fall():
    fallen = np.array([True, True, False, False, True, True, True, False, True])
    assert count_falls(fallen) == 3
    assert count_falls(np.zeros(5, dtype=bool)) == 0
    t = np.arange(len(fallen), dtype=float)
    assert count_falls(fallen, t, 1.0, 5.0) == 1


def test_summarize_gives_exactly_the_eval_keys():
    good = EpisodeSeries(T, CMD, speed(4.0, 5.0), event_times=[4.0], reward=np.full_like(T, 0.1))
    bad = EpisodeSeries(T, CMD, speed(4.0, 99.0), event_times=[4.0], reward=np.full_like(T, 0.2),
                        fallen=T >= 4.5)
    out = summarize("fr_knee_locked", "adaptive", [good, good])
    assert tuple(out) == EVAL_KEYS
    assert out["episodes"] == 2 and out["falls"] == 0
    assert out["recovery_time_s"] == pytest.approx(1.0, abs=1e-9)
    assert out["return_mean"] == pytest.approx(0.1 * len(T))
    mixed = summarize("fr_knee_locked", "nominal", [good, bad])
    assert mixed["recovery_time_s"] is None  # one episode never recovered
    assert mixed["falls"] == 1
    assert mixed["return_mean"] == pytest.approx(0.15 * len(T))
    assert summarize("s", "m", [EpisodeSeries(T, CMD, CMD.copy())])["return_mean"] is None


@pytest.mark.parametrize(
    ("t", "vx", "message"),
    [
        (np.array([0.0, 0.0, 1.0]), np.zeros(3), "strictly increasing"),
        (np.arange(3.0), np.array([0.0, math.nan, 0.0]), "NaN"),
        (np.arange(3.0), np.zeros(2), "samples"),
    ],
)
def test_bad_series_are_refused_with_a_reason(t, vx, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSeries(t, np.zeros(len(t)), vx)
