"""`metaloco bench sim`: how much the env stack costs over pybullet's own stepping.

All figures come from one workload: the A1 on flat ground in the nominal task,
trotting under the gait generator with zero residual actions (so the contacts and
joint motion are those of walking, not of a robot lying still).

- `raw_physics_steps_per_s`: physics steps per second of wall time spent inside
  `pybullet.stepSimulation`, measured in the one-worker run itself (same scene, same
  trajectory), so it is exactly "pybullet's own stepping".
- `env_steps_per_s_1worker`: control steps per second through `SubprocVecEnv` with one
  worker process (PD, observations, rewards, resets and the pipe to the learner included).
- `env_steps_per_s`: the same with `workers` processes.
- `overhead_ratio = env_steps_per_s_1worker * substeps / raw_physics_steps_per_s`.
"""

from __future__ import annotations

import time

import torch

from metaloco.sim.env import EnvConfig
from metaloco.sim.vec_env import SubprocVecEnv


def _measure(cfg: EnvConfig, num_envs: int, workers: int, seconds: float) -> tuple[float, int, float]:
    with SubprocVecEnv(cfg, num_envs=num_envs, workers=workers) as venv:
        actions = torch.zeros(num_envs, venv.num_actions)
        for _ in range(10):
            venv.step(actions)
        steps0, wall0 = venv.physics_stats()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            venv.step(actions)
            n += 1
        elapsed = time.perf_counter() - start
        steps1, wall1 = venv.physics_stats()
    return n * num_envs / elapsed, steps1 - steps0, wall1 - wall0


def bench_sim(seconds: float = 10.0, num_envs: int = 16, workers: int = 2, robot: str = "a1") -> dict:
    """Measure env throughput against raw pybullet stepping.

    Args:
        seconds: Measuring time per configuration.
        num_envs: Envs in each configuration (the same for 1 and `workers` workers).
        workers: Worker processes for `env_steps_per_s`.
        robot: Robot name.

    Returns:
        The DESIGN.md `bench sim` keys.
    """
    cfg = EnvConfig(robot=robot, randomize_tasks=False)
    one, phys_steps, phys_wall = _measure(cfg, num_envs, 1, seconds)
    many, _, _ = _measure(cfg, num_envs, workers, seconds)
    from metaloco.hardware.robot_config import load_robot

    substeps = load_robot(robot).decimation
    raw = phys_steps / phys_wall
    return {
        "raw_physics_steps_per_s": round(raw, 1),
        "substeps": substeps,
        "env_steps_per_s_1worker": round(one, 1),
        "env_steps_per_s": round(many, 1),
        "workers": workers,
        "overhead_ratio": round(one * substeps / raw, 3),
    }
