"""Trial reports from bags: metrics (`adaptation.metrics`) and plots, in `report.md` beside PNG files.

What a bag must hold (DESIGN.md topics): `cmd_vel` (commanded forward velocity), `joint_states`
(velocity and effort, for energy), `sim/events` (scenario events as JSON), `adaptation/latent`
and `adaptation/status` (plotted and tabulated when present), and on `diagnostics` a status from
the robot bridge carrying the key-values below: no contract topic carries the base velocity, so the
bridge reports it there. The sim bridge knows it; a hardware bridge has no ground truth and leaves it
out, and the report then says that speed, distance, tracking, falls and recovery were not measured.

Time. A trial starts at the trial runner's time 0 (custom_data `metaloco.start_ns`, on the clock that
stamped the bag), or where a bag lacks it at its first `cmd_vel` message: times in the report are seconds
from there, and what was recorded before (the robot standing up, settling) is not measured. The recorder
stamps on receipt, so on a busy machine the first cmd_vel can be stamped 100-160 ms off the runner's time 0.
The bag says which clock stamped it (custom_data `metaloco.clock`, `metaloco.timing`): a sim trial is stamped with the
simulator's `/clock`, so a lock-step simulator slowed down by a busy machine is still measured in
simulated seconds; the report states which.

The report is a pure function of the bags: nothing about when or where it was generated goes into
`report.md`, so regenerating it from the same bag gives the same file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaloco.adaptation.bag import MODEL_KEY, START_KEY, BagError, BagSeries, TopicSeries, diagnostic_values, read_bag
from metaloco.adaptation.metrics import (
    EVAL_KEYS, EpisodeSeries, episode_metrics, phase_bounds, phase_mean, phase_metrics, stride_average, summarize,
)
from metaloco.adaptation.report_plots import plot_event_torques, plot_latent, plot_speed

#: diagnostics key: forward velocity of the base in its heading frame (m/s).
BASE_VX_KEY = "base_vx"
#: diagnostics key: "true" while the robot is down.
FALLEN_KEY = "fallen"
#: diagnostics key: total robot mass including payload (kg), for the cost of transport.
MASS_KEY = "mass_kg"
#: The topics a report decodes (the others are only counted).
REPORT_TOPICS = ["cmd_vel", "diagnostics", "joint_states", "sim/events", "adaptation/latent", "adaptation/status"]
#: Bag custom_data: "sim" when the recorder stamped messages with the simulator's /clock.
CLOCK_KEY = "metaloco.clock"
#: Bag custom_data: how the trial ran ("sim, lock-step", "sim, real time", "hardware, wall clock").
TIMING_KEY = "metaloco.timing"
#: Sub-folders and labels of a `metaloco trial --compare` directory.
COMPARE_RUNS = (("adaptive", "adaptation on"), ("no_adaptation", "adaptation off"))


@dataclass
class Run:
    """One recorded trial: the bag, the episode built from it, and its label in the report."""

    label: str
    bag: BagSeries
    episode: EpisodeSeries
    events: list[tuple[float, str]]
    metrics: dict[str, Any] = field(default_factory=dict)
    measured: bool = True
    """Whether the bag holds the measured base velocity (False on hardware: `episode.vx` is then meaningless)."""
    before_start: int = 0
    """Events recorded before the trial's start (setup; not counted)."""


def _hold(t_src: np.ndarray, values: np.ndarray, t: np.ndarray, before: Any) -> np.ndarray:
    """Zero-order hold of `values` (sampled at t_src) at times t; `before` ahead of the first sample."""
    idx = np.searchsorted(t_src, t, side="right") - 1
    out = np.asarray(values)[np.clip(idx, 0, None)]
    return np.where(idx >= 0, out, before) if out.ndim == 1 else np.where((idx >= 0)[:, None], out, before)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def event_label(text: str) -> str:
    """A short label of a scenario event given as JSON (`Event.to_json`, or the scenario file's form).

    Examples: "fault FR_lower_joint locked", "fault RL_upper_joint weak 0.4", "terrain friction=0.3 type=flat",
    "push [0, 60, 0] N 0.2 s", "clear faults".
    """
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return text[:60]
    if not isinstance(event, dict):
        return text[:60]
    kind = event.get("kind") or next((k for k in event if k != "t"), "")
    body = event.get(kind)
    if kind == "fault" and isinstance(body, dict):
        extra = {"weak": f" {body.get('strength')}", "bias": f" {body.get('offset_rad')} rad"}.get(body.get("mode"), "")
        return f"fault {event.get('joint') or body.get('joint')} {body.get('mode')}{extra}"
    if kind in ("terrain", "dynamics") and isinstance(body, dict):
        return f"{kind} " + " ".join(f"{k}={v}" for k, v in sorted(body.items()))
    if kind == "push":
        push = body if isinstance(body, dict) else event
        return f"push {push.get('force_n')} N {push.get('duration_s', 0.2)} s"
    if kind == "clear_faults":
        return "clear faults"
    event = {k: v for k, v in event.items() if k != "t"}
    return json.dumps(event, sort_keys=True, separators=(",", ":"))[:60]


def trial_start(bag: BagSeries) -> float:
    """The trial's time 0 in the bag's time (s): the runner's (`START_KEY`), else the first `cmd_vel` message.

    Raises:
        BagError: The bag has no cmd_vel.
    """
    first_cmd = float(bag.topic("cmd_vel").t[0])
    if START_KEY not in bag.custom:
        return first_cmd
    return (int(bag.custom[START_KEY]) - bag.start_ns) / 1e9


def from_trial_start(bag: BagSeries) -> BagSeries:
    """A copy of a decoded bag whose times count from the trial's start (`trial_start`).

    Raises:
        BagError: The bag has no cmd_vel.
    """
    start = trial_start(bag)
    topics = {name: TopicSeries(s.topic, s.msgtype, s.t - start, s.fields) for name, s in bag.topics.items()}
    return BagSeries(bag.path, bag.start_ns + int(round(start * 1e9)), bag.counts, topics, bag.custom)


def trial_episode(bag: BagSeries, mass_kg: float | None = None) -> tuple[EpisodeSeries, list[tuple[float, str]]]:
    """The `EpisodeSeries` of a recorded trial, and its events as (time, label).

    The trial starts at `trial_start(bag)` (give `from_trial_start(bag)` to count from there): samples
    are the `joint_states` times from then on, inside the span of the base-velocity reports (or those
    reports' times if no joint_states were recorded); the bridge's velocity is stride-averaged as in
    `metaloco eval` (`metrics.stride_average`) and interpolated, command and fall flag are held. Events
    before the start are left out.

    Raises:
        BagError: The bag lacks cmd_vel or the bridge's base velocity (see `measured_velocity`).
    """
    cmd = bag.topic("cmd_vel")
    start = trial_start(bag)
    t_vx, vx_src = measured_velocity(bag)
    if len(t_vx) == 0:
        raise BagError(f"bag {bag.path} has no measured base velocity: no status on /diagnostics carries "
                       f"the key {BASE_VX_KEY!r} with a number (the sim bridge publishes it; a hardware bridge "
                       "has no ground truth)")
    diag = bag.topic("diagnostics")
    span = t_vx >= start
    if not span.any():
        raise BagError(f"bag {bag.path}: no base velocity was recorded after the trial's start")
    t, tau, qdot = t_vx[span], None, None
    joints = bag.topics.get("/joint_states")
    if joints is not None:
        keep = (joints.t >= t[0]) & (joints.t <= t_vx[-1])
        if keep.sum() >= 2:
            t, tau, qdot = joints.t[keep], joints["effort"][keep], joints["velocity"][keep]
    t, first = np.unique(t, return_index=True)  # equal receive times would make a zero-length step
    tau, qdot = (None, None) if tau is None else (tau[first], qdot[first])
    t_f, f_text = diagnostic_values(diag, FALLEN_KEY)
    fallen = (_hold(t_f, np.array([v.lower() in ("true", "1") for v in f_text]), t, False)
              if len(t_f) else None)
    if mass_kg is None:
        _, m_text = diagnostic_values(diag, MASS_KEY)
        mass_kg = _number(m_text[-1]) if m_text else None
        mass_kg = mass_kg if mass_kg is not None and np.isfinite(mass_kg) and mass_kg > 0 else None
    events = trial_events(bag)
    episode = EpisodeSeries(
        t=t, cmd_vx=_hold(cmd.t, cmd["linear"][:, 0], t, 0.0),
        vx=np.interp(t, t_vx, stride_average(t_vx, vx_src)),
        tau=tau, qdot=qdot, fallen=fallen, event_times=[e for e, _ in events], mass_kg=mass_kg,
    )
    return episode, events


def measured_velocity(bag: BagSeries) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of the bridge's measured forward velocity (`base_vx` on /diagnostics); empty if none."""
    t_vx, vx_text = diagnostic_values(bag.topic("diagnostics"), BASE_VX_KEY) if bag.has("diagnostics") \
        else (np.zeros(0), [])
    vx = np.array([_number(v) for v in vx_text], dtype=float)
    finite = np.isfinite(vx)
    return t_vx[finite], vx[finite]


def _due_times(run: Run) -> list[str | float]:
    """The scenario time each of `run.events` was due at (its JSON `t`; "–" if it has none), in their order.

    Events are matched to the bag's /sim/events messages in order, so two events the bag saw on the same
    tick keep their own due times.
    """
    pending: list[tuple[float, str | float]] = []
    if run.bag.has("sim/events"):
        ev = run.bag.topic("sim/events")
        for ti, text in zip(ev.t, ev["data"]):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            due = float(event["t"]) if isinstance(event, dict) and isinstance(event.get("t"), (int, float)) else "–"
            pending.append((float(ti), due))
    out: list[str | float] = []
    for t, _ in run.events:
        match = next((i for i, (seen, _) in enumerate(pending) if abs(seen - t) <= 1e-9), None)
        out.append("–" if match is None else pending.pop(match)[1])
    return out


def recorded_events(bag: BagSeries) -> list[tuple[float, str]]:
    """The scenario events on /sim/events as (time, label)."""
    if not bag.has("sim/events"):
        return []
    ev = bag.topic("sim/events")
    return [(float(ti), event_label(text)) for ti, text in zip(ev.t, ev["data"])]


def trial_events(bag: BagSeries) -> list[tuple[float, str]]:
    """The events of the trial itself, not its setup: from its start, or from its first cmd_vel if that was
    stamped earlier (an event due at time 0 goes out on the tick the first cmd_vel does)."""
    since = min(trial_start(bag), float(bag.topic("cmd_vel").t[0])) - 1e-9
    return [e for e in recorded_events(bag) if e[0] >= since]


def _unmeasured_episode(bag: BagSeries) -> tuple[EpisodeSeries, list[tuple[float, str]]]:
    """A trial without a measured velocity (hardware): command, torques and events only; vx is a placeholder."""
    cmd = bag.topic("cmd_vel")
    t, tau, qdot = cmd.t, None, None
    joints = bag.topics.get("/joint_states")
    keep = None if joints is None else joints.t >= trial_start(bag)
    if keep is not None and keep.sum() >= 2:
        t, tau, qdot = joints.t[keep], joints["effort"][keep], joints["velocity"][keep]
    t, first = np.unique(t, return_index=True)
    tau, qdot = (None, None) if tau is None else (tau[first], qdot[first])
    events = trial_events(bag)
    return EpisodeSeries(t=t, cmd_vx=_hold(cmd.t, cmd["linear"][:, 0], t, 0.0), vx=np.zeros(len(t)), tau=tau,
                         qdot=qdot, event_times=[e for e, _ in events]), events


def load_run(source: str | Path | BagSeries, label: str | None = None, mass_kg: float | None = None) -> Run:
    """Read a bag (or take a decoded one), count time from the trial's start and build its episode."""
    bag = source if isinstance(source, BagSeries) else read_bag(source, topics=REPORT_TOPICS)
    bag = from_trial_start(bag)
    measured = len(measured_velocity(bag)[0]) > 0
    episode, events = trial_episode(bag, mass_kg) if measured else _unmeasured_episode(bag)
    label = label or bag.custom.get("metaloco.method") or bag.path.parent.name or "run"
    run = Run(label, bag, episode, events, measured=measured,
              before_start=len(recorded_events(bag)) - len(trial_events(bag)))
    run.metrics = trial_metrics(run)
    return run


def trial_metrics(run: Run | str | Path | BagSeries) -> dict[str, Any]:
    """The eval keys of DESIGN.md for one recorded trial (what `metaloco trial` writes to metrics.json).

    Without a measured velocity (hardware) everything but scenario, method and episodes is None.
    """
    run = run if isinstance(run, Run) else load_run(run)
    scenario = run.bag.custom.get("metaloco.scenario", "")
    method = run.bag.custom.get("metaloco.method", "")
    if not run.measured:
        return {key: None for key in EVAL_KEYS} | {"scenario": scenario, "method": method, "episodes": 1}
    return summarize(scenario, method, [run.episode])


def episode_figures(run: Run) -> dict[str, Any]:
    """`metrics.episode_metrics` of a run, with what needs a measured velocity set to None when there is none."""
    out = episode_metrics(run.episode)
    if not run.measured:
        out.update({k: None for k in ("mean_speed_mps", "tracking_error_mps", "distance_m", "cost_of_transport",
                                      "falls", "recovery_time_s", "recovery_tolerance_mps", "settled_speed_mps")})
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value.replace("|", "\\|")
    if isinstance(value, (bool, int, np.integer)):
        return str(value)
    return f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def _phase_rows(run: Run) -> list[list[Any]]:
    latent = run.bag.topics.get("/adaptation/latent")
    rows = []
    t0, t1 = float(run.episode.t[0]), float(run.episode.t[-1])
    cutting = [lbl for t, lbl in run.events if t0 < t < t1]  # the events phase_bounds cuts at, in order
    for k, (phase, (a, b)) in enumerate(zip(phase_metrics(run.episode), phase_bounds(run.episode))):
        started = "start" if k == 0 else cutting[k - 1]
        z = phase_mean(latent.t, latent["data"], a, b) if latent is not None else None
        if not run.measured:
            phase.update({k: None for k in ("mean_speed_mps", "tracking_error_mps", "distance_m",
                                            "cost_of_transport", "falls")})
        energy, distance = phase["energy_j"], phase["distance_m"]
        per_m = energy / distance if energy is not None and distance is not None and distance > 0 else None
        shown = "–" if z is None else ", ".join(f"{x:.2f}" for x in z[:4]) + (", …" if len(z) > 4 else "")
        latent_text = shown if z is None else f"[{shown}]"
        rows.append([k, a, b, f"`{started}`", phase["mean_command_mps"], phase["mean_speed_mps"],
                     phase["tracking_error_mps"], distance, energy, per_m, phase["cost_of_transport"],
                     phase["falls"], latent_text])
    return rows


def _status_rows(run: Run, limit: int = 30) -> list[list[Any]]:
    if not run.bag.has("adaptation/status"):
        return []
    st = run.bag.topic("adaptation/status")
    rows: list[list[Any]] = []
    last: dict[str, tuple] = {}
    for t, name, level, message, values in zip(st.t, st["name"], st["level"], st["message"], st["values"]):
        key = (int(level), message, tuple(sorted(values.items())))
        if last.get(name) != key:  # only changes: the node repeats its status at its own rate
            rows.append([t, name, int(level), message, ", ".join(f"{k}={v}" for k, v in sorted(values.items()))])
            last[name] = key
    return rows[:limit]


def write_report(run: str | Path | BagSeries, out_dir: str | Path, *, title: str | None = None,
                 compare: str | Path | BagSeries | None = None, labels: tuple[str, ...] | None = None,
                 mass_kg: float | None = None) -> Path:
    """Write `report.md`, `metrics.json` (the eval keys of `run`) and PNG plots into `out_dir`.

    Args:
        run: The trial: its bag directory, a trial directory holding `bag/`, or a decoded bag.
        out_dir: Where the report goes (created if missing; the files in it are replaced).
        title: Report heading (default from the scenario name).
        compare: A second trial of the same scenario (e.g. adaptation off), shown side by side.
        labels: Column labels, one per trial (default: the recorded method, else the trial folder).
        mass_kg: Robot mass for the cost of transport, if the bag does not carry it.

    Returns:
        The path of report.md.

    Raises:
        BagError: A missing bag, or one without the topics the metrics need.
    """
    sources = [run] + ([compare] if compare is not None else [])
    labels = labels or (None,) * len(sources)
    if len(labels) != len(sources):
        raise ValueError(f"labels: expected {len(sources)}, got {len(labels)}")
    runs = [load_run(src, label, mass_kg) for src, label in zip(sources, labels)]
    if len(runs) == 2 and runs[0].label == runs[1].label:
        runs[1].label += " (compare)"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenario = runs[0].metrics["scenario"] or runs[0].bag.path.parent.name
    title = title or f"Trial report: {scenario}"

    plot_speed(runs, out / "speed.png")
    plots = [("Commanded vs measured forward speed (events numbered as below)", "speed.png")]
    if plot_latent(runs, out / "latent.png"):
        plots.append(("Adaptation latent", "latent.png"))
    n_events = max(len(r.events) for r in runs)
    for k in range(min(n_events, 8)):
        name = f"torques_event_{k + 1}.png"
        plot_event_torques(runs, k, out / name)
        plots.append((f"Joint torques around event {k + 1}", name))

    heads = ["", *(r.label for r in runs)]
    md = [f"# {title}", "", "Generated from the bag(s) below by `metaloco report`; rerunning it on the same bags "
          "gives this same file.", "", "## Runs", ""]
    md += _table(heads, [
        ["bag", *(f"`{os.path.relpath(r.bag.path, out)}`" for r in runs)],
        ["scenario", *(r.metrics["scenario"] or "–" for r in runs)],
        ["method", *(r.metrics["method"] or "–" for r in runs)],
        ["model", *(f"`{r.bag.custom[MODEL_KEY]}`" if MODEL_KEY in r.bag.custom else "–" for r in runs)],
        ["duration (s)", *(r.bag.duration_s for r in runs)],
        ["recording", *("complete" if r.bag.complete else "cut short (recorder killed: the last segment, "
                        "at most one flush period, is missing)" for r in runs)],
        ["clock", *(_clock_text(r) for r in runs)],
        ["measured speed", *("yes" if r.measured else "no (no base_vx in the bag: a hardware bridge has no "
                             "ground truth of the base velocity)" for r in runs)],
    ])
    md += ["", "Times are seconds from each trial's start (the trial runner's time 0, or the first `cmd_vel` "
           "message where the bag does not hold it); what the bag holds from "
           "before (the robot standing up and settling) is not measured"
           + (f" ({sum(r.before_start for r in runs)} event(s) recorded before the start are not counted)"
              if any(r.before_start for r in runs) else "") + ". "
           + ("On the simulated clock, messages were stamped with the simulator's `/clock` by the recorder: in "
              "lock-step the simulator waits for each policy answer, so a machine too slow for real time slows "
              "the simulated world down and every figure is per simulated second."
              if any(r.bag.custom.get(CLOCK_KEY) == "sim" for r in runs) else ""), ""]
    for run in runs:
        if not run.measured:
            md += [f"**{run.label}: no measured forward speed.** The bag has no `{BASE_VX_KEY}` on /diagnostics "
                   "(a hardware bridge has no ground truth of the base velocity), so distance, speed, tracking "
                   "error, falls, recovery time and cost of transport are not computed (–).", ""]
    md += ["## Metrics", ""]
    extra = [episode_figures(r) for r in runs]
    rows = [[key, *(r.metrics[key] for r in runs)] for key in EVAL_KEYS[2:]]
    rows += [[key, *(e[key] for e in extra)] for key in ("recovery_tolerance_mps", "settled_speed_mps",
                                                         "mean_speed_mps", "energy_j", "cost_of_transport")]
    md += _table(["metric", *heads[1:]], rows)
    md += ["", "Measured speed: the base's forward velocity averaged over one stride (0.5 s). `recovery_time_s`: "
           "from the last event until |commanded − measured| forward speed stays within 0.1 m/s for 1 s (– if "
           "never; 0 without events). `recovery_tolerance_mps`: the tolerance under which it would have recovered "
           "within 1 s (at most 0.1 exactly when it did; inf if it fell first; – without events). "
           "`settled_speed_mps`: mean speed from 1 s after the last event to the end. Cost of transport: joint "
           "energy / (m g distance).", ""]
    for run in runs:
        md += [f"## {run.label}", "", "Events:", ""]
        events = [[k, t, due, f"`{lbl}`"] for k, ((t, lbl), due) in enumerate(zip(run.events, _due_times(run)), 1)]
        md += _table(["#", "t (s)", "due (s)", "event"], events) if events else ["none"]
        md += ["", "`t`: when the recording saw the event; `due`: the scenario's time for it. In the simulator the "
               "event lands when the bridge receives it, so a busy machine can land it a few control periods late."]
        md += ["", "Phases (between events):", ""]
        md += _table(["phase", "from (s)", "to (s)", "started by", "command (m/s)", "speed (m/s)",
                      "tracking error (m/s)", "distance (m)", "energy (J)", "J/m", "CoT", "falls",
                      "latent mean"], _phase_rows(run))
        status = _status_rows(run)
        md += ["", "Adaptation status (changes only):", ""]
        md += _table(["t (s)", "name", "level", "message", "values"], status) if status else ["none recorded"]
        md += [""]
    md += ["## Messages per topic", ""]
    topics = sorted({t for r in runs for t in r.bag.counts})
    md += _table(["topic", *heads[1:]], [[t, *(r.bag.counts.get(t, 0) for r in runs)] for t in topics])
    md += ["", "## Plots", ""]
    md += [line for caption, name in plots for line in (f"![{caption}]({name})", "")]
    (out / "report.md").write_text("\n".join(md), "utf8")
    (out / "metrics.json").write_text(json.dumps(runs[0].metrics, indent=2) + "\n", "utf8")
    return out / "report.md"


def _clock_text(run: Run) -> str:
    clock = "simulated (/clock)" if run.bag.custom.get(CLOCK_KEY) == "sim" else "receive time"
    timing = run.bag.custom.get(TIMING_KEY)
    return f"{clock}; {timing}" if timing else clock


def is_comparison(path: str | Path) -> bool:
    """Whether `path` is a `metaloco trial --compare` directory (a trial per COMPARE_RUNS sub-folder)."""
    path = Path(path)
    return not (path / "bag").exists() and all((path / sub / "bag" / "metadata.yaml").is_file()
                                                for sub, _ in COMPARE_RUNS)


def write_comparison(path: str | Path, title: str | None = None) -> Path:
    """The side-by-side report of a `--compare` directory: report.md, plots, and metrics.json holding the eval
    keys of each run by sub-folder ({"adaptive": {...}, "no_adaptation": {...}}).

    Returns:
        The path of report.md.
    """
    path = Path(path)
    (first, first_label), (second, second_label) = COMPARE_RUNS
    report = write_report(path / first, path, compare=path / second, labels=(first_label, second_label), title=title)
    metrics = {sub: json.loads((path / sub / "metrics.json").read_text()) if (path / sub / "metrics.json").is_file()
               else trial_metrics(path / sub) for sub, _ in COMPARE_RUNS}
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf8")
    return report


def regenerate_report(path: str | Path, *, compare: str | Path | None = None, labels: tuple[str, ...] | None = None,
                      title: str | None = None) -> Path:
    """`metaloco report DIR`: rebuild a trial's report from its bag alone.

    Args:
        path: A trial directory (its bag in `bag/`; the report goes beside it), a bag directory
            (the report goes into its parent, so the bag folder stays a plain rosbag2 bag), or a
            `--compare` directory (both trials' reports and the side-by-side one are rebuilt).
        compare: Another trial or bag directory, shown side by side.
        labels: Column labels, one per trial.
        title: Report heading.

    Returns:
        The path of report.md.
    """
    path = Path(path)
    if compare is None and is_comparison(path):
        for sub, _ in COMPARE_RUNS:
            write_report(path / sub, path / sub)
        return write_comparison(path, title=title)
    out = path if (path / "bag" / "metadata.yaml").is_file() else path.parent
    return write_report(path, out, compare=compare, labels=labels, title=title)
