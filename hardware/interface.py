"""The robot interface: what every driver (sim, Dynamixel, serial bridge) provides.

The bridge node talks to a `RobotInterface` and cannot tell a simulated robot
from a real one. Arrays are in the robot config's joint order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class RobotState:
    """One reading of the robot's sensors."""

    stamp_s: float
    """Time of the reading (s), on the driver's clock."""
    joint_pos: np.ndarray
    """Joint positions (rad) as the encoders report them (an encoder bias shows here)."""
    joint_vel: np.ndarray
    """Joint velocities (rad/s)."""
    joint_torque: np.ndarray
    """Joint torques (Nm), measured or estimated from current."""
    imu_quat: np.ndarray
    """Base orientation quaternion (x, y, z, w) in the world frame."""
    imu_ang_vel: np.ndarray
    """Base angular velocity (rad/s) in the base frame."""
    imu_lin_acc: np.ndarray
    """Base linear acceleration incl. gravity reaction (m/s^2) in the base frame."""
    fault_bits: int = 0
    """Driver-reported faults (bit i set: joint i reports a fault)."""


@dataclass
class JointCommand:
    """Per-joint PD targets. The device (or the simulator) closes the loop at its own rate:
    tau = kp * (position - q) + kd * (velocity - qd) + torque_ff."""

    position: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    velocity: np.ndarray | None = None
    torque_ff: np.ndarray | None = None

    @staticmethod
    def damping(n: int, kd: float) -> JointCommand:
        """A command that only damps joint motion (the bridge's safe state)."""
        return JointCommand(position=np.zeros(n), kp=np.zeros(n), kd=np.full(n, kd))


@dataclass
class DriverStats:
    """Counters a driver keeps about its link."""

    cycles: int = 0
    crc_errors: int = 0
    timeouts: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    extra: dict = field(default_factory=dict)


class RobotInterface(Protocol):
    """What the bridge needs from a robot, simulated or real."""

    joint_names: list[str]

    def read_state(self) -> RobotState:
        """Read all sensors once. Raises `DriverError` if the link is down."""
        ...

    def write_command(self, command: JointCommand) -> None:
        """Send PD targets for all joints in one transaction. Raises `DriverError` if the link is down."""
        ...

    def set_torque_enabled(self, enabled: bool) -> None:
        """Switch motor torque on or off (off: joints are free)."""
        ...

    def close(self) -> None:
        """Release the device; motors end unpowered."""
        ...


class DriverError(RuntimeError):
    """The link to the robot failed (port gone, no reply, repeated bad frames)."""
