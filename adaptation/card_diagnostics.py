"""Diagnostics for a model card: what the eval table alone does not say about trained models.

- `undamaged_return`: what a fault could cost at most (nominal without the fault's events).
- `latent_effect`: does the policy act on its latent?
- `adapter_tracking`: does the adapter's estimate move to the true latent after a fault?
- `family_adapter_error`: how much of the true latent the adapter explains on the training family.
- `reward_breakdown`: where an episode's return goes, term by term.
- `family_section`: the training-family evaluation (`evaluate_family`) as a table with paired differences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from metaloco.adaptation.compare import paired_comparison
from metaloco.adaptation.evaluate import MethodPolicy, evaluate_family, run_episode
from metaloco.adaptation.metrics import summarize
from metaloco.adaptation.runtime import OnnxFunction
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.scenario import load_scenario, run_scenario

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


def latent_effect_section(effects: dict[str, dict], tuned: dict[str, dict] | None = None) -> list[str]:
    """A table of `latent_effect` per fault scenario; with `tuned` (models with phase 3, whose `effects` are
    phase 1's pi's), the shipped pi's action shift and spread beside them."""
    lines = ["## Does the policy act on the latent?", "",
             "One `oracle` episode per fault scenario. After the event, at every step: the distance of the true",
             "latent from the nominal one, and how much the action changes when the policy is given the nominal",
             "latent instead (mean over outputs); for scale, the spread (std) of the actions over the episode.", ""]
    if tuned is None:
        lines += ["| scenario | latent shift | action shift | action spread |", "|---|---|---|---|"]
        for name, e in effects.items():
            lines.append(f"| {name} | {e['latent_shift']:.2f} | {e['action_shift']:.3f} | {e['action_spread']:.3f} |")
        return lines + [""]
    lines += ["Phase 1's pi and the shipped pi (phase 3), each in its own episode (the latent shift is that of phase",
              "1's pi's episode).", "",
              "| scenario | latent shift | action shift, phase 1's pi | action spread, phase 1's pi "
              "| action shift, shipped pi | action spread, shipped pi |", "|---|---|---|---|---|---|"]
    for name, e in effects.items():
        t = tuned[name]
        lines.append(f"| {name} | {e['latent_shift']:.2f} | {e['action_shift']:.3f} | {e['action_spread']:.3f} "
                     f"| {t['action_shift']:.3f} | {t['action_spread']:.3f} |")
    return lines + [""]


FAMILY_DIFFICULTIES = (0.5, 1.0)
"""Curriculum levels of the training-family evaluation in the card."""
FAMILY_EPISODES = 20
"""Tasks per method and level (the same tasks for every method)."""


def family_section(family: dict[tuple[float, str], dict]) -> list[str]:
    """The training-family evaluation (`evaluate_family`): each method's return over the same random tasks, and
    `adaptive` minus each other method, episode by episode (mean and standard error of the paired difference)."""
    lines = [f"## On the training family ({FAMILY_EPISODES} random tasks per level)", "",
             "The scenario files are a few hand-picked cases, most of them a single fault on flat ground. Here every",
             "method walks the same tasks drawn from the training family (terrain, friction, payload, motor strength,",
             "latency and, in 80% of the tasks at full difficulty, a joint fault with its onset; never a held-out",
             "one), with commands resampled as in training, for 20 s or until a fall. Return: mean +- standard error.",
             "'adaptive - X': the paired difference over the same tasks, mean +- standard error.", "",
             "| difficulty | method | return | falls | tracking err m/s | adaptive - method |",
             "|---|---|---|---|---|---|"]
    for (level, label), r in family.items():
        adaptive = family.get((level, "adaptive"))
        diff = ""
        if adaptive is not None and label != "adaptive":
            c = paired_comparison(adaptive, r)
            diff = f"{c['return_diff']:+.2f} +- {c['return_diff_sem']:.2f}"
        lines.append(f"| {level:.1f} | {label} | {r['return_mean']:.2f} +- {r['return_sem']:.2f} | "
                     f"{r['falls']}/{r['episodes']} | {r['tracking_error_mps']:.2f} | {diff} |")
    return lines + [""]


BREAKDOWN_SCENARIO = "nominal_flat"
"""The scenario whose return the card splits into its reward terms."""


def reward_breakdown(path: Path, method: str, model_dir: Path) -> dict[str, float]:
    """Where one episode's return goes (episode 0): each weighted reward term summed over it, and the return.

    The return can exceed the terms' sum: legged_gym's clip of each step's total at zero (`only_positive`).
    """
    _, trace, _ = run_episode(load_scenario(path), method, model_dir, 0)
    return {**trace.reward_terms, "return": float(trace.reward.sum())}


def reward_breakdown_section(breakdowns: dict[str, dict[str, float]]) -> list[str]:
    """A table of `reward_breakdown` per method (rows) and term (columns)."""
    terms = list(dict.fromkeys(k for b in breakdowns.values() for k in b if k != "return"))
    lines = [f"## Where the return goes ({BREAKDOWN_SCENARIO}, one episode)", "",
             "Each weighted reward term summed over the episode. Two policies that track the command equally well",
             "can still differ here: a gait that bounces (`lin_vel_z`), rocks (`ang_vel_xy`, `orientation`) or turns",
             "off the commanded yaw rate (`tracking_ang_vel`) scores less. The return can exceed the sum of the",
             "terms: each step's total is clipped at zero.", "",
             "| method | " + " | ".join(terms) + " | return |", "|---" * (len(terms) + 2) + "|"]
    for label, b in breakdowns.items():
        lines.append(f"| {label} | " + " | ".join(f"{b.get(t, 0.0):.2f}" for t in terms) + f" | {b['return']:.2f} |")
    return lines + [""]


def adapter_tracking(path: Path, model_dir: Path) -> dict[str, float | None]:
    """Does the adapter find the fault? One `adaptive` episode (episode 0) of a scenario with an event.

    At every step: the adapter's raw estimate (before the prior) and the true latent mu(privileged). The target
    is the true latent 0.5-1.5 s after the first event; the estimate's distance from it is measured over the
    second before the event, over 0.5-1.5 s after it, and over 3-5 s after it (each window's mean estimate).

    Returns:
        {"true_shift": how far the true latent moved (mean over 0.5-1.5 s after minus the second before),
        "error_before", "error_after", "error_late"}; a window the robot did not reach (it fell) is None.
    """
    scenario = load_scenario(path)
    event_t = scenario.events[0].t
    env = LocomotionEnv(EnvConfig(robot=scenario.robot.name, randomize_tasks=False), seed=scenario.seed,
                        robot_cfg=scenario.robot)
    times, estimates, truths = [], [], []
    try:
        policy = MethodPolicy("adaptive", Path(model_dir), scenario.robot, env.dt)
        encoder = OnnxFunction(Path(model_dir) / "encoder.onnx")

        def act(obs: np.ndarray, info: dict) -> np.ndarray:
            action = policy(obs, info)
            times.append(policy.steps * env.dt)
            estimates.append(policy.adapter(policy.history.array()))
            truths.append(encoder(info["privileged"]))
            return action

        run_scenario(scenario, act, env=env)
    finally:
        env.close()
    t, estimates, truths = np.array(times), np.array(estimates), np.array(truths)
    windows = {"before": (event_t - 1.0, event_t), "after": (event_t + 0.5, event_t + 1.5),
               "late": (event_t + 3.0, event_t + 5.0)}
    masks = {name: (t > lo) & (t < hi) for name, (lo, hi) in windows.items()}
    if not masks["after"].any():
        return {"true_shift": None, "error_before": None, "error_after": None, "error_late": None}
    target = truths[masks["after"]].mean(axis=0)
    error = {name: float(np.linalg.norm(estimates[m].mean(axis=0) - target)) if m.any() else None
             for name, m in masks.items()}
    return {"true_shift": float(np.linalg.norm(target - truths[masks["before"]].mean(axis=0))),
            "error_before": error["before"], "error_after": error["after"], "error_late": error["late"]}


def family_adapter_error(model_dir: Path, env_cfg: EnvConfig, difficulty: float, episodes: int) -> dict[str, float]:
    """How much of the latent the adapter explains on the training family (`evaluate_family`'s tasks, `adaptive`).

    At every step from 1 s into an episode (a full history): the adapter's raw estimate (before the prior) and
    the true latent mu(privileged). `explained` is 1 - sum |z_hat - z|^2 / sum |z - mean z|^2 over those steps:
    1 is a perfect estimate, 0 no better than always answering the mean latent. `fault_explained` is the same
    over the steps from 1 s after a fault's onset (when the true latent jumped), the case adaptation is for.

    Returns:
        {"explained", "fault_explained" (None without such steps), "error": mean |z_hat - z|, "spread": mean
        |z - mean z|, "steps", "fault_steps"}.
    """
    encoder = OnnxFunction(Path(model_dir) / "encoder.onnx")
    rows: list[tuple[int, float, np.ndarray, np.ndarray]] = []

    def observe(episode: int, info: dict, policy: MethodPolicy) -> None:
        rows.append((episode, policy.steps * policy.dt, policy.adapter(policy.history.array()),
                     encoder(info["privileged"])))

    evaluate_family("adaptive", model_dir, env_cfg, difficulty, episodes, observe=observe)
    episode = np.array([r[0] for r in rows])
    t = np.array([r[1] for r in rows])
    z_hat, z = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    jumped = np.zeros(len(rows), bool)  # 1 s or more after the episode's true latent moved from its start
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)
        moved = np.linalg.norm(z[idx] - z[idx[0]], axis=1) > 1e-3
        if moved.any():
            onset = t[idx][np.argmax(moved)]
            jumped[idx] = t[idx] >= onset + 1.0
    full = t >= 1.0
    mean = z[full].mean(axis=0)

    def explained(mask: np.ndarray) -> float | None:
        if not mask.any():
            return None
        return float(1.0 - np.sum((z_hat[mask] - z[mask]) ** 2) / np.sum((z[mask] - mean) ** 2))

    return {"explained": explained(full), "fault_explained": explained(jumped),  # jumped steps are all >= 1 s
            "error": float(np.linalg.norm(z_hat[full] - z[full], axis=1).mean()),
            "spread": float(np.linalg.norm(z[full] - mean, axis=1).mean()),
            "steps": int(full.sum()), "fault_steps": int(jumped.sum())}


def adapter_tracking_section(tracking: dict[str, dict], family: dict | None = None) -> list[str]:
    """A table of `adapter_tracking` per fault scenario, and `family_adapter_error` (at difficulty 1) if given."""
    lines = ["## Does the adapter find the fault?", "",
             "One `adaptive` episode per fault scenario. The distance of the adapter's estimate (window mean, before",
             "the prior) from the true latent after the fault: in the second before the fault, 0.5-1.5 s after it and",
             "3-5 s after it. An adapter that finds the fault brings this from about the true shift toward zero.", "",
             "| scenario | true latent shift | error before | error 0.5-1.5 s after | error 3-5 s after |",
             "|---|---|---|---|---|"]
    for name, r in tracking.items():
        lines.append(f"| {name} | " + " | ".join("fell" if r[k] is None else f"{r[k]:.2f}" for k in
                                                ("true_shift", "error_before", "error_after", "error_late")) + " |")
    if family:
        fault = family["fault_explained"]
        lines += ["", f"On {FAMILY_EPISODES} tasks of the training family at full difficulty (`adaptive`, from 1 s into "
                  f"each episode) the estimate explains {family['explained']:.0%} of the true latent's variance "
                  f"(1 - sum |z_hat - z|^2 / sum |z - mean z|^2; 0: no better than the mean latent)"
                  + (f", {fault:.0%} from 1 s after a fault's onset" if fault is not None else "")
                  + f"; mean error {family['error']:.2f} against a spread of {family['spread']:.2f}."]
    return lines + [""]
