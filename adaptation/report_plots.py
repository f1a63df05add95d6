"""The plots of a trial report (`adaptation.report`): speed, latent, and joint torques around each event.

Each takes the report's runs (one panel per run, events marked and numbered as in `report.md`) and writes one
PNG whose bytes depend only on the runs (no timestamp in its metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib import colormaps
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from metaloco.adaptation.report import Run

#: Seconds shown before and after each event in the torque plots.
EVENT_WINDOW_S = (1.0, 2.0)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})


def _mark_events(ax: Any, events: list[tuple[float, str]]) -> None:
    for k, (t, _) in enumerate(events, start=1):
        ax.axvline(t, color="tab:red", linestyle="--", linewidth=0.8)
        ax.annotate(str(k), (t, 1.0), xycoords=("data", "axes fraction"), color="tab:red", fontsize=8,
                    xytext=(2, -10), textcoords="offset points")


def plot_speed(runs: list[Run], path: Path) -> None:
    """Commanded vs measured forward speed, one panel per run, events marked and numbered."""
    fig = Figure(figsize=(9, 2.6 * len(runs)))
    for i, run in enumerate(runs):
        ax = fig.add_subplot(len(runs), 1, i + 1)
        ep = run.episode
        ax.step(ep.t, ep.cmd_vx, where="post", label="commanded", color="black", linewidth=1)
        if run.measured:
            ax.plot(ep.t, ep.vx, label="measured", color="tab:blue", linewidth=1)
        else:
            ax.text(0.5, 0.5, "no measured speed (no ground truth on hardware)", transform=ax.transAxes,
                    ha="center")
        if ep.fallen is not None and ep.fallen.any():
            ax.fill_between(ep.t, 0, 1, where=ep.fallen, transform=ax.get_xaxis_transform(), color="0.85",
                            label="fallen")
        _mark_events(ax, run.events)
        ax.set(title=run.label, xlabel="time (s)", ylabel="forward speed (m/s)")
        ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_latent(runs: list[Run], path: Path) -> bool:
    """The adaptation latent over time, one panel per run; False (no file) if no run recorded one."""
    if not any(r.bag.has("adaptation/latent") for r in runs):
        return False
    fig = Figure(figsize=(9, 2.6 * len(runs)))
    for i, run in enumerate(runs):
        ax = fig.add_subplot(len(runs), 1, i + 1)
        if run.bag.has("adaptation/latent"):
            lat = run.bag.topic("adaptation/latent")
            for k in range(lat["data"].shape[1]):
                ax.plot(lat.t, lat["data"][:, k], linewidth=0.9, label=f"z{k}")
            ax.legend(loc="upper left", fontsize=7, ncol=8)
        else:
            ax.text(0.5, 0.5, "no latent recorded", transform=ax.transAxes, ha="center")
        _mark_events(ax, run.events)
        ax.set(title=run.label, xlabel="time (s)", ylabel="latent")
    _save(fig, path)
    return True


def plot_event_torques(runs: list[Run], k: int, path: Path) -> None:
    """Joint torques from 1 s before to 2 s after event k (0-based), one panel per run that has it."""
    have = [r for r in runs if k < len(r.events) and r.episode.tau is not None]
    fig = Figure(figsize=(9, 2.8 * max(1, len(have))))
    names = list(runs[0].bag.topic("joint_states")["name"]) if runs[0].bag.has("joint_states") else []
    for i, run in enumerate(have):
        ax = fig.add_subplot(len(have), 1, i + 1)
        t_event, label = run.events[k]
        ep = run.episode
        sel = (ep.t >= t_event - EVENT_WINDOW_S[0]) & (ep.t <= t_event + EVENT_WINDOW_S[1])
        ax.set_prop_cycle(color=[colormaps["tab20"](j % 20) for j in range(ep.tau.shape[1])])
        for j in range(ep.tau.shape[1]):
            ax.plot(ep.t[sel] - t_event, ep.tau[sel, j], linewidth=0.8, label=names[j] if j < len(names) else j)
        ax.axvline(0.0, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set(title=f"{run.label}: event {k + 1} {label}", xlabel="time from event (s)", ylabel="torque (Nm)")
        ax.legend(loc="upper left", fontsize=6, ncol=6)
    _save(fig, path)
