"""`robot_bridge`: the robot (simulated or real) behind `joint_states`, `imu/data` and `joint_commands`.

The `driver` parameter picks the robot interface: `sim` (pybullet, `sim/robot.py`), `dynamixel` or
`serial_bridge` (`hardware/`). The safety logic is `hardware/bridge_core.py`'s `BridgeCore`: this
node only feeds it time, commands, estops and requests, and publishes what it reads.

Every control period the bridge ticks: (sim: physics advances one period, PD at the physics rate),
the driver is read, the safety checks run, one command is written, and the state goes out stamped
with ROS time. A policy command is written as soon as it arrives too, so it acts on the period
right after the state it answers; its stamp (the state's stamp, copied by the policy) is what the
stale check measures.

Arming is explicit, through std_srvs/Trigger services `~/stand` (passive -> stand), `~/activate`
(stand -> active) and `~/rearm` (damping -> passive); `estop` (std_msgs/Bool true) damps at once.
With `auto_activate` (sim) the bridge stands at start and activates once fresh policy commands
flow after the stand ramp; it never re-arms by itself.

`sim/events` (std_msgs/String, a scenario event as JSON, see `sim/scenario.py`) hurts a simulated
robot on purpose: faults, terrain, dynamics, pushes.

With `lockstep` (sim) the simulator advances only once the policy has answered the last state (or
after `lockstep_timeout_s` of waiting), and the safety machine runs on sim time: a machine too busy
to keep 50 Hz slows the simulated world down instead of aging the commands. Tests use it; the
real-time mode is what a robot does.

The sim driver also publishes what only a simulator knows. `/clock` (rosgraph_msgs/Clock, the
simulated time, every tick before the state) lets nodes run on sim time (`use_sim_time`): the trial
runner schedules a scenario on it and the trial's recorder stamps the bag with it, so a lock-step
trial on a slow machine is still measured in simulated seconds. A `robot_bridge/truth` status on
`diagnostics`, every tick, carries the ground truth a trial report needs (`base_vx`: forward velocity
in the base frame, m/s; `fallen`: tilt or base height beyond the robot YAML's limits; `mass_kg`:
URDF mass plus payload; `sim_time_s`). A hardware driver has no ground truth and publishes neither.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from metaloco.hardware.bridge_core import BridgeCore
from metaloco.hardware.interface import JointCommand, RobotInterface
from metaloco.hardware.robot_config import RobotConfig, load_robot
from metaloco.hardware.safety import SafetyError
from metaloco.ros_pkgs.messages import (
    ERROR,
    OK,
    WARN,
    JointOrder,
    MessageError,
    diagnostic_array,
    stamp_nanoseconds,
    state_to_msgs,
    status,
)
from metaloco.ros_pkgs.params import BridgeConfig, declare
from metaloco.ros_pkgs.qos import STATUS_QOS, qos_for
from metaloco.schema import ConfigError

#: Name of the sim bridge's per-tick ground-truth status on `diagnostics`.
TRUTH_STATUS = "robot_bridge/truth"


def open_driver(cfg: BridgeConfig, robot: RobotConfig) -> RobotInterface:
    """Connect the driver named by `cfg.driver`.

    Raises:
        ConfigError: The robot YAML lacks the driver's section.
        DriverError: The hardware does not answer.
    """
    if cfg.driver == "sim":
        from metaloco.sim.robot import SimRobot

        sim = SimRobot(robot, seed=cfg.sim_seed)
        sim.follow_terrain = True  # sim-in-the-loop runs as long as its user drives: the ground goes on
        sim.reset()
        return sim
    if cfg.driver == "dynamixel":
        from metaloco.hardware.dynamixel import DynamixelDriver

        return DynamixelDriver(robot, port=cfg.port or None)
    from metaloco.hardware.serial_bridge import SerialBridgeDriver

    return SerialBridgeDriver(robot, port=cfg.port or None)


class RobotBridge(Node):
    """One driver and its safety machine behind the graph's sensor and command topics.

    Parameters: see `BridgeConfig` (config/nodes.yaml).

    Raises:
        ConfigError: Bad parameters or robot description.
        DriverError: The hardware driver cannot connect.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("robot_bridge", **kwargs)
        self.cfg = declare(self, BridgeConfig)
        self.robot = load_robot(self.cfg.robot)
        self.driver = open_driver(self.cfg, self.robot)
        self.sim = self.driver if self.cfg.driver == "sim" else None
        self.lockstep = self.cfg.lockstep and self.sim is not None
        self.core = BridgeCore(self.robot, self.driver, stand_ramp_s=self.cfg.stand_ramp_s,
                               reconnect_period_s=self.cfg.reconnect_period_s, stale_periods=self.cfg.stale_periods)
        self.order = JointOrder(self.robot.joint_names)
        self.period = self.robot.control_dt
        self._kp = np.asarray(self.robot.kp, dtype=np.float64)
        self._kd = np.asarray(self.robot.kd, dtype=np.float64)
        self.ticks = 0
        self.late_ticks = 0
        """Ticks that came more than half a period late (the machine could not keep up)."""
        self.commands = 0
        self.rejected_commands = 0
        self.events_applied = 0
        self.transitions: list[tuple[float, float, str, str]] = []
        """(ROS time s, safety-clock time s, mode, reason) of every mode change."""
        self.problem = ""
        """The last thing the bridge refused (a command, an event), for diagnostics."""
        self.truth: dict[str, float] = {}
        """sim: ground truth of the base (world frame), for monitoring and tests; empty on hardware."""
        self._auto = self.cfg.auto_activate
        self._state_stamp_ns = -1
        self._command_stamp_ns = -1
        self._state_clock: dict[int, float] = {}  # lockstep: ROS stamp of a published state -> its sim time
        self._last_tick: float | None = None
        self._mode = self.core.mode

        self._joint_states = self.create_publisher(JointState, "joint_states", qos_for("joint_states"))
        self._imu = self.create_publisher(Imu, "imu/data", qos_for("imu/data"))
        self._diagnostics = self.create_publisher(DiagnosticArray, "diagnostics", qos_for("diagnostics"))
        self._clock_pub = self.create_publisher(Clock, "/clock", STATUS_QOS) if self.sim is not None else None
        self._mass_kg = urdf_mass(self.sim) if self.sim is not None else 0.0
        self.create_subscription(JointState, "joint_commands", self._on_command, qos_for("joint_commands"))
        self.create_subscription(Bool, "estop", self._on_estop, qos_for("estop"))
        self.create_subscription(String, "sim/events", self._on_event, qos_for("sim/events"))
        self.create_service(Trigger, "~/stand", self._srv(self.core.arm_stand))
        self.create_service(Trigger, "~/activate", self._srv(lambda: self.core.activate(self.safety_now())))
        self.create_service(Trigger, "~/rearm", self._srv(self.core.rearm))
        self.create_timer(self.period, self.tick)
        self.create_timer(self.cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(f"driver '{self.cfg.driver}' for robot '{self.robot.name}', {self.period * 1000:.0f} ms "
                               f"period; mode {self.core.mode}" + (", lockstep" if self.lockstep else "")
                               + (", auto_activate" if self._auto else ""))

    def safety_now(self) -> float:
        """The safety machine's clock (s): ROS time, or sim time in lockstep (a starved machine freezes the
        simulated robot instead of aging its commands)."""
        return self.sim.time_s if self.lockstep else self.get_clock().now().nanoseconds * 1e-9

    # -------------------------------------------------------------- tick
    def tick(self) -> None:
        """One control period: (sim: physics), read, check, write, publish."""
        stamp = self.get_clock().now()
        wall = stamp.nanoseconds * 1e-9
        if self._waiting_for_policy(wall):
            return
        if self._last_tick is not None and wall - self._last_tick > 1.5 * self.period:
            self.late_ticks += 1
        self._last_tick = wall
        if self.sim is not None:
            self.sim.step()
            self._clock_pub.publish(Clock(clock=_time_msg(self.sim.time_s)))  # before the state it dates
        now = self.safety_now()
        result = self.core.tick(now)
        self.ticks += 1
        if result.state is not None:
            joints, imu = state_to_msgs(result.state, self.robot.joint_names, stamp.to_msg())
            self._state_stamp_ns = stamp.nanoseconds
            if self.lockstep:
                self._state_clock = {k: v for k, v in self._state_clock.items() if v > now - 1.0}
                self._state_clock[stamp.nanoseconds] = now
            self._imu.publish(imu)  # first: joint_states triggers the policy's cycle, which should find this imu
            self._joint_states.publish(joints)
        if self._auto:
            self._auto_activate(now)
        if self.sim is not None:
            self.truth = sim_truth(self.sim, self.robot, self._mass_kg)
            self._diagnostics.publish(diagnostic_array(stamp.to_msg(), status(
                TRUTH_STATUS, OK, "sim ground truth",
                {k: self.truth[k] for k in ("base_vx", "fallen", "mass_kg")} | {"sim_time_s": self.sim.time_s})))
        self._note_mode()

    def _waiting_for_policy(self, wall: float) -> bool:
        """lockstep: hold physics until the policy answered the last state, for up to `lockstep_timeout_s`."""
        if not (self.lockstep and self.core.mode == "active"):
            return False
        answered = self._command_stamp_ns >= self._state_stamp_ns
        return not answered and wall - self._state_stamp_ns * 1e-9 <= self.cfg.lockstep_timeout_s

    def _auto_activate(self, now: float) -> None:
        mode = self.core.mode
        if mode == "passive":
            self.core.arm_stand()
        elif mode == "stand" and self.transitions and now - self.transitions[-1][1] >= self.cfg.stand_ramp_s:
            try:
                self.core.activate(now)
            except SafetyError:
                return  # no fresh policy command yet: try again next tick
            self._auto = False
        elif mode in ("active", "damping"):
            self._auto = False

    # ------------------------------------------------------------ inputs
    def _on_command(self, msg: JointState) -> None:
        try:
            idx = self.order.index(msg.name)
            if len(msg.position) != len(msg.name):
                raise MessageError(f"joint_commands.position has {len(msg.position)} values for "
                                   f"{len(msg.name)} joint names")
        except MessageError as err:
            self.rejected_commands += 1
            self.problem = f"joint_commands rejected: {err}"
            return
        # NaNs pass through on purpose: the safety machine sees them and damps at once.
        command = JointCommand(position=np.asarray(msg.position, dtype=np.float64)[idx], kp=self._kp, kd=self._kd)
        stamp_ns = stamp_nanoseconds(msg.header.stamp)
        now = self.safety_now()
        if self.lockstep:
            stamp = self._state_clock.get(stamp_ns, now)
        else:
            stamp = stamp_ns * 1e-9 if stamp_ns > 0 else now
        self.core.set_command(command, stamp)
        self._command_stamp_ns = max(self._command_stamp_ns, stamp_ns)
        self.commands += 1
        if self.core.mode == "active":
            self.core.tick(now)  # write it now: it acts on the period right after the state it answers
            self._note_mode()

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return
        self.core.estop("estop")
        self.core.tick(self.safety_now())  # the damping command goes out now, not at the next tick
        self._note_mode()

    def _on_event(self, msg: String) -> None:
        if self.sim is None:
            self.problem = f"sim/events ignored: driver is '{self.cfg.driver}'"
            self.get_logger().warning(self.problem)
            return
        from metaloco.sim.scenario import event_from_json

        try:
            data = json.loads(msg.data)
            if not isinstance(data, dict):
                raise ConfigError("sim/events", "", f"expected a JSON object, got {msg.data!r}")
            event = event_from_json(data, self.robot)
            apply_event(self.sim, event.as_dict())
        except (ValueError, ConfigError) as err:  # json.JSONDecodeError is a ValueError
            self.problem = f"sim/events rejected: {err}"
            self.get_logger().error(self.problem)
            self.publish_diagnostics()
            return
        self.events_applied += 1
        self.get_logger().info(f"sim event applied: {msg.data}")

    def _srv(self, request: Any) -> Any:
        def handle(_req: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            try:
                request()
            except SafetyError as err:
                response.success, response.message = False, str(err)
                return response
            self._note_mode()
            response.success, response.message = True, f"mode {self.core.mode}: {self.core.reason}"
            return response

        return handle

    # ------------------------------------------------------- diagnostics
    def _note_mode(self) -> None:
        if self.core.mode == self._mode:
            return
        self._mode = self.core.mode
        self.transitions.append((self.get_clock().now().nanoseconds * 1e-9, self.safety_now(), self.core.mode,
                                 self.core.reason))
        if self.core.mode == "damping":
            self.get_logger().error(f"mode damping: {self.core.reason}")
        else:
            self.get_logger().info(f"mode {self.core.mode}: {self.core.reason}")
        self.publish_diagnostics()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.core.mode, "reason": self.core.reason, "driver": self.cfg.driver,
            "mode_since": self.transitions[-1][0] if self.transitions else None, "lockstep": self.lockstep,
            "link_up": self.core.link_up,
            "ticks": self.ticks, "late_ticks": self.late_ticks, "commands": self.commands,
            "rejected_commands": self.rejected_commands, "events_applied": self.events_applied,
            "last_problem": self.problem,
        }
        if self.sim is not None:
            out["sim_time_s"] = self.sim.time_s
            out.update({f"sim_{k}": v for k, v in self.truth.items()})
        return out

    def publish_diagnostics(self) -> None:
        """Mode and reason on `diagnostics`: ERROR in damping, WARN in passive, OK standing or active."""
        mode = self.core.mode
        level = ERROR if mode == "damping" else WARN if mode == "passive" else OK
        self._diagnostics.publish(diagnostic_array(
            self.get_clock().now().to_msg(),
            status(self.get_name(), level, f"{mode}: {self.core.reason}", self.summary())))

    def destroy_node(self) -> None:
        try:
            self.core.close()
        finally:
            super().destroy_node()


def _time_msg(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def urdf_mass(sim: Any) -> float:
    """Total mass of a `SimRobot`'s bodies as loaded (kg): its URDF's mass, before any payload."""
    import pybullet

    links = range(-1, pybullet.getNumJoints(sim.body, physicsClientId=sim.client))
    total = sum(pybullet.getDynamicsInfo(sim.body, i, physicsClientId=sim.client)[0] for i in links)
    return total - sim.task.dynamics.payload_kg


def sim_truth(sim: Any, robot: RobotConfig, urdf_mass_kg: float) -> dict[str, Any]:
    """Ground truth of a `SimRobot` now, for trial metrics (what no hardware driver can measure).

    A fall is judged as `LocomotionEnv` judges it: roll/pitch tilt beyond `max_tilt_rad`, or the base
    below `min_base_height_m` above the ground under it.

    Returns:
        base_x_m, base_y_m, base_z_m, base_vx_mps (world frame); base_vx (forward velocity in the base
        frame, m/s); fallen; mass_kg (URDF mass plus payload).
    """
    from metaloco.sim.observation import rotation_matrix

    pos, quat, lin, _ = sim.base_state()
    rot = rotation_matrix(quat)
    tilt = math.acos(min(1.0, max(-1.0, float(rot[2, 2]))))
    height = float(pos[2]) - sim.ground.height_at(pos[0], pos[1])
    return {
        "base_x_m": pos[0], "base_y_m": pos[1], "base_z_m": pos[2], "base_vx_mps": lin[0],
        "base_vx": float((rot.T @ lin)[0]),
        "fallen": bool(tilt > robot.max_tilt_rad or height < robot.min_base_height_m),
        "mass_kg": urdf_mass_kg + sim.task.dynamics.payload_kg,
    }


def apply_event(sim: Any, event: dict[str, Any]) -> None:
    """Apply a resolved scenario event to a `SimRobot` now (the mapping `LocomotionEnv.apply_event` uses)."""
    kind = event["kind"]
    if kind == "fault":
        sim.set_fault(event["joint"], event["fault"])
    elif kind == "terrain":
        sim.set_terrain(event["terrain"])
    elif kind == "dynamics":
        sim.set_dynamics(event["dynamics"])
    elif kind == "push":
        sim.push(event["force_n"], event["duration_s"])
    elif kind == "clear_faults":
        sim.clear_faults()
    else:
        raise ValueError(f"unknown event kind {kind!r}")


def main(args: list[str] | None = None) -> int:
    """Entry point of the `robot_bridge` console script."""
    from metaloco.ros_pkgs.launch_xml import run_node

    return run_node(RobotBridge, "robot_bridge", args)


if __name__ == "__main__":
    raise SystemExit(main())
