"""The robot bridge's safety state machine (DESIGN.md, "Safety"): pure logic, no ROS, no I/O.

    passive --arm_stand--> stand --activate--> active
       ^                     |                   |
       +------rearm------ damping <--------------+   (and from any state: estop, fault)

- passive: torque off. stand: PD to the default pose (the bridge ramps there). active: the policy's commands.
- damping: joints only damped. Entered at once on a stale command (older than `stale_periods` control
  periods), estop, roll or pitch beyond the robot's `max_tilt_rad`, a NaN anywhere, a joint fault, or a lost
  link. Left only by an explicit `rearm()`, which goes to passive: torque comes back through stand.
- Every command is clamped: positions to the joint limits and to what the torque limit allows from where the
  joint is (|kp (target - q)| <= tau_max), gains to the robot YAML's, feed-forward to the torque limits.
"""

from __future__ import annotations

import enum

import numpy as np

from metaloco.hardware.interface import JointCommand, RobotState
from metaloco.hardware.robot_config import RobotConfig


class Mode(str, enum.Enum):
    PASSIVE = "passive"
    STAND = "stand"
    ACTIVE = "active"
    DAMPING = "damping"


class SafetyError(RuntimeError):
    """A transition the machine refuses (the message says why and what to do instead)."""


class SafetyMachine:
    """The four states and their guards.

    Args:
        cfg: The robot (limits, gains, control period, max tilt).
        stale_periods: A command older than this many control periods is stale.
    """

    def __init__(self, cfg: RobotConfig, stale_periods: float = 3.0):
        self.cfg = cfg
        self.mode = Mode.PASSIVE
        self.reason = "start"
        """Why the machine is in its mode (the last transition's cause)."""
        self.max_command_age_s = stale_periods * cfg.control_dt
        self.lower = np.asarray(cfg.joint_lower, dtype=np.float64)
        self.upper = np.asarray(cfg.joint_upper, dtype=np.float64)
        self.torque_limits = np.asarray(cfg.torque_limits, dtype=np.float64)
        self.velocity_limits = np.asarray(cfg.velocity_limits, dtype=np.float64)
        self.kp_max = np.asarray(cfg.kp, dtype=np.float64)
        self.kd_max = np.maximum(np.asarray(cfg.kd, dtype=np.float64), cfg.damping_kd)

    # ------------------------------------------------------------ requests
    def arm_stand(self) -> None:
        """passive -> stand."""
        if self.mode != Mode.PASSIVE:
            hint = "; re-arm first (rearm)" if self.mode == Mode.DAMPING else ""
            raise SafetyError(f"cannot stand from '{self.mode.value}': stand is entered from passive{hint}")
        self._go(Mode.STAND, "armed: standing up")

    def activate(self, command: JointCommand | None, stamp: float | None, now: float) -> None:
        """stand -> active, only with a fresh, finite policy command at hand."""
        if self.mode != Mode.STAND:
            raise SafetyError(f"cannot activate from '{self.mode.value}': the policy takes over from stand")
        problem = self.check_command(command, stamp, now)
        if problem:
            raise SafetyError(f"cannot activate: {problem}")
        self._go(Mode.ACTIVE, "policy in control")

    def rearm(self) -> None:
        """damping -> passive: the explicit re-arm after a fault."""
        if self.mode != Mode.DAMPING:
            raise SafetyError(f"nothing to re-arm in '{self.mode.value}': rearm leaves damping")
        self._go(Mode.PASSIVE, "re-armed")

    def fault(self, reason: str) -> None:
        """Anything -> damping, at once (estop, lost link, a failed check)."""
        if self.mode != Mode.DAMPING:
            self._go(Mode.DAMPING, reason)

    # -------------------------------------------------------------- checks
    def check_state(self, state: RobotState) -> str | None:
        """What is wrong with a reading, or None: NaN, a joint fault, or (with torque on) a fall."""
        for name in ("joint_pos", "joint_vel", "joint_torque", "imu_quat", "imu_ang_vel", "imu_lin_acc"):
            if not np.all(np.isfinite(getattr(state, name))):
                return f"NaN in state.{name}"
        if state.fault_bits:
            joints = [j for i, j in enumerate(self.cfg.joint_names) if state.fault_bits >> i & 1]
            return f"joint fault reported: {joints}"
        if self.mode in (Mode.STAND, Mode.ACTIVE):
            roll, pitch = roll_pitch(state.imu_quat)
            if max(abs(roll), abs(pitch)) > self.cfg.max_tilt_rad:
                return f"attitude beyond limits: roll {roll:+.2f}, pitch {pitch:+.2f} rad (max {self.cfg.max_tilt_rad})"
        return None

    def check_command(self, command: JointCommand | None, stamp: float | None, now: float) -> str | None:
        """What is wrong with the policy's command at `now`, or None: missing, stale or not finite."""
        if command is None or stamp is None:
            return "no policy command received"
        age = now - stamp
        if age > self.max_command_age_s + 1e-9:  # exactly 3 periods old is still fresh, whatever the float rounding
            return f"stale command: {age * 1000:.0f} ms old (limit {self.max_command_age_s * 1000:.0f} ms)"
        for name in ("position", "kp", "kd", "velocity", "torque_ff"):
            value = getattr(command, name)
            if value is not None and not np.all(np.isfinite(value)):
                return f"NaN in command.{name}"
        return None

    def clamp(self, command: JointCommand, state: RobotState) -> JointCommand:
        """The command made safe to send: see the module docstring."""
        kp = np.clip(command.kp, 0.0, self.kp_max)
        kd = np.clip(command.kd, 0.0, self.kd_max)
        pos = np.clip(command.position, self.lower, self.upper)
        with np.errstate(divide="ignore"):
            reach = np.where(kp > 0, self.torque_limits / kp, np.inf)
        pos = np.clip(pos, state.joint_pos - reach, state.joint_pos + reach)
        vel, ff, vmax, tmax = command.velocity, command.torque_ff, self.velocity_limits, self.torque_limits
        vel = None if vel is None else np.clip(vel, -vmax, vmax)
        ff = None if ff is None else np.clip(ff, -tmax, tmax)
        return JointCommand(position=pos, kp=kp, kd=kd, velocity=vel, torque_ff=ff)

    def note(self, reason: str) -> None:
        """Replace the reason without changing the mode (e.g. the link state while damping)."""
        self.reason = reason

    def _go(self, mode: Mode, reason: str) -> None:
        self.mode, self.reason = mode, reason


def roll_pitch(quat: np.ndarray) -> tuple[float, float]:
    """Roll and pitch (rad) of an (x, y, z, w) quaternion."""
    x, y, z, w = quat
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    return float(roll), float(pitch)
