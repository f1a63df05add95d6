"""Left-right mirroring (sim/mirror.py): checked against the simulator and the gait generator themselves."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from metaloco.hardware.robot_config import load_robot
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.gait import ActionMap
from metaloco.sim.mirror import Mirror, mirror_map, mirrors_onto, rsl_rl_augmentation
from metaloco.sim.tasks import DynamicsSpec, JointFault, Task, privileged_layout, task_vector

M = Mirror(12, 15)


def test_mirroring_twice_is_the_identity():
    rng = np.random.default_rng(0)
    for index_sign, size in ((M.obs, 50), (M.action, 15), (M.privileged, len(M.privileged[0]))):
        x = rng.normal(size=(4, size))
        assert len(index_sign[0]) == size
        np.testing.assert_array_equal(Mirror.apply(Mirror.apply(x, index_sign), index_sign), x)


def test_a_mirrored_episode_in_pybullet_is_the_mirror_image_of_the_original():
    # One robot walks with a command to the left, a weak front-right knee, a biased rear-left hip and an
    # off-centre payload under random actions; a second starts from the mirrored situation and gets the
    # mirrored actions. Their observations and privileged vectors must be mirror images (up to the A1 URDF's
    # own small asymmetries), which checks every sign and swap against the physics.
    left = Task(dynamics=DynamicsSpec(payload_kg=2.0, com_offset_m=[0.02, 0.03, 0.0]),
                faults={"FR_lower_joint": JointFault(mode="weak", strength=0.5),
                        "RL_hip_joint": JointFault(mode="bias", offset_rad=0.1)})
    right = Task(dynamics=DynamicsSpec(payload_kg=2.0, com_offset_m=[0.02, -0.03, 0.0]),
                 faults={"FL_lower_joint": JointFault(mode="weak", strength=0.5),
                         "RR_hip_joint": JointFault(mode="bias", offset_rad=-0.1)})
    envs = [LocomotionEnv(EnvConfig(robot="a1", randomize_tasks=False), seed=0) for _ in range(2)]
    try:
        o1, i1 = envs[0].reset(options={"task": left, "command": [0.4, 0.15, 0.3], "phase": 0.1})
        o2, i2 = envs[1].reset(options={"task": right, "command": [0.4, -0.15, -0.3], "phase": 0.6})
        rng = np.random.default_rng(0)
        mirrored_err, plain_err = 0.0, 0.0
        for _ in range(5):
            a = rng.normal(0, 0.3, 15)
            o1, _, _, _, i1 = envs[0].step(a)
            o2, _, _, _, i2 = envs[1].step(Mirror.apply(a, M.action))
            mirrored_err = max(mirrored_err, np.abs(Mirror.apply(o1, M.obs) - o2).max(),
                               np.abs(Mirror.apply(i1["privileged"], M.privileged) - i2["privileged"]).max())
            plain_err = max(plain_err, np.abs(o1 - o2).max())
    finally:
        for env in envs:
            env.close()
    assert mirrored_err < 0.1 and plain_err > 1.0, (mirrored_err, plain_err)


def test_the_trot_mirrors_half_a_cycle_later():
    robot = load_robot("a1")
    rng = np.random.default_rng(1)
    joints = (M.action[0][:12], M.action[1][:12])
    for phase in rng.uniform(size=5):
        a = rng.normal(0, 0.5, 15)
        original, mirrored = ActionMap.from_robot(robot), ActionMap.from_robot(robot)
        original.reset(phase)
        mirrored.reset(phase + 0.5)
        np.testing.assert_allclose(Mirror.apply(original.targets(a, 0.02), joints),
                                   mirrored.targets(Mirror.apply(a, M.action), 0.02), atol=1e-12)
        np.testing.assert_allclose(Mirror.apply(original.phase_observation(), (np.arange(2), -np.ones(2))),
                                   mirrored.phase_observation(), atol=1e-12)


def test_the_rsl_rl_augmentation_appends_the_mirrored_batch():
    augment = rsl_rl_augmentation(12, 15)
    obs = TensorDict({"policy": torch.randn(3, 50), "privileged": torch.randn(3, len(M.privileged[0]))},
                     batch_size=[3])
    actions = torch.randn(3, 15)
    aug_obs, aug_actions = augment(obs=obs, actions=actions)
    assert aug_obs.batch_size[0] == 6 and aug_actions.shape == (6, 15)
    torch.testing.assert_close(aug_obs["policy"][:3], obs["policy"])
    torch.testing.assert_close(aug_obs["policy"][3:], Mirror.apply(obs["policy"], M.obs))
    torch.testing.assert_close(aug_actions[3:], Mirror.apply(actions, M.action))


def test_the_augmentation_reflects_a_flat_history_frame_by_frame():
    """Phase 3's actor reads `history` as (batch, H * obs_dim): each of the H frames is an observation."""
    augment = rsl_rl_augmentation(12, 15)
    frames = torch.randn(3, 4, 50)
    obs = TensorDict({"policy": frames[:, -1], "history": frames.flatten(1)}, batch_size=[3])
    aug_obs, _ = augment(obs=obs)
    assert aug_obs["history"].shape == (6, 200)
    torch.testing.assert_close(aug_obs["history"][3:].view(3, 4, 50), Mirror.apply(frames, M.obs))
    torch.testing.assert_close(aug_obs["history"][3:].view(3, 4, 50)[:, -1], aug_obs["policy"][3:])


def test_a_part_without_a_known_reflection_is_refused():
    with pytest.raises(ValueError, match="'foot_contacts'"):
        mirror_map([("command", 3), ("foot_contacts", 4)], 12)
    with pytest.raises(ValueError, match="4 legs of 3 joints"):
        mirror_map([("command", 3)], 8)


def test_a_mirrored_attitude_gives_the_mirrored_gravity():
    import pybullet

    from metaloco.sim.observation import projected_gravity

    gravity = (M.obs[0][3:6] - 3, M.obs[1][3:6])  # the projected_gravity part of the observation map
    for roll, pitch, yaw in ((0.3, 0.1, 0.5), (-0.2, -0.25, 1.0)):
        g = projected_gravity(np.array(pybullet.getQuaternionFromEuler((roll, pitch, yaw))))
        g_mirrored = projected_gravity(np.array(pybullet.getQuaternionFromEuler((-roll, pitch, -yaw))))
        np.testing.assert_allclose(Mirror.apply(g, gravity), g_mirrored, atol=1e-12)


def test_a_swapped_group_is_reflected_by_swapping_its_halves():
    """Phase 3 stores (phi(h), phi(reflected h)) side by side; the reflection of that pair is the pair swapped."""
    augment = rsl_rl_augmentation(12, 15, swapped=("pair",))
    pair = torch.randn(3, 16)
    aug_obs, _ = augment(obs=TensorDict({"policy": torch.randn(3, 50), "pair": pair}, batch_size=[3]))
    assert torch.equal(aug_obs["pair"][:3], pair)
    assert torch.equal(aug_obs["pair"][3:], torch.cat([pair[:, 8:], pair[:, :8]], dim=1))
    with pytest.raises(ValueError, match="no reflection for observation group 'pair'"):
        rsl_rl_augmentation(12, 15)(obs=TensorDict({"pair": pair}, batch_size=[3]))


def _privileged_with(fault: JointFault | None, joint: str = "FR_lower_joint") -> torch.Tensor:
    names = load_robot("a1").joint_names
    task = Task(faults={joint: fault} if fault else {})
    tail = sum(size for name, size in privileged_layout(12) if name in ("push_force_n", "base_lin_vel"))
    return torch.as_tensor(np.concatenate([task_vector(task, names), np.zeros(tail)]), dtype=torch.float32)


def test_a_sample_whose_reflection_has_a_held_out_fault_is_not_reflected():
    # FL_lower_joint held out: a fault on FR_lower_joint reflects onto it, so that sample must stay as it is in
    # the augmented half (every group and the action); a fault elsewhere, or none, is reflected as before.
    names = load_robot("a1").joint_names
    held_out = (names.index("FL_lower_joint"),)
    augment = rsl_rl_augmentation(12, 15, swapped=("pair",), held_out_joints=held_out)
    privileged = torch.stack([_privileged_with(JointFault(mode="weak", strength=0.5)),
                              _privileged_with(JointFault(mode="locked")),
                              _privileged_with(JointFault(mode="bias", offset_rad=0.1)),
                              _privileged_with(None),
                              _privileged_with(JointFault(mode="limp"), joint="RR_lower_joint")])
    obs = TensorDict({"policy": torch.randn(5, 50), "privileged": privileged, "history": torch.randn(5, 100),
                      "pair": torch.randn(5, 16)}, batch_size=[5])
    actions = torch.randn(5, 15)
    aug_obs, aug_actions = augment(obs=obs, actions=actions)
    assert aug_obs.batch_size[0] == 10 and aug_actions.shape == (10, 15)
    for key in ("policy", "privileged", "history", "pair"):
        torch.testing.assert_close(aug_obs[key][5:8], obs[key][:3])  # FR knee faults: kept
    torch.testing.assert_close(aug_actions[5:8], actions[:3])
    torch.testing.assert_close(aug_obs["policy"][8:], Mirror.apply(obs["policy"][3:], M.obs))
    torch.testing.assert_close(aug_obs["privileged"][8:], Mirror.apply(privileged[3:], M.privileged))
    torch.testing.assert_close(aug_actions[8:], Mirror.apply(actions[3:], M.action))
    torch.testing.assert_close(aug_obs["pair"][8:], torch.cat([obs["pair"][3:, 8:], obs["pair"][3:, :8]], dim=1))
    # No sample of the augmented batch has a fault on the held-out joint.
    twin = (names.index("FR_lower_joint"),)  # FR's twin is FL: a fault on FL itself
    assert not mirrors_onto(aug_obs["privileged"], twin, 12).any()


def test_mirroring_with_held_out_joints_refuses_a_batch_that_cannot_be_screened():
    augment = rsl_rl_augmentation(12, 15, held_out_joints=(5,))
    with pytest.raises(ValueError, match="'privileged' group"):
        augment(obs=TensorDict({"policy": torch.randn(3, 50)}, batch_size=[3]))
    _, actions = augment(actions=torch.ones(3, 15))  # the mirror-loss report: actions alone, all reflected
    torch.testing.assert_close(actions[3:], Mirror.apply(torch.ones(3, 15), M.action))
