"""Velocity-tracking reward in the style of legged_gym (Rudin et al. 2022).

Each term is a function of the step's state, weighted by its scale and multiplied by
the control period, so returns do not depend on the control rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metaloco.schema import spec


@dataclass
class RewardConfig:
    """Weights of the reward terms (0 turns a term off)."""

    tracking_lin_vel: float = spec(1.5, doc="exp(-|v_cmd_xy - v_xy|^2 / sigma)")
    tracking_ang_vel: float = spec(0.5, doc="exp(-(yaw_cmd - w_z)^2 / sigma)")
    tracking_sigma: float = spec(0.25, doc="Width of the tracking kernels.", range=(1e-3, 10.0))
    lin_vel_z: float = spec(-2.0, doc="Vertical base velocity squared.")
    ang_vel_xy: float = spec(-0.05, doc="Roll and pitch rate squared.")
    orientation: float = spec(-1.0, doc="Tilt: projected gravity xy squared.")
    torques: float = spec(-2e-4, doc="Joint torques squared.")
    dof_acc: float = spec(-2.5e-7, doc="Joint accelerations squared.")
    action_rate: float = spec(-0.01, doc="Change of action squared.")
    termination: float = spec(-5.0, doc="Once, when the robot falls (not at a time limit).")
    only_positive: bool = spec(True, doc="Clip the step's total at zero (legged_gym's default).")


def compute_reward(cfg: RewardConfig, dt: float, command: np.ndarray, lin_vel_base: np.ndarray,
                   ang_vel_base: np.ndarray, gravity_base: np.ndarray, torques: np.ndarray,
                   joint_acc: np.ndarray, action: np.ndarray, last_action: np.ndarray,
                   fell: bool) -> tuple[float, dict[str, float]]:
    """One step's reward.

    Args:
        cfg: Term weights.
        dt: Control period (s).
        command: (vx, vy, yaw_rate).
        lin_vel_base: Base linear velocity in the base frame.
        ang_vel_base: Base angular velocity in the base frame.
        gravity_base: Projected gravity.
        torques: Applied joint torques.
        joint_acc: Joint accelerations.
        action: This step's action.
        last_action: The previous action.
        fell: Whether the episode ended in a fall this step.

    Returns:
        The total and each weighted term.
    """
    sigma = cfg.tracking_sigma
    ex, ey = float(command[0] - lin_vel_base[0]), float(command[1] - lin_vel_base[1])
    eyaw = float(command[2] - ang_vel_base[2])
    da = action - last_action
    terms = {
        "tracking_lin_vel": cfg.tracking_lin_vel * math.exp(-(ex * ex + ey * ey) / sigma),
        "tracking_ang_vel": cfg.tracking_ang_vel * math.exp(-eyaw * eyaw / sigma),
        "lin_vel_z": cfg.lin_vel_z * float(lin_vel_base[2]) ** 2,
        "ang_vel_xy": cfg.ang_vel_xy * float(ang_vel_base[0] ** 2 + ang_vel_base[1] ** 2),
        "orientation": cfg.orientation * float(gravity_base[0] ** 2 + gravity_base[1] ** 2),
        "torques": cfg.torques * float(torques @ torques),
        "dof_acc": cfg.dof_acc * float(joint_acc @ joint_acc),
        "action_rate": cfg.action_rate * float(da @ da),
    }
    terms = {k: v * dt for k, v in terms.items()}
    total = sum(terms.values())
    if cfg.only_positive:
        total = max(total, 0.0)
    if fell:
        terms["termination"] = cfg.termination
        total += cfg.termination
    return total, terms
