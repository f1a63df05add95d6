"""Left-right mirroring of observations, actions and privileged vectors (data augmentation).

A quadruped is symmetric about its sagittal (x-z) plane. Reflecting a state through it
(y -> -y) gives another valid state, whose best action is the reflected action. Feeding
PPO both doubles the experience per fault kind: a locked front-right knee also teaches the
locked front-left one (Mittal et al. 2024, "Symmetry considerations for learning task
symmetric robot policies"; rsl_rl's `symmetry_cfg` applies it).

Under the reflection, with legs in the order FR, FL, RR, RL of (hip, thigh, knee):
- legs swap sides (FR <-> FL, RR <-> RL); hip ab/adduction angles change sign, thigh and knee
  pitch angles do not (their axes lie along y);
- angular velocity (a pseudo-vector) becomes (-wx, wy, -wz); gravity, linear velocity, forces and
  offsets have their y negated; the command becomes (vx, -vy, -yaw_rate);
- the trot's global phase moves by half a cycle (FR's partner in the swap is FL, half a cycle
  apart), so its (sin, cos) is negated; the generator's outputs (frequency, amplitude, stride)
  are unchanged.
The maps are built from the layouts by name, so a layout change cannot silently misalign them.

Held-out joints: the reflection of a fault on FR_lower_joint is a fault on FL_lower_joint. When a joint's
faults are held out of training (the test split), a sample whose task has a fault on the held-out joint's
mirror twin is therefore not mirrored: its reflection would train on the held-out fault. Such a sample
stays as it is in the augmented half (`rsl_rl_augmentation(held_out_joints=...)`).
"""

from __future__ import annotations

import numpy as np

from metaloco.sim.observation import obs_layout
from metaloco.sim.tasks import layout_slice, privileged_layout

SCREENED_SINCE = "111d35c"
"""The commit from which symmetry augmentation leaves the held-out faults' mirror images out."""
MIRROR_SCREENS_HELD_OUT = "mirror_screens_held_out"
"""Key a run's commit.json and manifest.json carry when its training screened the held-out joints' mirror
twins (every run since `SCREENED_SINCE`); without it a symmetric run trained on the held-out faults' mirror images."""

LEG_SWAP = (1, 0, 3, 2)
"""Mirrored leg of each leg, in the order FR, FL, RR, RL."""


def _joint_map(n_joints: int) -> tuple[np.ndarray, np.ndarray]:
    if n_joints != 12:
        raise ValueError(f"mirroring needs 4 legs of 3 joints (hip, thigh, knee), got {n_joints} joints")
    index = np.array([3 * LEG_SWAP[j // 3] + j % 3 for j in range(n_joints)])
    sign = np.array([-1.0 if j % 3 == 0 else 1.0 for j in range(n_joints)])
    return index, sign


_VECTOR_SIGNS = {
    "base_ang_vel": (-1.0, 1.0, -1.0),
    "projected_gravity": (1.0, -1.0, 1.0),
    "command": (1.0, -1.0, -1.0),
    "gait_phase": (-1.0, -1.0),
    "com_offset_m": (1.0, -1.0, 1.0),
    "push_force_n": (1.0, -1.0, 1.0),
    "base_lin_vel": (1.0, -1.0, 1.0),
}
_PER_JOINT_SIGNED = {"joint_pos_rel", "joint_vel", "joint_bias_rad"}  # hip entries change sign
_PER_JOINT = {"joint_strength", "joint_locked"}  # swapped only
_SCALARS = {"friction", "payload_kg", "motor_strength", "latency_s", "slope_rad", "roughness_m", "step_height_m"}


def mirror_map(layout: list[tuple[str, int]], n_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, sign) such that mirrored = x[..., index] * sign, for a vector laid out as `layout`.

    Raises:
        ValueError: A part of the layout has no known reflection.
    """
    joint_index, joint_sign = _joint_map(n_joints)
    index, sign, start = [], [], 0
    for name, size in layout:
        if name in _VECTOR_SIGNS and len(_VECTOR_SIGNS[name]) == size:
            index += range(start, start + size)
            sign += _VECTOR_SIGNS[name]
        elif name in _PER_JOINT_SIGNED | _PER_JOINT and size == n_joints:
            index += list(start + joint_index)
            sign += list(joint_sign) if name in _PER_JOINT_SIGNED else [1.0] * size
        elif name == "last_action" and size >= n_joints:
            index += list(start + joint_index) + list(range(start + n_joints, start + size))
            sign += list(joint_sign) + [1.0] * (size - n_joints)
        elif name in _SCALARS and size == 1:
            index.append(start)
            sign.append(1.0)
        else:
            raise ValueError(f"no left-right reflection is known for the part '{name}' of size {size}")
        start += size
    return np.array(index), np.array(sign)


class Mirror:
    """The reflections of one robot's observation, action and privileged vectors (numpy or torch, batched)."""

    def __init__(self, n_joints: int, n_actions: int):
        self.obs = mirror_map(obs_layout(n_joints, n_actions), n_joints)
        self.action = mirror_map([("last_action", n_actions)], n_joints)
        self.privileged = mirror_map(privileged_layout(n_joints), n_joints)

    @staticmethod
    def apply(x, index_sign):
        """Reflect the last axis of `x` (a numpy array or torch tensor)."""
        index, sign = index_sign
        if isinstance(x, np.ndarray):
            return x[..., index] * sign
        import torch

        return x[..., torch.as_tensor(index, device=x.device)] * torch.as_tensor(sign, dtype=x.dtype, device=x.device)


def mirrors_onto(privileged, joints: tuple[int, ...], n_joints: int):
    """Per sample (rows of batched privileged vectors, numpy or torch): does its task have a fault on the
    mirror twin of one of `joints` (joint indices), that is, does its reflection have a fault on one of them?"""
    twins = [int(_joint_map(n_joints)[0][j]) for j in joints]
    strength, locked, bias = (privileged[..., layout_slice(part, n_joints)][..., twins]
                              for part in ("joint_strength", "joint_locked", "joint_bias_rad"))
    return ((strength != 1.0) | (locked != 0.0) | (bias != 0.0)).any(-1)


def rsl_rl_augmentation(n_joints: int, n_actions: int, swapped: tuple[str, ...] = (),
                        held_out_joints: tuple[int, ...] = ()):
    """The `data_augmentation_func` for rsl_rl's symmetry extension: originals first, then their reflections.

    Observation groups `policy` and `privileged` are reflected (and `history`, frame by frame). A group named
    in `swapped` holds a pair (f(x), f(reflected x)) side by side; its reflection is the pair swapped.
    `held_out_joints` (joint indices): a sample whose reflection would have a fault on one of them is kept
    unreflected in the second half, so the augmentation never shows the held-out faults; the batch must then
    carry the `privileged` group, which says where the task's fault is. Actions passed without observations
    cannot be screened and are all reflected: that call is rsl_rl's mirror loss, which training only reports
    (`use_mirror_loss: False`), and must not train on with held-out joints.
    """
    import torch

    m = Mirror(n_joints, n_actions)
    by_group = {"policy": m.obs, "privileged": m.privileged, "history": m.obs}
    held_out = tuple(int(j) for j in held_out_joints)

    def augment(env=None, obs=None, actions=None):
        out_obs = out_actions = None
        keep = None  # samples left unreflected: their reflection has a held-out fault
        if held_out and obs is not None:  # actions alone (rsl_rl's mirror-loss report) are all reflected
            if "privileged" not in obs.keys():
                raise ValueError("mirroring with held-out joints needs the batch's 'privileged' group, to leave "
                                 "unreflected the samples whose reflection has a held-out joint's fault")
            keep = mirrors_onto(obs["privileged"], held_out, n_joints)
        if obs is not None:
            mirrored = obs.clone()
            for key in list(obs.keys()):
                x = obs[key]
                if key in swapped:
                    mirrored[key] = torch.cat(x.chunk(2, dim=-1)[::-1], dim=-1)
                elif key not in by_group:
                    raise ValueError(f"no reflection for observation group '{key}'")
                else:
                    if key == "history":  # (batch, H * obs_dim), oldest frame first: reflect each frame
                        x = x.view(*x.shape[:-1], -1, len(m.obs[0]))
                    mirrored[key] = Mirror.apply(x, by_group[key]).reshape(obs[key].shape)
                if keep is not None:
                    mirrored[key] = torch.where(keep.view(-1, *[1] * (obs[key].dim() - 1)), obs[key], mirrored[key])
            out_obs = torch.cat([obs, mirrored], dim=0)
        if actions is not None:
            reflected = Mirror.apply(actions, m.action)
            if keep is not None:
                reflected = torch.where(keep.view(-1, *[1] * (actions.dim() - 1)), actions, reflected)
            out_actions = torch.cat([actions, reflected], dim=0)
        return out_obs, out_actions

    return augment
