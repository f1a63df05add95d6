"""The fault curriculum: kinds the policy falls on are drawn more often, and every kind still now and then."""

from collections import Counter

import numpy as np
import torch

from metaloco.adaptation.curriculum import FaultFocus
from metaloco.hardware.robot_config import load_robot
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.tasks import TaskRanges, TaskSampler


def test_a_kind_that_falls_gets_more_of_the_draws_and_none_gets_less_than_its_uniform_share():
    focus = FaultFocus(4, focus=0.5)
    assert np.allclose(focus.weights(), 0.25)  # nothing seen yet: uniform
    weights = focus.update([0] * 10 + [1] * 10 + [2] * 10, [True] * 10 + [False] * 20)
    assert abs(weights.sum() - 1.0) < 1e-12
    # kind 0 fell every time: 11/15 against 1/15 and the unseen kind 3's prior 1/5
    assert weights[0] > 0.45 and weights[0] > 2 * weights[3] and weights[1] < weights[3]
    assert weights.min() >= 0.5 / 4  # the uniform half
    restored = FaultFocus(4, focus=0.5)
    restored.load(focus.state())
    assert np.array_equal(restored.weights(), weights)


def test_counts_decay_so_that_a_kind_once_mastered_falls_back():
    focus = FaultFocus(2, focus=1.0, decay=0.5)
    focus.update([0] * 20, [True] * 20)
    hard = focus.weights()[0]
    for _ in range(10):
        weights = focus.update([0] * 20 + [1] * 20, [False] * 40)
    assert weights[0] < hard and abs(weights[0] - 0.5) < 0.05


def test_the_sampler_draws_kinds_by_their_weights_and_the_env_reports_the_kind():
    robot = load_robot("a1")
    sampler = TaskSampler(TaskRanges(), robot.joint_names, seed=3)
    kinds = sampler.fault_kinds
    assert len(kinds) == 11 * 4 and all(joint != "FL_lower_joint" for joint, _ in kinds)  # the held-out joint
    target = kinds.index(("RL_upper_joint", "limp"))
    sampler.kind_weights = np.eye(len(kinds))[target]
    drawn = Counter()
    for _ in range(200):
        task, _ = sampler.sample()
        drawn[sampler.fault_kind(task)] += 1
    assert set(drawn) <= {target, -1} and drawn[target] > 50  # 50% of episodes faulted by default

    env = LocomotionEnv(EnvConfig(), seed=1)
    try:
        env.set_fault_weights(np.eye(len(kinds))[target])
        seen = set()
        for _ in range(10):
            env.reset()
            seen.add(env.fault_kind)
        assert seen <= {target, -1} and target in seen
    finally:
        env.close()


def test_training_with_the_fault_focus_checkpoints_its_counts(tmp_path):
    from dataclasses import replace

    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg = replace(cfg, env=replace(cfg.env, episode_s=0.3),  # short episodes: some finish in 2 iterations
                  curriculum=replace(cfg.curriculum, fault_focus=0.5))
    train(cfg, tmp_path, log=lambda line: None, export=False)
    saved = torch.load(tmp_path / "phase1" / "checkpoint.pt", weights_only=True)
    episodes, falls = saved["fault_focus"].numpy()
    assert episodes.shape == (44,) and episodes.sum() > 0 and (falls <= episodes).all()


def test_the_difficulty_curriculum_sees_the_family_as_defined_not_the_tilted_draw():
    from types import SimpleNamespace

    from metaloco.adaptation.train import _episode_stats

    # kind 0 is drawn 3 times as often as kind 1 (its weight 0.75 against a uniform 0.5): each of its episodes
    # counts 2/3, each of kind 1's 2, each unfaulted one 1
    venv = SimpleNamespace(completed_returns=[1.0, 1.0, 1.0, 5.0, 3.0], completed_lengths=[10, 10, 10, 50, 30],
                           completed_falls=[True, True, True, False, False], completed_tracking=[0.1] * 5,
                           completed_fault_kinds=[0, 0, 0, 1, -1])
    tilted = _episode_stats(venv, 0)
    family = _episode_stats(venv, 0, kind_weights=np.array([0.75, 0.25]))
    assert tilted[2] == 0.6 and abs(family[2] - 2.0 / 5.0) < 1e-12  # falls: (3 x 2/3) / (2 + 2 + 1)
    assert abs(family[0] - (2.0 + 10.0 + 3.0) / 5.0) < 1e-12 and family[4] == 5


def test_the_fault_focus_can_be_given_to_phase_3_alone(tmp_path):
    from dataclasses import replace

    from metaloco.adaptation.train import train
    from metaloco.adaptation.train_config import load_train_config

    cfg = load_train_config("smoke")
    cfg = replace(cfg, env=replace(cfg.env, episode_s=0.3), finetune_fault_focus=0.5)
    assert cfg.curriculum.fault_focus == 0.0
    train(cfg, tmp_path, log=lambda line: None, export=False)
    focused = torch.load(tmp_path / "phase3" / "checkpoint.pt", weights_only=True)
    episodes, falls = focused["fault_focus"].numpy()
    assert episodes.shape == (44,) and episodes.sum() > 0 and (falls <= episodes).all()
    for phase in ("phase1", "phase2", "robust"):
        assert "fault_focus" not in torch.load(tmp_path / phase / "checkpoint.pt", weights_only=True), phase
