"""MODEL_CARD.md for shipped models: how they were trained, the curve, and the eval table.

The eval table runs every method on every scenario in config/scenarios/ with the
shipped ONNX files (the same code as `metaloco eval`) and marks the scenarios whose
fault or terrain was held out of training.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaloco.adaptation.card_diagnostics import (  # noqa: E402
                                                   BREAKDOWN_SCENARIO, FAMILY_DIFFICULTIES, FAMILY_EPISODES,
                                                   adapter_tracking, adapter_tracking_section, family_adapter_error,
                                                   family_section,
                                                   latent_effect, latent_effect_section, reward_breakdown,
                                                   reward_breakdown_section, undamaged_return)
from metaloco.adaptation.evaluate import METHODS, evaluate_episodes, evaluate_family  # noqa: E402
from metaloco.adaptation.metrics import RECOVERY_TOLERANCE_MPS, RECOVERY_WITHIN_S  # noqa: E402
from metaloco.adaptation import numerics  # noqa: E402
from metaloco.adaptation.export import load_run_config, source_commit  # noqa: E402
from metaloco.adaptation.train_config import TrainConfig, load_train_config  # noqa: E402
from metaloco.adaptation.runtime import BEFORE_PHASE3  # noqa: E402
from metaloco.paths import config_dir  # noqa: E402
from metaloco.schema import ConfigError, from_dict  # noqa: E402
from metaloco.sim.mirror import MIRROR_SCREENS_HELD_OUT, SCREENED_SINCE  # noqa: E402
from metaloco.sim.scenario import Scenario, load_scenario  # noqa: E402


def held_out_reason(path: Path, cfg, mirrored_held_out: bool = False) -> str | None:
    """Why a scenario is outside the training distribution, or None if it is inside.

    mirrored_held_out: the run's symmetry augmentation trained on the held-out joints' faults as the mirror
    images of their twins' (runs before `SCREENED_SINCE`; `mirrors_held_out`), so those faults were held out of
    the drawn tasks only.
    """
    s = load_scenario(path)
    ranges = cfg.env.tasks
    reasons = []
    for e in s.events:
        if e.kind == "fault" and e.joint in ranges.faults.held_out_joints:
            reasons.append(f"{e.joint} faults held out of the drawn tasks, but trained on as the mirror images "
                           "of their twin's" if mirrored_held_out else f"{e.joint} faults held out")
        if e.kind == "terrain" and ranges.held_out_friction[0] <= e.terrain.friction <= ranges.held_out_friction[1]:
            reasons.append(f"friction {e.terrain.friction} held out")
        if e.kind == "push":
            pushes = ranges.pushes
            if pushes.probability == 0:
                reasons.append("pushes not trained on")
            elif max(abs(f) for f in e.force_n[:2]) > pushes.force_n or e.duration_s > pushes.duration_s:
                reasons.append(f"a push beyond the trained {pushes.force_n:g} N per axis for {pushes.duration_s:g} s")
    if s.task.terrain.type not in ranges.terrain_types:
        reasons.append(f"terrain '{s.task.terrain.type}' not trained on")
    return "; ".join(reasons) or None


def mirrors_held_out(manifest: dict, cfg) -> bool:
    """Did the run's symmetry augmentation show it the held-out joints' faults (mirrored from their twins')?"""
    return bool(cfg.symmetry and cfg.env.tasks.faults.held_out_joints
                and not manifest.get(MIRROR_SCREENS_HELD_OUT, False))


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
"""'Clearly above' in the targets: a return at least 5% above the better of nominal and robust (differences of
a percent or two are noise)."""
RECOVERY_TARGET_S = RECOVERY_WITHIN_S
"""The issue's recovery target: adaptive's `recovery_time_s` after a fault or terrain event at most this."""
CARD_EPISODES = 10
"""Episodes per scenario cell. Two (the cards up to session 14) reported no falls for models that fall in 2 of 10
push episodes (models/a1/HISTORY.md, session 14); ten take about 4 s of one core per cell."""
NOTES_MARKER = "<!-- written by hand: `metaloco card` keeps everything below this line -->"
"""A card's hand-written notes (what the figures mean, what the models do not do) follow this line."""
FAULT_SCENARIOS = ("fr_knee_locked", "rl_thigh_limp", "fl_knee_weak", "fl_hip_bias", "knee_locked_then_ice")


def _clearly_above(adaptive: dict, *baselines: dict) -> bool:
    """adaptive's return is at least CLEARLY_ABOVE times the best baseline's (or above it, if that is <= 0)."""
    best = max(b["return_mean"] for b in baselines)
    return adaptive["return_mean"] >= CLEARLY_ABOVE * best if best > 0 else adaptive["return_mean"] > best


def recovered_within(recoveries: list[float | None], limit_s: float = RECOVERY_TARGET_S) -> str:
    """'k of N episodes': how many episodes' `recovery_time_s` is at most `limit_s` (None: never recovered)."""
    return f"{sum(r is not None and r <= limit_s for r in recoveries)} of {len(recoveries)} episodes"


def shortfall(episodes: list[tuple[float | None, float | None]]) -> str:
    """By how much a cell's episodes missed the recovery target: the median over episodes of the tolerance that
    recovery within 1 s would have needed (metrics.recovery_tolerance_mps; it can be met in the first second after
    the event, before a robot slows down) and of the speed from 1 s after the event on."""
    tolerances = [tol for tol, _ in episodes if tol is not None]
    speeds = [v for _, v in episodes if v is not None]
    parts = []
    if tolerances:
        median = float(np.median(tolerances))
        parts.append(f"would count as recovered within 1 s with a tolerance of {median:.2f} m/s" if np.isfinite(median)
                     else "falls before it would count as recovered in half or more of the episodes")
    if speeds:
        parts.append(f"walks {float(np.median(speeds)):.2f} m/s from 1 s after the event")
    return ", ".join(parts) if parts else "not measured"


def final_command_vx(scenario: Scenario) -> float:
    """The forward speed a scenario commands at its end: what a recovery after its last event is held to."""
    return float(scenario.command_at(scenario.duration_s)[0])


def unlasting_speeds(recoveries: list[float | None], shortfalls: list[tuple[float | None, float | None]],
                     command: float) -> list[float]:
    """The speeds, from 1 s after the event, of the episodes counted as recovered within 1 s that do not stay
    recovered: their mean speed there is more than the 0.1 m/s tolerance off the command (`recovery_time_s` only
    asks for the first second within it, so a robot that keeps its speed for a second and then nearly stops
    counts). `shortfalls` pairs each episode's (recovery_tolerance_mps, settled_speed_mps) with `recoveries`."""
    return [speed for rec, (_, speed) in zip(recoveries, shortfalls)
            if rec is not None and rec <= RECOVERY_TARGET_S and speed is not None
            and abs(command - speed) > RECOVERY_TOLERANCE_MPS]


def fleeting(recoveries: list[float | None], shortfalls: list[tuple[float | None, float | None]],
             command: float) -> str:
    """A note on the counted recoveries that do not last (`unlasting_speeds`); empty when every one lasts."""
    speeds = unlasting_speeds(recoveries, shortfalls, command)
    if not speeds:
        return ""
    return (f" (of which {len(speeds)} do not last: from 1 s after the event they walk "
            f"{min(speeds):.2f}-{max(speeds):.2f} m/s on the {command:g} m/s command)")


def targets_section(results: dict, rows: list, undamaged: dict | None = None, before: dict | None = None,
                    recoveries: dict | None = None, shortfalls: dict | None = None) -> list[str]:
    """The issue's targets, each computed from the table above, met or not.

    `undamaged` maps a fault scenario to `undamaged_return`; where given, each "clearly above" verdict says
    how much of the return the fault took from `nominal`, i.e. how much room adaptation had.
    `before` (models with phase 3) holds the phase-1 policy's results, keyed like `results`: each verdict then
    also says how adaptive compares with that policy's `oracle` and `nominal`, the bounds RMA defines them as.
    `recoveries` holds each episode's `recovery_time_s`, keyed like `results`: the recovery verdict (the cell's,
    which is `never` when one episode never recovers) then says in how many episodes adaptive and oracle met it.
    `shortfalls` holds each episode's (recovery_tolerance_mps, settled_speed_mps), keyed like `results`: a recovery
    target not met then says by how much (`shortfall`), for adaptive and oracle.
    """
    undamaged, before, recoveries, shortfalls = undamaged or {}, before or {}, recoveries or {}, shortfalls or {}
    lines = ["## Targets (computed from the table above)", ""]
    nominal = results.get(("nominal_flat", "adaptive"))
    if nominal:
        ok = nominal["tracking_error_mps"] is not None and nominal["tracking_error_mps"] <= 0.1 and nominal["falls"] == 0
        lines.append(f"- Nominal flat ground tracks 0.5 m/s within 0.1 m/s, no falls: **{'met' if ok else 'NOT met'}** "
                     f"(tracking error {_fmt(nominal['tracking_error_mps'])} m/s, {nominal['falls']} falls).")
    loaded = {name: load_scenario(config_dir() / "scenarios" / f"{name}.yaml") for name, _ in rows}
    for name in [name for name, scenario in loaded.items() if scenario.events]:
        a, o = results[(name, "adaptive")], results[(name, "oracle")]
        rec = a["recovery_time_s"]
        ratio = a["return_mean"] / o["return_mean"] if o["return_mean"] else float("nan")
        verdict_rec = "met" if rec is not None and rec <= RECOVERY_TARGET_S else "NOT met"
        verdict_ret = "met" if ratio >= 0.9 else "NOT met"
        line = f"- {name}: adaptive recovery {_fmt(rec)}{' s' if rec is not None else ''} (target <= 1.0: **{verdict_rec}**"
        command = final_command_vx(loaded[name])
        for method in ("adaptive", "oracle"):
            if (name, method) not in recoveries:
                continue
            line += (f"; within 1.0 s in {recovered_within(recoveries[(name, method)])}" if method == "adaptive"
                     else f", oracle in {recovered_within(recoveries[(name, method)])}")
            if (name, method) in shortfalls:
                line += fleeting(recoveries[(name, method)], shortfalls[(name, method)], command)
        if verdict_rec != "met" and (name, "adaptive") in shortfalls:
            line += (f"; by how much (medians over the episodes, against the 0.1 m/s tolerance, on a {command:g} m/s "
                     f"command): adaptive {shortfall(shortfalls[(name, 'adaptive')])}")
            if (name, "oracle") in shortfalls:
                line += f"; oracle {shortfall(shortfalls[(name, 'oracle')])}"
        line += f"); adaptive return {ratio:.0%} of oracle (target >= 90%: **{verdict_ret}**)"
        if name in FAULT_SCENARIOS:
            n, r = results[(name, "nominal")], results[(name, "robust")]
            above = _clearly_above(a, n, r)
            line += (f"; clearly above (by {CLEARLY_ABOVE - 1:.0%}) nominal ({_fmt(n['return_mean'])}) and robust "
                     f"({_fmt(r['return_mean'])}): **{'yes' if above else 'NO'}**")
            ceiling = undamaged.get(name)
            n = before.get((name, "nominal"), n)  # with phase 3 the ceiling is phase 1's pi's: compare like with like
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
        if (name, "oracle") in before:
            o1, n1 = before[(name, "oracle")], before[(name, "nominal")]
            ratio1 = a["return_mean"] / o1["return_mean"] if o1["return_mean"] else float("nan")
            line += (f". Against phase 1's pi: {ratio1:.0%} of its oracle ({_fmt(o1['return_mean'])}: "
                     f"**{'met' if ratio1 >= 0.9 else 'NOT met'}**)")
            if name in FAULT_SCENARIOS:
                above = _clearly_above(a, n1, results[(name, "robust")])
                line += f"; clearly above its nominal ({_fmt(n1['return_mean'])}) and robust: **{'yes' if above else 'NO'}**"
        lines.append(line + ".")
    return lines + [""]


def _result_row(label: str, method: str, r: dict) -> str:
    """One row of an evaluation table: scenario, method, then the eval figures."""
    return (f"| {label} | {method} | {_fmt(r['return_mean'])} | {_fmt(r['distance_m'])} | "
            f"{_fmt(r['tracking_error_mps'])} | {r['falls']} | {_fmt(r['recovery_time_s'])} |")


def _job(kind: str, path: Path, method: str, model_dir: Path, episodes: int, first_episode: int = 0,
         latent_source: str = "fused"):
    """One measurement of the card, run in a worker process."""
    if kind == "eval":
        result, per_episode = evaluate_episodes(path, method, episodes, model_dir, first_episode=first_episode,
                                                latent_source=latent_source)
        return (result, [m["recovery_time_s"] for m in per_episode],
                [(m["recovery_tolerance_mps"], m["settled_speed_mps"]) for m in per_episode])
    if kind == "undamaged":
        return undamaged_return(path, model_dir, episodes)
    if kind == "breakdown":
        return reward_breakdown(path, method, model_dir)
    if kind == "tracking":
        return adapter_tracking(path, model_dir)
    if kind == "family":
        env_cfg, difficulty = path
        return evaluate_family(method, model_dir, env_cfg, difficulty, episodes)
    if kind == "adapter_family":
        env_cfg, difficulty = path
        return family_adapter_error(model_dir, env_cfg, difficulty, episodes)
    return latent_effect(path, model_dir)


def _job_name(kind: str, path) -> str:
    return f"difficulty {path[1]}" if kind in ("family", "adapter_family") else path.stem


def run_jobs(jobs: list[tuple], workers: int, progress: Callable[[str], None] | None, label: str = "card") -> list:
    """Run measurements (`_job`'s arguments) in `workers` processes (each builds its own pybullet env); results in
    order, with a `[label]` progress line as each finishes."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_job, *job) for job in jobs]
        results = []
        for (kind, path, method, model_dir, *_), future in zip(jobs, futures):
            results.append(future.result())
            if progress:
                progress(f"[{label}] {len(results)}/{len(jobs)} {kind} {_job_name(kind, path)} {method} "
                         f"({model_dir.name})")
        return results


def numerics_lines(report: dict | None) -> list[str]:
    """How to reproduce the run bit for bit: the math library's code path it trained with (adaptation/numerics.py)."""
    if report is None:
        return ["- numerics: not recorded (a run from before the numerics were pinned): MKL chose its kernels by CPU, "
                "so another machine may train a different policy from the same command."]
    how = ("pinned" if report.get("pinned") else "**not pinned**: another CPU may train a different policy")
    layers = report.get("layers")
    layer_text = (" Other layers: " + ", ".join(f"{k} `{v}`" for k, v in layers.items()) + "." if layers else "")
    return [f"- numerics: MKL_CBWR={report['mkl_cbwr']} ({how}), torch kernel fingerprint `{report['fingerprint']}`, "
            f"{report['cpu']}, torch {report['torch']}, {report['torch_threads']} threads.{layer_text} A rerun whose "
            "`runs/<out>/numerics.json` shows the same fingerprints computes the same numbers in those layers; "
            "the same torch fingerprint alone is not enough (an AMD EPYC rerun of an Intel Xeon run gave "
            "a different phase 1 with the same one)."]


def card_config(model_dir: Path, config: str | Path | None = None) -> TrainConfig:
    """The training config of the models in `model_dir`: from `config` (a preset name or YAML file) if given,
    else from their manifest (exports since session 16 record it)."""
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(str(manifest_path), "", "missing: not a model folder written by `metaloco export`")
    if config is not None:
        return load_train_config(str(config))
    recorded = json.loads(manifest_path.read_text()).get("config")
    if recorded is None:
        raise ConfigError(str(manifest_path), "config",
                          "missing (models exported before session 16 do not record their training config); pass "
                          "--config with the preset file they were trained with, e.g. the manifest's commit's: "
                          "git show COMMIT:config/train/PRESET.yaml > /tmp/trained.yaml")
    return from_dict(TrainConfig, recorded, f"{manifest_path}: config")


def evaluated_line(command: str | None, model_dir: Path | None = None) -> str:
    """Where and with what code the card's figures were measured (pybullet's numbers differ across CPU models);
    changes inside `model_dir` (the models being carded) do not make the code 'uncommitted'."""
    source = source_commit(exclude=model_dir)
    dirty = " (with uncommitted changes)" if source["dirty"] else ""
    by = f" by `{command}`" if command else ""
    return (f"Measured{by} at commit `{source['commit'][:12]}`{dirty} on {numerics.cpu_model()}, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}.")


def write_model_card(run: str | Path | None, model_dir: str | Path, episodes: int | None = CARD_EPISODES,
                     progress: Callable[[str], None] = print, workers: int | None = None,
                     config: str | Path | None = None, command: str | None = None) -> Path:
    """Evaluate every method on every scenario and write MODEL_CARD.md (and training_curve.png) in model_dir.

    With phase 3 (a `before_phase3/` folder beside the models), phase 1's pi is evaluated too: `nominal` and
    `oracle` of the shipped, fine-tuned pi feed it latents it was not fine-tuned on.

    Args:
        run: The training run folder (its config and training curve), or None to re-evaluate the models alone:
            the config then comes from `config` or the manifest (`card_config`), and an existing
            training_curve.png is kept.
        model_dir: The exported models; the card is written here.
        episodes: Episodes per scenario cell.
        progress: Sink for a line per measurement.
        workers: Processes for the measurements (default: one per core).
        config: With run None: the training config's preset name or file.
        command: The command that wrote the card, for its provenance line.
    """
    model_dir = Path(model_dir)
    episodes = CARD_EPISODES if episodes is None else episodes
    if episodes < 1:
        raise ConfigError("--episodes", "episodes", f"must be at least 1, got {episodes}")
    if run is not None:
        run = Path(run)
        cfg = load_run_config(run)
        plot_curves(run, model_dir / "training_curve.png")
    else:
        cfg = card_config(model_dir, config)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    has_curve = (model_dir / "training_curve.png").is_file()
    measured = evaluated_line(command, model_dir)  # before the measurements: the code they run is the tree's of now
    before_dir = model_dir / BEFORE_PHASE3
    has_before = before_dir.is_dir()
    probe_dir = before_dir if has_before else model_dir  # nominal's ceiling and the latent probe: phase 1's pi
    paths = sorted((config_dir() / "scenarios").glob("*.yaml"))
    faults = [config_dir() / "scenarios" / f"{name}.yaml" for name in FAULT_SCENARIOS]
    faults = [p for p in faults if p.is_file()]
    jobs = [("eval", p, m, model_dir, episodes) for p in paths for m in METHODS]
    if has_before:
        jobs += [("eval", p, m, before_dir, episodes) for p in paths for m in ("adaptive", "nominal", "oracle")]
    jobs += [("undamaged", p, "nominal", probe_dir, episodes) for p in faults]
    jobs += [("effect", p, "oracle", probe_dir, episodes) for p in faults]
    if has_before:  # and the shipped pi's, which phase 3 fine-tuned
        jobs += [("effect", p, "oracle", model_dir, episodes) for p in faults]
    flat = config_dir() / "scenarios" / f"{BREAKDOWN_SCENARIO}.yaml"
    jobs += [("breakdown", flat, m, model_dir, 1) for m in METHODS]
    if has_before:
        jobs += [("breakdown", flat, "nominal", before_dir, 1)]
    jobs += [("tracking", p, "adaptive", model_dir, 1) for p in faults]
    jobs += [("adapter_family", (cfg.env, 1.0), "adaptive", model_dir, FAMILY_EPISODES)]
    for level in FAMILY_DIFFICULTIES:
        jobs += [("family", (cfg.env, level), m, model_dir, FAMILY_EPISODES) for m in METHODS]
        if has_before:
            jobs += [("family", (cfg.env, level), m, before_dir, FAMILY_EPISODES) for m in ("nominal", "oracle")]
    out = run_jobs(jobs, workers or os.cpu_count() or 1, progress)
    results, before, undamaged, effects, breakdowns, tracking, family = {}, {}, {}, {}, {}, {}, {}
    tuned_effects = {}  # with phase 3: the shipped pi's latent effect, beside phase 1's pi's in `effects`
    recoveries = {}  # each episode's recovery_time_s of the shipped models' cells
    shortfalls = {}  # ... and each episode's (recovery_tolerance_mps, settled_speed_mps)
    adapter_family = None
    for (kind, path, method, folder, _), value in zip(jobs, out):
        if kind == "adapter_family":
            adapter_family = value
        elif kind == "eval":
            value, per_episode, missed = value
            (before if folder == before_dir else results)[(path.stem, method)] = value
            if folder != before_dir:
                recoveries[(path.stem, method)] = per_episode
                shortfalls[(path.stem, method)] = missed
        elif kind == "breakdown":
            breakdowns["nominal (phase 1's pi)" if folder == before_dir else method] = value
        elif kind == "tracking":
            tracking[path.stem] = value
        elif kind == "family":
            family[(path[1], f"{method} (phase 1's pi)" if folder == before_dir else method)] = value
        elif kind == "effect" and has_before and folder == model_dir:
            tuned_effects[path.stem] = value
        else:
            (undamaged if kind == "undamaged" else effects)[path.stem] = value
    leaked = mirrors_held_out(manifest, cfg)  # the symmetry augmentation trained on the held-out joints' faults
    rows = [(p.stem, held_out_reason(p, cfg, leaked)) for p in paths]
    (model_dir / "eval.json").write_text(json.dumps([results[k] for k in results], indent=1))
    if has_before:
        (before_dir / "eval.json").write_text(json.dumps([before[k] for k in before], indent=1))
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
    if manifest.get("uncommitted_changes"):
        lines.append("- **the run's tracked files differed from that commit**: the command at the commit may not "
                     "give these models.")
    if leaked:
        lines.append(f"- run the command at that commit (`git checkout`): from commit {SCREENED_SINCE} on, symmetry "
                     "augmentation leaves out the held-out joints' mirrored faults, so later commits train other "
                     "models.")
    lines += numerics_lines(manifest.get("numerics"))
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
            f"{BEFORE_PHASE3}/policy.onnx": "phase 1's pi, before phase 3 (with copies of the other files: a model "
                                            "folder for `metaloco eval --model-dir`)",
            "encoder.onnx": "mu(privileged) -> latent (sim only: oracle)", "robust.onnx": "robust baseline pi(obs)",
            "prior.json": "Gaussian prior over the latent + joint-health read-out"}
    for name, digest in manifest["files"].items():
        lines.append(f"| `{name}` | {what.get(name, '')} | `{digest[:16]}...` |")
    lines += ["", "## Training curve", ""]
    lines += (["![training curve](training_curve.png)"] if has_curve else
              ["Not available: the card was written without the run folder, and the models came without a curve."])
    lines += [
        "",
        f"## Evaluation ({episodes} episodes per cell, `metaloco eval`)",
        "",
        measured,
        "",
        "Return is the mean episode return (legged_gym-style reward); recovery is `recovery_time_s` (s after the",
        "last event until forward speed stays within 0.1 m/s of the command for 1 s; `never` if it does not within",
        "the scenario; 0 without events). Speed is measured as the base velocity averaged over one gait period.",
        "",
    ]
    for title, held in (("Scenarios inside the training distribution", False), ("Held-out scenarios", True)):
        lines += [f"### {title}", ""]
        if held and leaked:
            lines += [f"These models were trained before commit {SCREENED_SINCE}, whose left-right symmetry "
                      "augmentation",
                      "reflected every sample: a fault on a held-out joint's mirror twin (the same joint on the",
                      "other side) became, in the reflected half of each batch, a fault on the held-out joint.",
                      "So the held-out joint's faults were never drawn but were trained on, as mirror images, as",
                      "often as any other joint's: its row below is not a test on unseen faults.", ""]
        lines += ["| scenario | method | return | distance m | tracking err m/s | falls | recovery s |",
                  "|---|---|---|---|---|---|---|"]
        for name, reason in rows:
            if (reason is not None) != held:
                continue
            label = f"{name} ({reason})" if reason else name
            lines += [_result_row(label, method, results[(name, method)]) for method in METHODS]
        lines.append("")
    if has_before:
        lines += ["### Before phase 3: phase 1's pi with the same adapter (`" + BEFORE_PHASE3 + "/`)", "",
                  "Phase 3 fine-tunes pi on the adapter's estimate. The shipped pi then reads z_hat as part of its",
                  "state, not only as a task: fed a fixed (`nominal`) or true (`oracle`) latent it is no longer the",
                  "lower and upper bound those methods are meant to be. Phase 1's pi is the policy they are defined",
                  "for (RMA's 'without adaptation' and 'expert'); its `adaptive` is RMA without phase 3.", "",
                  "| scenario | method | return | distance m | tracking err m/s | falls | recovery s |",
                  "|---|---|---|---|---|---|---|"]
        for name, _ in rows:
            lines += [_result_row(name, f"{method} (phase 1's pi)", before[(name, method)])
                      for method in ("adaptive", "nominal", "oracle")]
        lines.append("")
    lines += family_section(family)
    lines += targets_section(results, rows, undamaged, before, recoveries, shortfalls)
    if has_before:
        lines += ["The fault's cost ('without the fault nominal scores ...') is measured with phase 1's pi.", ""]
    lines += latent_effect_section(effects, tuned_effects or None)
    lines += adapter_tracking_section(tracking, adapter_family)
    lines += reward_breakdown_section(breakdowns)
    card = model_dir / "MODEL_CARD.md"
    notes = hand_written_notes(card)
    card.write_text("\n".join(lines) + "\n" + notes)
    return card


def hand_written_notes(card: Path) -> str:
    """The part of an existing card from NOTES_MARKER on ("" without one): what a rewrite keeps."""
    if not card.is_file():
        return ""
    _, marker, notes = card.read_text().partition(NOTES_MARKER)
    return marker + notes
