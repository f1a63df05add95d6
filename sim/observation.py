"""The policy's observation: what a real robot measures, in SI units, unscaled.

Built the same way in the training env and in the policy node (from a `RobotState`
and the command), so the robot sees exactly what training saw. Scales and the
normaliser live inside the exported network, not here.
"""

from __future__ import annotations

import numpy as np

from metaloco.hardware.interface import RobotState


def obs_layout(n_joints: int, n_actions: int) -> list[tuple[str, int]]:
    """Names and sizes of the observation's parts, in input order (the ONNX `obs_layout`)."""
    return [
        ("base_ang_vel", 3),
        ("projected_gravity", 3),
        ("command", 3),
        ("joint_pos_rel", n_joints),
        ("joint_vel", n_joints),
        ("last_action", n_actions),
        ("gait_phase", 2),
    ]


def rotation_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix (base to world) of a quaternion (x, y, z, w)."""
    x, y, z, w = quat
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quat_rotate_inverse(quat: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Rotate a world-frame vector into the frame of quaternion (x, y, z, w)."""
    return rotation_matrix(quat).T @ np.asarray(vec, dtype=np.float64)


def projected_gravity(quat: np.ndarray) -> np.ndarray:
    """The unit gravity direction in the base frame ((0, 0, -1) when level)."""
    x, y, z, w = quat
    return -np.array([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)])


def build_observation(state: RobotState, command: np.ndarray, last_action: np.ndarray,
                      gait_phase: np.ndarray, default_pos: np.ndarray) -> np.ndarray:
    """Assemble the observation vector.

    Args:
        state: Sensor reading (joint order of the robot config).
        command: (vx, vy, yaw_rate) in m/s and rad/s.
        last_action: The previous raw policy output.
        gait_phase: (sin, cos) of the gait phase.
        default_pos: Default joint pose.

    Returns:
        float32 observation, laid out as `obs_layout`.
    """
    return np.concatenate([
        state.imu_ang_vel,
        projected_gravity(state.imu_quat),
        np.asarray(command, dtype=np.float64),
        state.joint_pos - default_pos,
        state.joint_vel,
        np.asarray(last_action, dtype=np.float64),
        gait_phase,
    ]).astype(np.float32)
