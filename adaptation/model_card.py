"""MODEL_CARD.md for shipped models: how they were trained, the curve, and the eval table.

The eval table runs every method on every scenario in config/scenarios/ with the
shipped ONNX files (the same code as `metaloco eval`) and marks the scenarios whose
fault or terrain was held out of training.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from metaloco.adaptation.evaluate import METHODS, evaluate, run_episode  # noqa: E402
from metaloco.adaptation.metrics import summarize  # noqa: E402
from metaloco.adaptation.export import load_run_config  # noqa: E402
from metaloco.paths import config_dir  # noqa: E402
from metaloco.sim.scenario import load_scenario  # noqa: E402


def held_out_reason(path: Path, cfg) -> str | None:
    """Why a scenario is outside the training distribution, or None if it is inside."""
    s = load_scenario(path)
    ranges = cfg.env.tasks
    reasons = []
    for e in s.events:
        if e.kind == "fault" and e.joint in ranges.faults.held_out_joints:
            reasons.append(f"{e.joint} faults held out")
        if e.kind == "terrain" and ranges.held_out_friction[0] <= e.terrain.friction <= ranges.held_out_friction[1]:
            reasons.append(f"friction {e.terrain.friction} held out")
    if s.task.terrain.type not in ranges.terrain_types:
        reasons.append(f"terrain '{s.task.terrain.type}' not trained on")
    return "; ".join(reasons) or None


def plot_curves(run: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    offset = 0.0  # phases 2 and 3 continue phase 1's curve; robust starts at zero
    for phase, label in (("phase1", "phase1"), ("phase2", "phase2 (adapter)"), ("phase3", "phase3 (pi on z_hat)"),
                         ("robust", "robust")):
        path = run / phase / "progress.csv"
        if not path.is_file():
            continue
        rows = list(csv.DictReader(path.open()))
        if phase == "robust":
            offset = 0.0
        steps = [offset + int(r["env_steps"]) / 1e6 for r in rows]
        offset = steps[-1] if steps else offset
        axes[0].plot(steps, [float(r["mean_return"]) for r in rows], label=label)
        axes[1].plot(steps, [float(r["fall_rate"]) for r in rows], label=label)
    axes[0].set(xlabel="env steps (M)", ylabel="mean episode return", title="return")
    axes[1].set(xlabel="env steps (M)", ylabel="fraction of episodes ending in a fall", title="falls")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _fmt(value) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


CLEARLY_ABOVE = 1.05
"""'Clearly above' in the targets: a return at least 5% above the better of nominal and robust (two episodes
per cell; differences of a percent or two are noise)."""
FAULT_SCENARIOS = ("fr_knee_locked", "rl_thigh_limp", "fl_knee_weak", "fl_hip_bias", "knee_locked_then_ice")


def undamaged_return(path: Path, model_dir: Path, episodes: int) -> float | None:
    """Mean return of `nominal` on a scenario with its events removed: what the fault could cost at most.

    A fault scenario can only show adaptation "clearly above nominal" if the fault costs the nominal latent
    more than that margin; this is the ceiling the comparison is read against.
    """
    scenario = dataclasses.replace(load_scenario(path), events=[])
    series = [run_episode(scenario, "nominal", model_dir, i)[0] for i in range(episodes)]
    return summarize(scenario.name, "nominal", series)["return_mean"]


def latent_effect(path: Path, model_dir: Path) -> dict[str, float]:
    """Does the policy act on z? One `oracle` episode; after the first event, at every step, how far the true
    latent is from the nominal one and how much the policy's action changes between the two.

    Returns:
        {"latent_shift": mean |z_true - z_nominal|, "action_shift": mean over steps and outputs of
        |pi(obs, z_true) - pi(obs, z_nominal)|, "action_spread": mean per-output std of the actions taken}.
    """
    scenario = load_scenario(path)
    shifts, actions = [], []

    def observe(obs, action, oracle):
        shifts.append(np.abs(action - oracle.policy(obs, oracle.prior.nominal)).mean())
        actions.append(action)

    _, _, oracle = run_episode(scenario, "oracle", model_dir, 0, observe=observe)
    latents = np.linalg.norm(np.array(oracle.latents) - oracle.prior.nominal, axis=1)  # one per step
    start = int(round(scenario.events[0].t / oracle.dt)) if scenario.events else 0
    return {"latent_shift": float(np.mean(latents[start:])), "action_shift": float(np.mean(shifts[start:])),
            "action_spread": float(np.std(np.array(actions), axis=0).mean())}


def latent_effect_section(effects: dict[str, dict]) -> list[str]:
    """A table of `latent_effect` per fault scenario."""
    lines = ["## Does the policy act on the latent?", "",
             "One `oracle` episode per fault scenario. After the event, at every step: the distance of the true",
             "latent from the nominal one, and how much the action changes when the policy is given the nominal",
             "latent instead (mean over outputs); for scale, the spread (std) of the actions over the episode.", "",
             "| scenario | latent shift | action shift | action spread |", "|---|---|---|---|"]
    for name, e in effects.items():
        lines.append(f"| {name} | {e['latent_shift']:.2f} | {e['action_shift']:.3f} | {e['action_spread']:.3f} |")
    return lines + [""]


def targets_section(results: dict, rows: list, undamaged: dict | None = None) -> list[str]:
    """The issue's targets, each computed from the table above, met or not.

    `undamaged` maps a fault scenario to `undamaged_return`; where given, each "clearly above" verdict says
    how much of the return the fault took from `nominal`, i.e. how much room adaptation had.
    """
    undamaged = undamaged or {}
    lines = ["## Targets (computed from the table above)", ""]
    nominal = results.get(("nominal_flat", "adaptive"))
    if nominal:
        ok = nominal["tracking_error_mps"] is not None and nominal["tracking_error_mps"] <= 0.1 and nominal["falls"] == 0
        lines.append(f"- Nominal flat ground tracks 0.5 m/s within 0.1 m/s, no falls: **{'met' if ok else 'NOT met'}** "
                     f"(tracking error {_fmt(nominal['tracking_error_mps'])} m/s, {nominal['falls']} falls).")
    event_scenarios = [name for name, _ in rows if load_scenario(config_dir() / "scenarios" / f"{name}.yaml").events]
    for name in event_scenarios:
        a, o = results[(name, "adaptive")], results[(name, "oracle")]
        rec = a["recovery_time_s"]
        ratio = a["return_mean"] / o["return_mean"] if o["return_mean"] else float("nan")
        verdict_rec = "met" if rec is not None and rec <= 1.0 else "NOT met"
        verdict_ret = "met" if ratio >= 0.9 else "NOT met"
        line = (f"- {name}: adaptive recovery {_fmt(rec)}{' s' if rec is not None else ''} (target <= 1.0: **{verdict_rec}**); adaptive return "
                f"{ratio:.0%} of oracle (target >= 90%: **{verdict_ret}**)")
        if name in FAULT_SCENARIOS:
            n, r = results[(name, "nominal")], results[(name, "robust")]
            best = max(n["return_mean"], r["return_mean"])
            above = a["return_mean"] >= CLEARLY_ABOVE * best if best > 0 else a["return_mean"] > best
            line += (f"; clearly above (by {CLEARLY_ABOVE - 1:.0%}) nominal ({_fmt(n['return_mean'])}) and robust "
                     f"({_fmt(r['return_mean'])}): **{'yes' if above else 'NO'}**")
            ceiling = undamaged.get(name)
            if ceiling:
                cost = 1.0 - n["return_mean"] / ceiling
                line += (f" (without the fault nominal scores {_fmt(ceiling)}: the fault costs nominal {cost:.0%} "
                         f"of its return{', less than the margin' if cost < CLEARLY_ABOVE - 1 else ''}")
                lost = ceiling - n["return_mean"]
                if lost > 0:
                    won = (a["return_mean"] - n["return_mean"]) / lost
                    line += (f"; adaptive wins back {won:.0%} of that loss" if won >= 0 else
                             f"; adaptive does worse than nominal, by {-won:.0%} of that loss")
                line += ")"
        lines.append(line + ".")
    return lines + [""]


def write_model_card(run: str | Path, model_dir: str | Path, episodes: int = 2,
                     progress: Callable[[str], None] = print) -> Path:
    """Evaluate every method on every scenario and write MODEL_CARD.md (and training_curve.png) in model_dir."""
    run, model_dir = Path(run), Path(model_dir)
    cfg = load_run_config(run)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    plot_curves(run, model_dir / "training_curve.png")
    rows, results = [], {}
    for path in sorted((config_dir() / "scenarios").glob("*.yaml")):
        name = path.stem
        for method in METHODS:
            r = evaluate(path, method, episodes, model_dir)
            results[(name, method)] = r
            progress(f"[card] {name:22s} {method:9s} return {_fmt(r['return_mean'])} falls {r['falls']} "
                     f"recovery {_fmt(r['recovery_time_s'])}")
        rows.append((name, held_out_reason(path, cfg)))
    undamaged, effects = {}, {}
    for name in FAULT_SCENARIOS:
        path = config_dir() / "scenarios" / f"{name}.yaml"
        if path.is_file():
            undamaged[name] = undamaged_return(path, model_dir, episodes)
            effects[name] = latent_effect(path, model_dir)
            progress(f"[card] {name:22s} nominal without its events: return {_fmt(undamaged[name])}; "
                     f"latent shift {effects[name]['latent_shift']:.2f}, action shift {effects[name]['action_shift']:.3f}")
    (model_dir / "eval.json").write_text(json.dumps([results[k] for k in results], indent=1))
    phases = manifest.get("phases", {})
    lines = [
        f"# metaloco A1 models ({cfg.name} preset)",
        "",
        "RMA-style (Kumar et al. 2021) locomotion policy for the Unitree A1, meta-trained in pybullet over the",
        "task family of metaloco (terrain, friction, payload, motor strength, latency, joint faults), with a",
        "trotting trajectory generator under the policy (PMTG, Iscen et al. 2018).",
        "",
        "## How to reproduce",
        "",
        f"    {manifest['command']}",
        "",
        f"- commit: `{manifest['commit']}`; wall time {manifest['wall_s'] / 60:.1f} min on a 2-core CPU machine;",
        f"  {manifest['env_steps'] / 1e6:.2f} M environment steps in all.",
    ]
    for phase, info in phases.items():
        lines.append(f"- {phase}: {info['iterations']} iterations, {info['env_steps'] / 1e6:.2f} M steps, "
                     f"{info['wall_s'] / 60:.1f} min, final curriculum difficulty {info['difficulty']:.2f}")
    lines += [
        "",
        "## Files",
        "",
        "| file | what | sha256 |",
        "|---|---|---|",
    ]
    what = {"policy.onnx": "pi(obs, latent) -> actions", "adapter.onnx": "phi(history of 50 obs) -> latent",
            "encoder.onnx": "mu(privileged) -> latent (sim only: oracle)", "robust.onnx": "robust baseline pi(obs)",
            "prior.json": "Gaussian prior over the latent + joint-health read-out"}
    for name, digest in manifest["files"].items():
        lines.append(f"| `{name}` | {what.get(name, '')} | `{digest[:16]}...` |")
    lines += [
        "",
        "## Training curve",
        "",
        "![training curve](training_curve.png)",
        "",
        f"## Evaluation ({episodes} episodes per cell, `metaloco eval`)",
        "",
        "Return is the mean episode return (legged_gym-style reward); recovery is `recovery_time_s` (s after the",
        "last event until forward speed stays within 0.1 m/s of the command for 1 s; `never` if it does not within",
        "the scenario; 0 without events). Speed is measured as the base velocity averaged over one gait period.",
        "",
    ]
    for title, held in (("Scenarios inside the training distribution", False), ("Held-out scenarios", True)):
        lines += [f"### {title}", "", "| scenario | method | return | distance m | tracking err m/s | falls | recovery s |",
                  "|---|---|---|---|---|---|---|"]
        for name, reason in rows:
            if (reason is not None) != held:
                continue
            label = f"{name} ({reason})" if reason else name
            for method in METHODS:
                r = results[(name, method)]
                lines.append(f"| {label} | {method} | {_fmt(r['return_mean'])} | {_fmt(r['distance_m'])} | "
                             f"{_fmt(r['tracking_error_mps'])} | {r['falls']} | {_fmt(r['recovery_time_s'])} |")
        lines.append("")
    lines += targets_section(results, rows, undamaged)
    lines += latent_effect_section(effects)
    card = model_dir / "MODEL_CARD.md"
    card.write_text("\n".join(lines) + "\n")
    return card
