"""What the `robot_bridge` node does each control period, without ROS: read, check, command.

`BridgeCore` owns a driver (any `RobotInterface`: sim, dynamixel, serial_bridge) and the `SafetyMachine`.
One `tick(now)` reads the robot, runs the checks, and writes exactly one of: nothing with torque off
(passive), a ramp from where the joints are to the default pose (stand), the policy's clamped command
(active), or pure damping (damping).

On a `DriverError` the bridge goes to damping and the link counts as down; later ticks try the driver's
`reconnect()` every `reconnect_period_s`. Once back, it damps (never resumes the old targets: no jump), and
torque comes back only through `rearm()` -> passive -> `arm_stand()` -> stand -> `activate()`.

Time is the caller's: `now` and command stamps must come from the same clock (ROS time, or sim time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metaloco.hardware.interface import DriverError, JointCommand, RobotInterface, RobotState
from metaloco.hardware.robot_config import RobotConfig
from metaloco.hardware.safety import Mode, SafetyError, SafetyMachine


class TickResult(NamedTuple):
    """What one tick saw and did."""

    state: RobotState | None
    """The reading (None while the link is down)."""
    mode: str
    """passive, stand, active or damping, after this tick."""
    reason: str
    """Why the bridge is in that mode."""


class BridgeCore:
    """The bridge's logic: one driver, one safety machine, one tick per control period.

    Args:
        cfg: The robot.
        driver: The robot interface, connected.
        stand_ramp_s: Time to move from the pose at arming to the default pose.
        reconnect_period_s: Time between reconnect attempts while the link is down.
        stale_periods: A policy command older than this many control periods puts the robot in damping.
    """

    def __init__(self, cfg: RobotConfig, driver: RobotInterface, *, stand_ramp_s: float = 1.0,
                 reconnect_period_s: float = 0.2, stale_periods: float = 3.0):
        self.cfg = cfg
        self.driver = driver
        self.safety = SafetyMachine(cfg, stale_periods)
        self.stand_ramp_s = stand_ramp_s
        self.reconnect_period_s = reconnect_period_s
        self.link_up = True
        self.last_state: RobotState | None = None
        self._command: JointCommand | None = None
        self._stamp: float | None = None
        self._torque: bool | None = None  # what the driver was last told; None: unknown (after a reconnect)
        self._stand_t0: float | None = None
        self._stand_from: np.ndarray | None = None
        self._last_attempt = -np.inf
        n = cfg.n_joints
        self._default = np.asarray(cfg.default_joint_pos, dtype=np.float64)
        self._kp = np.asarray(cfg.kp, dtype=np.float64)
        self._kd = np.asarray(cfg.kd, dtype=np.float64)
        self._damping = JointCommand.damping(n, cfg.damping_kd)

    @property
    def mode(self) -> str:
        return self.safety.mode.value

    @property
    def reason(self) -> str:
        return self.safety.reason

    # ------------------------------------------------------------ requests
    def arm_stand(self) -> None:
        """passive -> stand: ramp to the default pose from wherever the joints are."""
        if not self.link_up:
            raise SafetyError("cannot stand: the link to the robot is down")
        self.safety.arm_stand()
        self._stand_t0 = None

    def activate(self, now: float) -> None:
        """stand -> active: the policy takes over (needs a fresh command)."""
        self.safety.activate(self._command, self._stamp, now)

    def estop(self, reason: str = "estop") -> None:
        """Damping at once, from any mode."""
        self.safety.fault(reason)

    def rearm(self) -> None:
        """damping -> passive (torque off), once the link is up."""
        if not self.link_up:
            raise SafetyError("cannot re-arm: the link to the robot is down (waiting for reconnect)")
        self.safety.rearm()

    def set_command(self, command: JointCommand, stamp: float) -> None:
        """The policy's latest command and its time stamp (same clock as `tick`'s `now`)."""
        self._command, self._stamp = command, stamp

    # ---------------------------------------------------------------- tick
    def tick(self, now: float) -> TickResult:
        """One control period: read, check, write one command."""
        if not self.link_up and not self._reconnect(now):
            return TickResult(None, self.mode, self.reason)
        try:
            state = self.driver.read_state()
        except DriverError as err:
            return self._link_lost(err)
        self.last_state = state
        problem = self.safety.check_state(state)
        if problem:
            self.safety.fault(problem)
        if self.safety.mode == Mode.ACTIVE:
            problem = self.safety.check_command(self._command, self._stamp, now)
            if problem:
                self.safety.fault(problem)
        try:
            self._act(state, now)
        except DriverError as err:
            return self._link_lost(err)
        return TickResult(state, self.mode, self.reason)

    def close(self) -> None:
        """Release the driver (motors end unpowered)."""
        self.driver.close()

    # -------------------------------------------------------------- private
    def _act(self, state: RobotState, now: float) -> None:
        mode = self.safety.mode
        if mode != Mode.STAND:
            self._stand_t0 = None
        if mode == Mode.PASSIVE:
            if self._torque is not False:
                self.driver.set_torque_enabled(False)
                self._torque = False
            return
        if mode == Mode.DAMPING:
            command = self._damping
        elif mode == Mode.STAND:
            command = self.safety.clamp(self._stand_command(state, now), state)
        else:
            command = self.safety.clamp(self._command, state)
        if self._torque is not True:
            self.driver.set_torque_enabled(True)  # drivers enable holding where the joints are: no jump
            self._torque = True
        self.driver.write_command(command)

    def _stand_command(self, state: RobotState, now: float) -> JointCommand:
        if self._stand_t0 is None:
            self._stand_t0, self._stand_from = now, state.joint_pos.copy()
        a = float(np.clip((now - self._stand_t0) / self.stand_ramp_s, 0.0, 1.0)) if self.stand_ramp_s > 0 else 1.0
        a = a * a * (3.0 - 2.0 * a)
        position = self._stand_from + a * (self._default - self._stand_from)
        return JointCommand(position=position, kp=self._kp, kd=self._kd)

    def _link_lost(self, err: DriverError) -> TickResult:
        self.safety.fault(f"link lost: {err}")
        self.safety.note(f"link lost: {err}")  # also when already damping: the link is the news
        self.link_up = False
        self._torque = None
        return TickResult(None, self.mode, self.reason)

    def _reconnect(self, now: float) -> bool:
        reconnect = getattr(self.driver, "reconnect", None)
        if reconnect is None or now - self._last_attempt < self.reconnect_period_s:
            return False
        self._last_attempt = now
        try:
            reconnect()
        except DriverError as err:
            self.safety.note(f"link down, reconnecting: {err}")
            return False
        self.link_up = True
        self.safety.note("link back: damping until re-armed")
        return True
