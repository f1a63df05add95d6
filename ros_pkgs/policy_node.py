"""`policy_node`: runs `policy.onnx` on the robot's state and publishes joint position targets.

Each cycle takes the newest `joint_states` (joints addressed by name, in the order of the ONNX
metadata), `imu/data` and `cmd_vel`, builds the observation exactly as the training env does
(`sim/observation.py`), runs the policy with the latest `adaptation/latent` (the prior mean until
one arrives; a policy fine-tuned on the adapter's estimate, `latent_input: adapter`, runs only while
that latent flows), turns the action into targets with the model's own `ActionMap`, and publishes
`joint_commands` (stamped with the state it answers) and `policy/obs_action`.

The latent's age is counted in this loop's cycles (cycles since it came, times the period), not in
wall seconds: it is how long the policy has run, or would have run, on a held latent. On a robot the
two agree while the loop keeps its rate; a lock-step simulator on a busy machine slows the loop and
the robot's world with it, and a starved adaptation node then costs the robot nothing it would not
have lived through. A policy waiting for a live latent still publishes each observation on
`policy/obs_action` (without an action part: none was taken), so that an adaptation node that
restarted its history after a gap can fill it and commands resume (without them, the two nodes
waited on each other for good).

The loop runs on a deadline schedule at the model's control period (`CycleSchedule`). A cycle is
due every period and runs as soon as a fresh `joint_states` arrives in its window, inside that
message's callback, so the command answers the state with no phase delay and no thread hand-off (a
state that comes early waits for the window; a faster stream cannot run the policy faster). A due
time that passes without one counts as a missed cycle, and a watchdog says when the state stream
has stopped. Missing or stale inputs, a NaN, joints that do not match the model, or an estop: no
command goes out and `diagnostics` says why. A model whose robot, joints or gains differ from
the robot YAML is refused at start (`load_policy`).
"""

from __future__ import annotations

import collections
import re
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float32MultiArray

from metaloco.adaptation.prior import LatentPrior
from metaloco.adaptation.runtime import OnnxPolicy, load_policy
from metaloco.hardware.interface import RobotState
from metaloco.hardware.robot_config import load_robot
from metaloco.ros_pkgs.messages import (
    ERROR,
    OK,
    WARN,
    JointOrder,
    MessageError,
    diagnostic_array,
    float_array,
    split_float_array,
    stamp_nanoseconds,
    state_from_msgs,
    status,
    targets_to_msg,
    twist_to_command,
)
from metaloco.ros_pkgs.params import PolicyNodeConfig, declare, model_path
from metaloco.ros_pkgs.qos import qos_for
from metaloco.schema import ConfigError
from metaloco.sim.observation import build_observation

#: Inference times kept for the diagnostics' percentiles.
TIMING_WINDOW = 2000


class PolicyStep:
    """One policy step without ROS: observation, inference, joint targets (the env's order of operations).

    Args:
        policy: The loaded `policy.onnx`.
    """

    def __init__(self, policy: OnnxPolicy):
        self.policy = policy
        self.action_map = policy.action_map()
        self.control_dt = float(policy.meta["control_dt"])
        self.last_action = np.zeros(policy.n_actions)
        self.inference_us: collections.deque[float] = collections.deque(maxlen=TIMING_WINDOW)

    def observe(self, state: RobotState, command: np.ndarray) -> np.ndarray:
        """The observation this step would act on; nothing is advanced."""
        return build_observation(state, command, self.last_action, self.action_map.phase_observation(),
                                 self.action_map.default_pos)

    def __call__(self, state: RobotState, command: np.ndarray,
                 latent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run one step.

        Returns:
            (obs, action, targets).

        Raises:
            MessageError: The policy's output is not finite (nothing is advanced).
        """
        obs = self.observe(state, command)
        t0 = time.perf_counter()
        action = self.policy(obs, latent)
        self.inference_us.append((time.perf_counter() - t0) * 1e6)
        if not np.all(np.isfinite(action)):
            raise MessageError("policy output is not finite")
        targets = self.action_map.targets(action, self.control_dt)
        self.last_action = np.asarray(action, dtype=np.float64)
        return obs, action, targets


class CycleSchedule:
    """Deadlines of a periodic loop triggered by its input.

    Cycle k is due at `due`. An input from `early` periods before `due` on runs it, and the next
    cycle is due one period later, so the long-run rate never exceeds 1/period however fast the
    input comes. A due time left `late` periods behind without a cycle is a missed cycle. After a
    long silence the schedule restarts from the next input.

    Args:
        period: Cycle period (s).
        early: How early (in periods) an input may run the due cycle.
        late: How late (in periods) a cycle may run before it counts as missed.
    """

    def __init__(self, period: float, early: float = 0.75, late: float = 0.5):
        self.period = period
        self.early = early * period
        self.late = late * period
        self.due: float | None = None
        self.last: float | None = None
        """When the last cycle ran."""
        self.cycles = 0
        self.missed = 0

    def ready(self, now: float) -> bool:
        """Whether an input at `now` may run a cycle."""
        return self.due is None or now >= self.due - self.early

    def opens_in(self, now: float) -> float:
        """Seconds until an input may run the due cycle."""
        return 0.0 if self.due is None else max(0.0, self.due - self.early - now)

    def catch_up(self, now: float, restart_after: float) -> None:
        """Count the cycles missed up to `now`; forget the phase after `restart_after` seconds of silence."""
        if self.due is None:
            return
        overdue = now - (self.due + self.late)
        if overdue > 0:
            skipped = int(overdue // self.period) + 1
            self.missed += skipped
            self.due += skipped * self.period
        if now - self.last > restart_after:
            self.due = None

    def ran(self, now: float) -> None:
        """A cycle ran at `now`."""
        self.cycles += 1
        self.last = now
        self.due = now + self.period if self.due is None else self.due + self.period


class PolicyNode(Node):
    """The policy loop behind `joint_states`/`imu/data`/`cmd_vel` -> `joint_commands`/`policy/obs_action`.

    All callbacks share the node's one mutually exclusive callback group, so inputs and cycles never
    interleave and nothing needs a lock.

    Parameters: see `PolicyNodeConfig` (config/nodes.yaml).

    Raises:
        ConfigError: The model is missing, broken, or made for another robot setup (joints, gains, period).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.cfg = declare(self, PolicyNodeConfig)
        robot = load_robot(self.cfg.robot)
        folder = model_path(self.cfg.model_dir, robot.name)
        self.policy = load_policy(folder, robot)
        self.prior = LatentPrior.load(folder / "prior.json")
        if self.prior.dim != self.policy.latent_dim:
            raise ConfigError(str(folder / "prior.json"), "mean", f"prior has {self.prior.dim} dimensions; "
                              f"policy.onnx takes a latent of {self.policy.latent_dim}")
        self.step = PolicyStep(self.policy)
        self.needs_live_latent = self.policy.latent_input == "adapter"
        """Fine-tuned on the adapter's estimate (phase 3): no command without a live adaptation/latent."""
        self.joint_names = list(self.policy.meta["joint_names"])
        self.order = JointOrder(self.joint_names)
        self.period = 1.0 / self.cfg.rate_hz if self.cfg.rate_hz > 0 else self.step.control_dt
        self.timeout = self.cfg.input_timeout_periods * self.period
        self.schedule = CycleSchedule(self.period)
        self.latent = (self.prior.nominal if self.cfg.initial_latent == "nominal" else self.prior.mean).copy()
        """The latent the next cycle uses."""
        self.latent_source = self.cfg.initial_latent
        """Where it came from: prior_mean, nominal, adaptation, or held (adaptation went silent)."""
        self.commands = 0
        """joint_commands published."""
        self.refused = 0
        """Cycles that sent no command (each has a reason in `problem`)."""
        self.problem: str | None = "no joint_states yet"
        """Why no command goes out, or None while commands flow."""
        self.notes: list[str] = []
        """Warnings that do not stop commands (held latent, stale cmd_vel)."""
        self._imu: Imu | None = None
        self._imu_t = 0.0
        self._joints_t: float | None = None
        self._command = np.zeros(3)
        self._command_t: float | None = None
        self._latent_cycle: int | None = None
        """`schedule.cycles` when the last latent came (its age is counted in cycles)."""
        self._first_command_cycle: int | None = None
        self._estop = False
        self._pending: JointState | None = None

        self._commands = self.create_publisher(JointState, "joint_commands", qos_for("joint_commands"))
        self._obs_action = self.create_publisher(Float32MultiArray, "policy/obs_action", qos_for("policy/obs_action"))
        self._diagnostics = self.create_publisher(DiagnosticArray, "diagnostics", qos_for("diagnostics"))
        self.create_subscription(JointState, "joint_states", self._on_joints, qos_for("joint_states"))
        self.create_subscription(Imu, "imu/data", self._on_imu, qos_for("imu/data"))
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, qos_for("cmd_vel"))
        self.create_subscription(Float32MultiArray, "adaptation/latent", self._on_latent, qos_for("adaptation/latent"))
        self.create_subscription(Bool, "estop", self._on_estop, qos_for("estop"))
        self._awaiting_imu: JointState | None = None
        self._deferred = self.create_timer(self.period, self._run_pending, autostart=False)
        # The watchdog notices silence (no joint_states means no cycle to notice it in); 20 Hz is plenty for that.
        self.create_timer(max(self.period, 0.05), self._watch)
        self.create_timer(self.cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(f"running {folder / 'policy.onnx'} for robot '{robot.name}' every "
                               f"{self.period * 1000:.1f} ms (latent {self.policy.latent_dim}, "
                               f"obs {self.policy.obs_dim})")

    # ------------------------------------------------------------ inputs
    def _on_imu(self, msg: Imu) -> None:
        self._imu, self._imu_t = msg, time.monotonic()
        waiting = self._awaiting_imu
        if waiting is not None and stamp_nanoseconds(msg.header.stamp) == stamp_nanoseconds(waiting.header.stamp):
            # The state of this tick was refused for want of its imu reading, which has now come. Its cycle
            # was counted (and the next one scheduled) when the state came: this re-runs it, it is not a new one.
            self._awaiting_imu = None
            self._cycle(self._imu_t, waiting)

    def _on_cmd_vel(self, msg: Twist) -> None:
        self._command, self._command_t = twist_to_command(msg), time.monotonic()

    def _on_latent(self, msg: Float32MultiArray) -> None:
        try:
            latent = next(iter(split_float_array(msg).values())).astype(np.float64)
        except MessageError as err:
            self.get_logger().warning(f"adaptation/latent ignored: {err}", throttle_duration_sec=5.0)
            return
        if len(latent) != self.policy.latent_dim or not np.all(np.isfinite(latent)):
            self.get_logger().warning(f"adaptation/latent ignored: expected {self.policy.latent_dim} finite "
                                      f"values, got {latent.tolist()}", throttle_duration_sec=5.0)
            return
        self.latent, self._latent_cycle, self.latent_source = latent, self.schedule.cycles, "adaptation"

    def _on_estop(self, msg: Bool) -> None:
        self._estop = bool(msg.data)

    # ------------------------------------------------------------- cycle
    def _on_joints(self, msg: JointState) -> None:
        """A fresh state: run the due cycle on it now, or when the cycle's window opens if it came early."""
        now = time.monotonic()
        self._awaiting_imu = None
        self.schedule.catch_up(now, restart_after=self.timeout)
        self._joints_t = now
        if self.schedule.ready(now):
            self._pending = None
            self._deferred.cancel()
            self.schedule.ran(now)
            self._cycle(now, msg)
            return
        if self._pending is None:
            self._deferred.timer_period_ns = max(100_000, int(self.schedule.opens_in(now) * 1e9))
            self._deferred.reset()
        self._pending = msg  # the newest early state waits for the window

    def _run_pending(self) -> None:
        self._deferred.cancel()
        msg, self._pending = self._pending, None
        if msg is not None:
            now = time.monotonic()
            self.schedule.catch_up(now, restart_after=self.timeout)
            self.schedule.ran(now)
            self._cycle(now, msg)

    def _cycle(self, now: float, joints: JointState) -> None:
        if self._estop:
            return self._refuse("estop: no commands until it is released (estop false)")
        if self._imu is None:
            return self._refuse("no imu/data yet")
        same_tick = stamp_nanoseconds(self._imu.header.stamp) == stamp_nanoseconds(joints.header.stamp)
        if not same_tick and now - self._imu_t > self.timeout:
            if stamp_nanoseconds(self._imu.header.stamp) < stamp_nanoseconds(joints.header.stamp):
                self._awaiting_imu = joints  # its imu reading may still be on the way: answer when it comes
            return self._refuse(f"imu/data stale: {(now - self._imu_t) * 1000:.0f} ms old "
                                f"(limit {self.timeout * 1000:.0f} ms)")
        try:
            state = state_from_msgs(joints, self._imu, self.order, effort=False)
        except MessageError as err:
            return self._refuse(str(err))
        notes = []
        command = self._command
        if self._command_t is not None and now - self._command_t > self.cfg.cmd_vel_timeout_s:
            command = np.zeros(3)
            notes.append(f"no cmd_vel for {now - self._command_t:.1f} s: zero velocity")
        elif not np.all(np.isfinite(command)):
            return self._refuse("NaN or infinite value in cmd_vel")
        if self.needs_live_latent:
            if (problem := self._no_live_latent()) is not None:
                self._obs_action.publish(float_array({"obs": self.step.observe(state, command)}))
                return self._refuse(problem)
        elif (age := self._cycles_since(self._latent_cycle)) is not None and age > self.cfg.latent_timeout_s:
            self.latent_source = "held"
            notes.append(f"adaptation/latent silent for {age:.1f} s: keeping the last latent")
        try:
            obs, action, targets = self.step(state, command, self.latent)
        except MessageError as err:
            return self._refuse(str(err))
        except Exception as err:  # a model that breaks at run time must not kill the node: say why, send nothing
            return self._refuse(f"policy step failed: {type(err).__name__}: {err}")
        self._commands.publish(targets_to_msg(targets, self.joint_names, joints.header.stamp))
        self._obs_action.publish(float_array({"obs": obs, "action": action}))
        self.commands += 1
        if self._first_command_cycle is None:
            self._first_command_cycle = self.schedule.cycles
        self._set_problem(None, notes)

    def _cycles_since(self, cycle: int | None) -> float | None:
        """Seconds of this loop's cycles since `cycle` (None if never)."""
        return None if cycle is None else (self.schedule.cycles - cycle) * self.period

    def _no_live_latent(self) -> str | None:
        """For a policy fine-tuned on the adapter's estimate (`latent_input: adapter`): why it must not run now.

        Such a policy reads the estimate as part of its state and was never trained on a fixed latent (one ran at
        0.9 m/s on a 0.5 m/s command with one). So it may use the initial latent only for `latent_timeout_s`
        after its first command (the adapter's history is filling), and stops commanding when adaptation/latent
        is silent that long, rather than hold the last one (both counted in cycles of this loop).
        """
        age = self._cycles_since(self._latent_cycle if self._latent_cycle is not None else self._first_command_cycle)
        if age is None or age <= self.cfg.latent_timeout_s:
            return None
        what = (f"silent for {age:.1f} s" if self._latent_cycle is not None
                else f"not received {age:.1f} s after the first command")
        return (f"adaptation/latent {what} (limit {self.cfg.latent_timeout_s:.1f} s): this policy was fine-tuned on "
                "the adapter's estimate (latent_input: adapter) and is not trained to run on a held or fixed latent; "
                "commands resume when adaptation/latent flows")

    def _watch(self) -> None:
        """Silence on joint_states: count the missed cycles and say why nothing goes out."""
        now = time.monotonic()
        self.schedule.catch_up(now, restart_after=self.timeout)
        if self._joints_t is not None and now - self._joints_t > self.timeout:
            self._set_problem(f"joint_states stale: {(now - self._joints_t) * 1000:.0f} ms old "
                              f"(limit {self.timeout * 1000:.0f} ms)" if now - self._joints_t < 10 * self.timeout
                              else "joint_states stopped", self.notes)

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self._set_problem(reason, self.notes)

    def _set_problem(self, problem: str | None, notes: list[str]) -> None:
        # Say it at once when the kind of condition changes, not when only its figures do (ages, times).
        changed = [_gist(t) for t in [problem, *notes]] != [_gist(t) for t in [self.problem, *self.notes]]
        self.problem, self.notes = problem, notes
        if changed:
            if problem:
                self.get_logger().warning(f"no command: {problem}", throttle_duration_sec=2.0)
            self.publish_diagnostics()

    # ------------------------------------------------------- diagnostics
    def summary(self) -> dict[str, Any]:
        """Counters and timings of the loop."""
        times = np.asarray(self.step.inference_us) if self.step.inference_us else np.zeros(1)
        return {"cycles": self.schedule.cycles, "commands": self.commands, "refused": self.refused,
                "missed_cycles": self.schedule.missed, "period_ms": self.period * 1000.0,
                "inference_p50_us": float(np.percentile(times, 50)),
                "inference_p99_us": float(np.percentile(times, 99)),
                "latent_source": self.latent_source, "model": str(self.policy.path)}

    def publish_diagnostics(self) -> None:
        """One `diagnostics` message: ERROR with the reason while no command goes out, WARN with notes."""
        if self.problem:
            level, message = ERROR, f"no command: {self.problem}"
        elif self.notes:
            level, message = WARN, "running; " + "; ".join(self.notes)
        else:
            level, message = OK, "running"
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                   status(self.get_name(), level, message, self.summary())))


def _gist(text: str | None) -> str | None:
    """A message without its figures."""
    return None if text is None else re.sub(r"[-+]?\d[\d.]*", "#", text)


def main(args: list[str] | None = None) -> int:
    """Entry point of the `policy_node` console script."""
    from metaloco.ros_pkgs.launch_xml import run_node

    return run_node(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
