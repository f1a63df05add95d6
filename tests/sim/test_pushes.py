"""Random training pushes (TaskRanges.pushes): when on they shove the base; when off they change nothing."""

import numpy as np
import pytest

from metaloco.schema import ConfigError, from_dict
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.tasks import PushRange, TaskRanges, layout_slice


def _rollout(pushes: PushRange | None, seed: int = 4, steps: int = 75):
    """Privileged vectors and base velocities (world frame) while standing still on the gait generator."""
    cfg = EnvConfig()
    if pushes is not None:
        cfg.tasks.pushes = pushes
    env = LocomotionEnv(cfg, seed=seed)
    env.set_difficulty(1.0)
    _, info = env.reset()
    task = env.robot.task.copy()
    privileged, velocity = [info["privileged"]], []
    for _ in range(steps):
        _, _, _, _, info = env.step(np.zeros(env.n_actions))
        privileged.append(info["privileged"])
        velocity.append(env.robot.base_state()[2])
    env.close()
    return np.array(privileged), np.array(velocity), task


def test_pushes_off_push_nothing_and_change_nothing():
    reference, ref_vel, ref_task = _rollout(None)
    off, off_vel, off_task = _rollout(PushRange(probability=0.0, interval_s=[0.5, 0.5]))
    np.testing.assert_array_equal(reference, off)
    np.testing.assert_array_equal(ref_vel, off_vel)
    assert off_task == ref_task
    assert not reference[:, layout_slice("push_force_n", 12)].any()


def test_a_push_comes_at_its_drawn_time_lasts_its_duration_and_moves_the_base():
    pushes = PushRange(probability=1.0, interval_s=[0.5, 0.5], force_n=60.0, duration_s=0.2)
    pushed, pushed_vel, task = _rollout(pushes)
    calm, calm_vel, calm_task = _rollout(None)
    assert task == calm_task  # the push generator has its own stream: the drawn task is the same
    force = pushed[:, layout_slice("push_force_n", 12)]
    active = np.flatnonzero(np.abs(force).sum(axis=1) > 0)
    dt = 0.02  # control period; privileged[k] is after k steps
    first = active[: int(np.argmax(np.diff(active) > 1)) + 1]  # the first push's steps (another follows at 1 s)
    assert active[0] * dt == pytest.approx(0.5, abs=dt + 1e-9)
    assert len(first) * dt == pytest.approx(0.2, abs=dt + 1e-9)
    assert active[len(first)] * dt == pytest.approx(1.0, abs=dt + 1e-9)
    assert not np.array_equal(force[active[0]], force[active[len(first)]])  # each push draws its own force
    assert np.all(np.abs(force[active][:, :2]) <= 60.0) and not force[:, 2].any()
    # 60 N at most per axis for 0.2 s on a 12 kg robot: a kick of a few tenths of a m/s along the force
    kick = pushed_vel[first[-1]] - calm_vel[first[-1]]
    direction = force[active[0]] / np.linalg.norm(force[active[0]])
    assert float(kick @ direction) > 0.1, (kick, direction)


def test_push_probability_scales_with_the_curriculum():
    cfg = EnvConfig()
    cfg.tasks.pushes = PushRange(probability=1.0, interval_s=[0.5, 0.5])
    env = LocomotionEnv(cfg, seed=1)
    env.set_difficulty(0.0)
    env.reset()
    assert env.next_push_s is None  # difficulty 0 draws the nominal, unpushed task
    env.set_difficulty(1.0)
    env.reset()
    assert env.next_push_s == pytest.approx(0.5)
    env.close()


def test_a_backwards_push_interval_is_refused_by_key():
    with pytest.raises(ConfigError, match=r"pushes\.interval_s.*\[shortest, longest\], got \[9.0, 2.0\]"):
        from_dict(TaskRanges, {"pushes": {"interval_s": [9.0, 2.0]}}, "preset.yaml", "env.tasks")
