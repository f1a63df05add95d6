"""Locomotion metrics from plain time series: the `eval` keys of DESIGN.md and per-phase figures.

Pure numpy, so the simulator evaluation (`metaloco eval`) and the bag-based trial
metrics (`metaloco trial`, `metaloco report`) compute the same numbers with the
same code. Input is an `EpisodeSeries`: sample times, commanded and measured
forward velocity, and optionally joint torques and velocities, fall flags,
rewards and event times.

Formulas (integrals use the trapezoid rule over the samples, so uneven sampling
is weighted by time; a window [a, b] is cut by linear interpolation of the
cumulative integrals, so the phases of an episode add up to the episode):

- vx is the base's forward velocity averaged over one stride (`stride_average`, 0.5 s), in sim and in bags.
- distance_m = ∫ vx dt: forward distance in the heading frame (backwards counts negative).
- tracking_error_mps = ∫ |cmd_vx - vx| dt / (b - a): time-mean absolute forward-velocity error.
- mean_speed_mps = distance_m / (b - a).
- energy_j = ∫ Σ_j |τ_j q̇_j| dt: positive mechanical work of all joints (no regeneration).
- cost_of_transport = energy_j / (m g distance_m); None when distance_m <= 0 or m is unknown.
- falls: rising edges of the fall flag (a sample fallen after one that was not; a first fallen sample counts).
- recovery_time_s: from the last event (of any kind) to the first sample from which |cmd_vx - vx| <= 0.1 m/s
  holds, without a fall, on every sample for the next 1 s; None if that never happens within the
  episode; 0 without events.
- recovery_tolerance_mps: the smallest tolerance under which recovery_time_s would be at most 1 s: over the
  1 s windows starting within 1 s of the last event, the least of their largest |cmd_vx - vx| (a fallen
  sample counts as infinite). At most 0.1 exactly when recovery_time_s is at most 1 s: it says by how much
  an episode missed. None without events.
- settled_speed_mps: mean vx from 1 s after the last event to the end; None without events or such time.
- return: Σ rewards, when rewards are given (simulation only: a robot has no reward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GRAVITY = 9.81
#: recovery_time_s: the forward-velocity error must stay within this (m/s) ...
RECOVERY_TOLERANCE_MPS = 0.1
#: ... for this long (s).
RECOVERY_HOLD_S = 1.0
#: The time after the last event within which recovery is wanted (s): the issue's recovery target.
RECOVERY_WITHIN_S = 1.0
#: Window (s) of the forward-velocity average: one stride of the 2 Hz trot, whose base surges and brakes
#: within a stride by more than RECOVERY_TOLERANCE_MPS (the instantaneous speed would measure the gait).
STRIDE_S = 0.5
#: The eval keys of DESIGN.md, in their order.
EVAL_KEYS = ("scenario", "method", "episodes", "return_mean", "distance_m", "tracking_error_mps", "falls",
             "recovery_time_s")


@dataclass
class EpisodeSeries:
    """One episode or trial as arrays sampled at times `t`.

    Attributes:
        t: (T,) sample times in s, strictly increasing.
        cmd_vx: (T,) commanded forward velocity (m/s).
        vx: (T,) measured forward velocity of the base in its heading frame (m/s).
        tau: (T, J) joint torques (Nm), or None.
        qdot: (T, J) joint velocities (rad/s), or None.
        fallen: (T,) fall flags, or None (no falls known).
        event_times: (E,) times of the scenario's events (s).
        reward: (T,) per-sample rewards, or None.
        mass_kg: Total mass for the cost of transport, or None.
    """

    t: np.ndarray
    cmd_vx: np.ndarray
    vx: np.ndarray
    tau: np.ndarray | None = None
    qdot: np.ndarray | None = None
    fallen: np.ndarray | None = None
    event_times: np.ndarray | tuple = ()
    reward: np.ndarray | None = None
    mass_kg: float | None = None

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=float)
        self.cmd_vx = np.asarray(self.cmd_vx, dtype=float)
        self.vx = np.asarray(self.vx, dtype=float)
        self.event_times = np.sort(np.asarray(self.event_times, dtype=float).reshape(-1))
        n = len(self.t)
        if n == 0:
            raise ValueError("EpisodeSeries needs at least one sample")
        if np.any(np.diff(self.t) <= 0):
            raise ValueError("EpisodeSeries.t must be strictly increasing")
        for key in ("cmd_vx", "vx", "tau", "qdot", "fallen", "reward"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"EpisodeSeries.{key} has {len(value)} samples, t has {n}")
        for key in ("t", "cmd_vx", "vx"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise ValueError(f"EpisodeSeries.{key} holds NaN or infinite values")


def standard_error(values) -> float:
    """Standard error of the mean of `values` (sample standard deviation over sqrt(n)); 0.0 for fewer than two."""
    v = np.asarray(values, dtype=float)
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def stride_average(t: np.ndarray, v: np.ndarray, window_s: float = STRIDE_S) -> np.ndarray:
    """Centred moving average of the samples within ±window_s/2 of each sample (fewer at the ends).

    Both `metaloco eval` and trial metrics pass the measured forward velocity through this before
    building an `EpisodeSeries`, so sim and bag figures mean the same thing.
    """
    t, v = np.asarray(t, dtype=float), np.asarray(v, dtype=float)
    lo = np.searchsorted(t, t - window_s / 2, side="left")
    hi = np.searchsorted(t, t + window_s / 2, side="right")
    sums = np.concatenate([[0.0], np.cumsum(v)])
    return (sums[hi] - sums[lo]) / np.maximum(hi - lo, 1)


def cumulative(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of x over t, starting at 0 (same length as t)."""
    steps = 0.5 * (x[1:] + x[:-1]) * np.diff(t)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _between(t: np.ndarray, c: np.ndarray, a: float, b: float) -> float:
    return float(np.interp(b, t, c) - np.interp(a, t, c))


def joint_power(tau: np.ndarray, qdot: np.ndarray) -> np.ndarray:
    """Σ_j |τ_j q̇_j| per sample (W); joints with a missing reading (NaN) count as 0."""
    return np.nansum(np.abs(np.asarray(tau, dtype=float) * np.asarray(qdot, dtype=float)), axis=1)


def cost_of_transport(energy_j: float | None, mass_kg: float | None, distance_m: float) -> float | None:
    """energy / (m g d): dimensionless; None without energy or mass, or for no forward progress."""
    if energy_j is None or not mass_kg or distance_m <= 0:
        return None
    return energy_j / (mass_kg * GRAVITY * distance_m)


def count_falls(fallen: np.ndarray | None, t: np.ndarray | None = None, a: float = -np.inf,
                b: float = np.inf) -> int:
    """Rising edges of the fall flag, optionally only those at times in [a, b)."""
    if fallen is None or len(fallen) == 0:
        return 0
    flags = np.asarray(fallen, dtype=bool)
    rising = flags & ~np.concatenate([[False], flags[:-1]])
    if t is not None:
        rising &= (t >= a) & (t < b)
    return int(rising.sum())


def recovery_time_s(t: np.ndarray, cmd_vx: np.ndarray, vx: np.ndarray, event_times: np.ndarray | tuple,
                    fallen: np.ndarray | None = None, tolerance: float = RECOVERY_TOLERANCE_MPS,
                    hold_s: float = RECOVERY_HOLD_S) -> float | None:
    """Time from the last event until the forward-velocity error stays within `tolerance` for `hold_s`.

    Args:
        t: Sample times (s).
        cmd_vx: Commanded forward velocity.
        vx: Measured forward velocity.
        event_times: Event times; without any the answer is 0.
        fallen: Fall flags; a fallen sample is never within tolerance.
        tolerance: Allowed |cmd_vx - vx| (m/s).
        hold_s: How long it must hold (s).

    Returns:
        Seconds after the last event, or None if the error never settles for `hold_s` in the data.
    """
    events = np.asarray(event_times, dtype=float).reshape(-1)
    if events.size == 0:
        return 0.0
    last = float(events.max())
    t = np.asarray(t, dtype=float)
    ok = np.abs(np.asarray(cmd_vx, dtype=float) - np.asarray(vx, dtype=float)) <= tolerance
    if fallen is not None:
        ok &= ~np.asarray(fallen, dtype=bool)
    ok &= t >= last
    eps = 1e-6
    i, n = 0, len(t)
    while i < n:
        if not ok[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and ok[j + 1]:
            j += 1
        if t[j] - t[i] >= hold_s - eps:
            return float(t[i] - last)
        i = j + 1
    return None


def recovery_tolerance_mps(t: np.ndarray, cmd_vx: np.ndarray, vx: np.ndarray, event_times: np.ndarray | tuple,
                           fallen: np.ndarray | None = None, within_s: float = RECOVERY_WITHIN_S,
                           hold_s: float = RECOVERY_HOLD_S) -> float | None:
    """The smallest tolerance under which `recovery_time_s` would be at most `within_s`.

    For each sample from the last event up to `within_s` after it: the largest |cmd_vx - vx| over the `hold_s`
    that follow it (the samples `recovery_time_s` would check from there); the least of those. A fallen sample's
    error is infinite. So `recovery_time_s(..., tolerance=x) <= within_s` exactly when this is at most x.

    Returns:
        The tolerance (m/s); inf if no `hold_s` window without a fall starts in time; None without events.
    """
    events = np.asarray(event_times, dtype=float).reshape(-1)
    if events.size == 0:
        return None
    last = float(events.max())
    t = np.asarray(t, dtype=float)
    err = np.abs(np.asarray(cmd_vx, dtype=float) - np.asarray(vx, dtype=float))
    if fallen is not None:
        err[np.asarray(fallen, dtype=bool)] = np.inf
    best = np.inf
    for i in np.flatnonzero((t >= last) & (t - last <= within_s)):
        j = int(np.searchsorted(t, t[i] + hold_s - 1e-6, side="left"))  # the first sample hold_s after t[i]
        if j >= len(t):
            break
        best = min(best, float(err[i:j + 1].max()))
    return best


def window_metrics(ep: EpisodeSeries, a: float, b: float) -> dict[str, Any]:
    """Speed, tracking, distance, energy, cost of transport and falls over the window [a, b] of an episode."""
    duration = b - a
    distance = _between(ep.t, cumulative(ep.t, ep.vx), a, b)
    abs_err = _between(ep.t, cumulative(ep.t, np.abs(ep.cmd_vx - ep.vx)), a, b)
    command = _between(ep.t, cumulative(ep.t, ep.cmd_vx), a, b)
    energy = None
    if ep.tau is not None and ep.qdot is not None:
        energy = _between(ep.t, cumulative(ep.t, joint_power(ep.tau, ep.qdot)), a, b)
    if duration > 0:
        mean_cmd, mean_speed, error = command / duration, distance / duration, abs_err / duration
    else:  # a one-sample window: its values at that sample
        k = int(np.searchsorted(ep.t, a, side="right")) - 1
        mean_cmd, mean_speed = float(ep.cmd_vx[k]), float(ep.vx[k])
        error = abs(mean_cmd - mean_speed)
    return {
        "start_s": float(a),
        "end_s": float(b),
        "mean_command_mps": mean_cmd,
        "mean_speed_mps": mean_speed,
        "tracking_error_mps": error,
        "distance_m": distance,
        "energy_j": energy,
        "cost_of_transport": cost_of_transport(energy, ep.mass_kg, distance),
        "falls": count_falls(ep.fallen, ep.t, a, b if b < ep.t[-1] else np.inf),
    }


def phase_bounds(ep: EpisodeSeries) -> list[tuple[float, float]]:
    """Windows between events: [t0, e1], [e1, e2], ..., [ek, tend] (events outside the data are ignored)."""
    t0, t1 = float(ep.t[0]), float(ep.t[-1])
    cuts = [float(e) for e in ep.event_times if t0 < e < t1]
    edges = [t0, *cuts, t1]
    return list(zip(edges[:-1], edges[1:]))


def phase_metrics(ep: EpisodeSeries) -> list[dict[str, Any]]:
    """`window_metrics` for each phase between events, in time order."""
    return [window_metrics(ep, a, b) for a, b in phase_bounds(ep)]


def phase_mean(t: np.ndarray, values: np.ndarray, a: float, b: float) -> np.ndarray | None:
    """Plain mean of the rows of `values` sampled in [a, b] (e.g. the latent in a phase); None if none."""
    rows = np.asarray(values, dtype=float)[(t >= a) & (t <= b)]
    return rows.mean(axis=0) if len(rows) else None


def episode_metrics(ep: EpisodeSeries) -> dict[str, Any]:
    """Whole-episode figures: `window_metrics` over the episode, its return and recovery time."""
    out = window_metrics(ep, float(ep.t[0]), float(ep.t[-1]))
    out["return"] = float(np.sum(ep.reward)) if ep.reward is not None else None
    out["recovery_time_s"] = recovery_time_s(ep.t, ep.cmd_vx, ep.vx, ep.event_times, ep.fallen)
    out["recovery_tolerance_mps"] = recovery_tolerance_mps(ep.t, ep.cmd_vx, ep.vx, ep.event_times, ep.fallen)
    events = np.asarray(ep.event_times, dtype=float).reshape(-1)
    settle = float(events.max()) + RECOVERY_WITHIN_S if events.size else None
    out["settled_speed_mps"] = (window_metrics(ep, settle, float(ep.t[-1]))["mean_speed_mps"]
                                if settle is not None and settle < ep.t[-1] else None)
    return out


def summarize(scenario: str, method: str, episodes: list[EpisodeSeries]) -> dict[str, Any]:
    """The DESIGN.md eval object over several episodes.

    return_mean, distance_m and tracking_error_mps are means over episodes; falls is the total;
    recovery_time_s is the mean over episodes if every episode recovered, else None (one episode
    that never recovers makes the method "does not recover"). return_mean is None when any episode
    has no rewards.

    Args:
        scenario: Scenario name.
        method: Method name (adaptive, nominal, robust, oracle).
        episodes: At least one episode.

    Returns:
        A dict with exactly EVAL_KEYS.
    """
    if not episodes:
        raise ValueError("summarize needs at least one episode")
    per = [episode_metrics(ep) for ep in episodes]
    returns = [m["return"] for m in per]
    recoveries = [m["recovery_time_s"] for m in per]
    return {
        "scenario": scenario,
        "method": method,
        "episodes": len(per),
        "return_mean": None if None in returns else float(np.mean(returns)),
        "distance_m": float(np.mean([m["distance_m"] for m in per])),
        "tracking_error_mps": float(np.mean([m["tracking_error_mps"] for m in per])),
        "falls": int(sum(m["falls"] for m in per)),
        "recovery_time_s": None if None in recoveries else float(np.mean(recoveries)),
    }
