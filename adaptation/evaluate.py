"""`metaloco eval`: a method on a scenario, in pybullet, with the exported ONNX models.

Methods (DESIGN.md): `adaptive` (policy + adapter at 10 Hz, fused with the prior, as
the adaptation node does it), `nominal` (the latent of the undamaged task), `robust`
(the latent-free baseline) and `oracle` (the true latent: sim only).

The forward velocity fed to the metrics is the base's velocity along its x axis,
averaged over one gait period (0.5 s, centred): a trotting base surges and brakes
within each stride by more than the 0.1 m/s recovery tolerance, so the instantaneous
value would measure the gait, not the tracking. The same averaging is applied to
trial recordings.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from metaloco.adaptation.estimator import (ADAPT_PERIOD_S, LatentEstimator, adapt_every, check_latent_source,
                                           policy_latent, refresh_due)
from metaloco.adaptation.metrics import (EpisodeSeries, episode_metrics, standard_error, stride_average,
                                         summarize)
from metaloco.adaptation.prior import LatentPrior
from metaloco.adaptation.runtime import BEFORE_PHASE3, OnnxFunction, load_adapter, load_policy
from metaloco.hardware.robot_config import RobotConfig
from metaloco.paths import models_dir
from metaloco.schema import ConfigError
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.history import ObsHistory
from metaloco.sim.scenario import Scenario, load_scenario, run_scenario

METHODS = ("adaptive", "nominal", "robust", "oracle")


class MethodPolicy:
    """A method as a callable (obs, info) -> action, with the latents it used."""

    def __init__(self, method: str, model_dir: Path, robot: RobotConfig, dt: float, latent_source: str = "fused"):
        """`latent_source` (adaptive): what pi is fed, 'fused' or 'raw' (estimator.LATENT_SOURCES)."""
        if method not in METHODS:
            raise ConfigError("--method", "method", f"got {method!r}; allowed values are {list(METHODS)}")
        self.method = method
        self.latent_source = check_latent_source(latent_source)
        self.policy = load_policy(model_dir, robot)
        self.prior = LatentPrior.load(model_dir / "prior.json")
        self.latent = self.prior.nominal.copy()
        self.latents: list[np.ndarray] = []
        self.steps = 0
        self.dt = dt
        self.adapt_every = adapt_every(dt)
        if method == "adaptive":
            self.adapter = load_adapter(model_dir, self.policy)
            self.history = ObsHistory(self.adapter.history_length, self.policy.obs_dim)
            self.estimator = LatentEstimator(self.prior)
            self.latent = self.prior.mean.copy()
        elif method == "oracle":
            self.encoder = OnnxFunction(model_dir / "encoder.onnx")
        elif method == "robust":
            self.robust = OnnxFunction(model_dir / "robust.onnx")

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        self.steps += 1
        if self.method == "robust":
            return self.robust(obs)
        if self.method == "adaptive":
            self.history.push(obs)
            if refresh_due(self.steps, self.adapt_every):
                estimate = self.estimator.update(self.adapter(self.history.array()), self.steps * self.dt)
                self.latent = policy_latent(estimate, self.latent_source)
        elif self.method == "oracle":
            self.latent = self.encoder(info["privileged"])
        self.latents.append(self.latent.copy())
        return self.policy(obs, self.latent)


def run_episode(scenario: Scenario, method: str, model_dir: Path, episode: int = 0,
                observe: Callable[[np.ndarray, np.ndarray, MethodPolicy], None] | None = None,
                latent_source: str = "fused"):
    """One episode of a method on a scenario. Returns (EpisodeSeries, trace, MethodPolicy).

    `observe(obs, action, policy)`, if given, sees every step's observation and the action taken.
    `latent_source` (adaptive): what pi is fed, see `MethodPolicy`.
    """
    env = LocomotionEnv(EnvConfig(robot=scenario.robot.name, randomize_tasks=False), seed=scenario.seed + episode,
                        robot_cfg=scenario.robot)
    try:
        policy = MethodPolicy(method, Path(model_dir), scenario.robot, env.dt, latent_source)

        def act(obs: np.ndarray, info: dict) -> np.ndarray:
            action = policy(obs, info)
            observe(obs, action, policy)
            return action

        trace = run_scenario(scenario, act if observe else policy, env=env, episode=episode)
    finally:
        env.close()
    fallen = np.zeros(len(trace.t), bool)
    if trace.fell:
        fallen[-1] = True
    series = EpisodeSeries(t=trace.t, cmd_vx=trace.command[:, 0], vx=stride_average(trace.t, trace.lin_vel_base[:, 0]),
                           tau=trace.torques, qdot=trace.joint_vel, fallen=fallen, event_times=trace.events_s,
                           reward=trace.reward, mass_kg=None)
    return series, trace, policy


def check_workers(workers: int) -> int:
    """`workers` if it is a usable process count, else a ConfigError naming `--workers`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("--workers", "workers", f"must be a whole number of processes, 1 or more, got {workers!r}")
    return workers


def map_episodes(episode: Callable[..., Any], args: list[tuple], workers: int) -> Iterator[Any]:
    """`episode(*a)` for each `a` in `args`, yielded in the order of `args`.

    With more than one worker the episodes run in that many spawned processes, each building its own pybullet
    world; every episode seeds its world from its own index and onnxruntime runs one thread, so the results are
    those of `workers=1`, which runs them here, one after another.
    """
    workers = min(check_workers(workers), len(args))
    if workers <= 1:
        yield from (episode(*a) for a in args)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(episode, *a) for a in args]
        try:
            for future in futures:
                yield future.result()
        finally:  # an error (or a caller that stops early) leaves no episodes queued behind it
            for future in futures:
                future.cancel()


def evaluate(scenario_path: str | Path, method: str, episodes: int = 1, model_dir: str | Path | None = None,
             progress: Callable[[str], None] | None = None, latent_source: str = "fused",
             first_episode: int = 0, workers: int = 1) -> dict:
    """The DESIGN.md `eval` object for a method on a scenario (`evaluate_episodes` without the episodes)."""
    return evaluate_episodes(scenario_path, method, episodes, model_dir, progress, first_episode=first_episode,
                             latent_source=latent_source, workers=workers)[0]


def _scenario_episode(scenario: Scenario, method: str, model_dir: Path, episode: int,
                      latent_source: str) -> tuple[EpisodeSeries, bool, float]:
    """One scenario episode for `evaluate_episodes` (possibly in a worker): its series, whether it fell, and the
    base's forward travel (m)."""
    series, trace, _ = run_episode(scenario, method, model_dir, episode, latent_source=latent_source)
    return series, bool(trace.fell), float(trace.base_pos[-1][0] - trace.base_pos[0][0])


def evaluate_episodes(scenario_path: str | Path, method: str, episodes: int = 1, model_dir: str | Path | None = None,
                      progress: Callable[[str], None] | None = None, first_episode: int = 0,
                      latent_source: str = "fused", workers: int = 1) -> tuple[dict, list[dict]]:
    """The DESIGN.md `eval` object for a method on a scenario, and each episode's own figures.

    Args:
        scenario_path: Scenario file or name.
        method: adaptive, nominal, robust or oracle.
        episodes: Episodes (episode i uses seed + i).
        model_dir: Folder with the exported models (default: models/<robot>).
        progress: Sink for a line per episode.
        first_episode: Index of the first episode: episodes first_episode, ..., first_episode + episodes - 1
            (fresh seeds for a result chosen on the first ones).
        latent_source: (adaptive) what pi is fed: 'fused' (the estimate fused with the prior) or 'raw' (the
            adapter's output); see estimator.LATENT_SOURCES.
        workers: Processes running episodes side by side (`map_episodes`); the result does not depend on it.

    Returns:
        ({"scenario", "method", "episodes", "return_mean", "distance_m", "tracking_error_mps", "falls",
        "recovery_time_s"}, [`episode_metrics` of each episode]): the eval object's recovery is None when one
        episode never recovers, and the episodes say how many did.
    """
    scenario = load_scenario(scenario_path)
    if method not in METHODS:
        raise ConfigError("--method", "method", f"got {method!r}; allowed values are {list(METHODS)}")
    if episodes < 1:
        raise ConfigError("--episodes", "episodes", f"must be at least 1, got {episodes}")
    if first_episode < 0:
        raise ConfigError("--first-episode", "first_episode", f"must be 0 or more, got {first_episode}")
    check_latent_source(latent_source)
    check_workers(workers)
    folder = Path(model_dir) if model_dir else models_dir() / scenario.robot.name
    if progress and method in ("nominal", "oracle") and load_policy(folder, scenario.robot).latent_input == "adapter":
        progress(f"[eval] note: {folder / 'policy.onnx'} was fine-tuned on the adapter's estimate (phase 3); with "
                 f"a fixed or true latent ({method}) it runs on inputs it was not fine-tuned on, so this is not the bound DESIGN.md means; "
                 f"{folder / BEFORE_PHASE3} holds the policy {method} is defined for")
    series = []
    indices = range(first_episode, first_episode + episodes)
    jobs = [(scenario, method, folder, i, latent_source) for i in indices]
    for i, (s, fell, travel) in zip(indices, map_episodes(_scenario_episode, jobs, workers)):
        series.append(s)
        if progress:
            progress(f"[eval] {scenario.name} {method} episode {i + 1}/{first_episode + episodes}: "
                     f"{'fell' if fell else 'ok'}, {travel:.2f} m")
    result = summarize(scenario.name, method, series)
    for key in ("return_mean", "distance_m", "tracking_error_mps", "recovery_time_s"):
        if isinstance(result.get(key), float):
            result[key] = round(result[key], 4)
    return result, [episode_metrics(s) for s in series]


FAMILY_SEED = 10_000
"""Episode i of `evaluate_family` draws its task and commands with seed FAMILY_SEED + i, whatever the method."""


def _family_episode(method: str, model_dir: Path, cfg: EnvConfig, difficulty: float, i: int, latent_source: str,
                    observe: Callable[[int, dict, MethodPolicy], None] | None) -> tuple[float, float, bool]:
    """Episode i of `evaluate_family` (possibly in a worker): its return, tracking error and whether it fell."""
    env = LocomotionEnv(cfg, seed=FAMILY_SEED + i)
    try:
        env.set_difficulty(difficulty)
        obs, info = env.reset(seed=FAMILY_SEED + i)
        policy = MethodPolicy(method, model_dir, env.robot_cfg, env.dt, latent_source)
        rows: dict[str, list] = {"t": [], "cmd": [], "vx": [], "reward": []}
        fell = False
        while True:
            action = policy(obs, info)
            if observe:
                observe(i, info, policy)
            obs, reward, terminated, truncated, info = env.step(action)
            for key, value in (("t", info["time_s"]), ("cmd", info["command"][0]),
                               ("vx", info["lin_vel_base"][0]), ("reward", reward)):
                rows[key].append(value)
            if terminated or truncated:
                fell = bool(terminated)
                break
    finally:
        env.close()
    t = np.asarray(rows["t"])
    fallen = np.zeros(len(t), bool)
    fallen[-1] = fell
    vx = stride_average(t, np.asarray(rows["vx"]))
    m = episode_metrics(EpisodeSeries(t=t, cmd_vx=np.asarray(rows["cmd"]), vx=vx, fallen=fallen, event_times=(),
                                      reward=np.asarray(rows["reward"])))
    return float(m["return"]), float(m["tracking_error_mps"]), fell


def evaluate_family(method: str, model_dir: str | Path, env_cfg: EnvConfig, difficulty: float,
                    episodes: int, progress: Callable[[str], None] | None = None,
                    observe: Callable[[int, dict, MethodPolicy], None] | None = None,
                    latent_source: str = "fused", first_episode: int = 0, workers: int = 1) -> dict:
    """A method on tasks drawn from the training family, as in training: a random task per episode (terrain,
    dynamics, a fault with its onset), commands resampled on the training schedule, until a fall or the time
    limit. Episode i uses the same task and commands for every method, so methods compare pairwise.

    Args:
        method: adaptive, nominal, robust or oracle.
        model_dir: Exported models.
        env_cfg: The run's env config (its task ranges, commands and episode length).
        difficulty: Curriculum level in [0, 1] the tasks are drawn at.
        episodes: Episodes (tasks).
        progress: Sink for a line per episode.
        observe: If given, `observe(episode, info, policy)` after the policy acted on each step's observation
            (`info` is that observation's).
        latent_source: (adaptive) what pi is fed, 'fused' or 'raw'; see estimator.LATENT_SOURCES.
        first_episode: Index of the first episode: episodes first_episode, ..., first_episode + episodes - 1
            (fresh tasks for a comparison fixed after episodes 0, 1, ... were seen).
        workers: Processes running episodes side by side (`map_episodes`); the result does not depend on it.
            `observe` needs 1 (it is called in this process).

    Returns:
        {"method", "difficulty", "first_episode", "episodes", "return_mean", "return_sem" (standard error of the
        mean), "falls", "tracking_error_mps", "returns" and "fell" (one per episode, in episode order: two methods'
        lists pair up episode by episode, for a paired test of returns or falls)}.
    """
    if method not in METHODS:
        raise ConfigError("--method", "method", f"got {method!r}; allowed values are {list(METHODS)}")
    if episodes < 1:
        raise ConfigError("--episodes", "episodes", f"must be at least 1, got {episodes}")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError("--difficulty", "difficulty", f"must be in [0, 1], got {difficulty}")
    if first_episode < 0:
        raise ConfigError("--first-episode", "first_episode", f"must be 0 or more, got {first_episode}")
    check_latent_source(latent_source)
    check_workers(workers)
    if observe is not None and workers > 1:
        raise ConfigError("--workers", "workers", f"an observer sees the steps in this process, so it needs workers=1, "
                          f"got {workers}")
    cfg = dataclasses.replace(env_cfg, randomize_tasks=True)
    returns, errors, fells = [], [], []
    indices = range(first_episode, first_episode + episodes)
    jobs = [(method, Path(model_dir), cfg, difficulty, i, latent_source, observe) for i in indices]
    for i, (ret, error, fell) in zip(indices, map_episodes(_family_episode, jobs, workers)):
        returns.append(ret)
        errors.append(error)
        fells.append(fell)
        if progress:
            progress(f"[eval] family difficulty {difficulty} {method} episode {i + 1}/{first_episode + episodes}: "
                     f"{'fell' if fell else 'ok'}, return {ret:.2f}")
    sem = standard_error(returns)
    return {"method": method, "difficulty": difficulty, "first_episode": first_episode, "episodes": episodes,
            "return_mean": round(float(np.mean(returns)), 4), "return_sem": round(sem, 4), "falls": sum(fells),
            "tracking_error_mps": round(float(np.mean(errors)), 4), "returns": [round(r, 4) for r in returns],
            "fell": fells}


def default_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
