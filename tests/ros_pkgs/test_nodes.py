"""policy_node and robot_bridge, each alone over real DDS on loopback, with the test playing the other side."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float32MultiArray, String
from std_srvs.srv import Trigger

from metaloco.hardware.robot_config import load_robot
from metaloco.ros_pkgs.messages import level_of, split_float_array, stamp_nanoseconds, status_values
from metaloco.ros_pkgs.policy_node import PolicyNode
from metaloco.ros_pkgs.qos import qos_for, recording_qos
from metaloco.ros_pkgs.robot_bridge import RobotBridge
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery
from metaloco.schema import ConfigError
from metaloco.sim.observation import projected_gravity

ensure_localhost_discovery()
ROOT = Path(__file__).resolve().parents[2]
A1 = load_robot("a1")
PERIOD = A1.control_dt


# ----------------------------------------------------------------- fixtures




class Spinner:
    """Each node spun by its own executor thread, as `metaloco up` does."""

    def __init__(self, context):
        self.context = context
        self.running: list[tuple[SingleThreadedExecutor, threading.Thread, Node]] = []

    def add(self, node: Node) -> Node:
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self.running.append((executor, thread, node))
        return node

    def close(self) -> None:
        while self.running:
            executor, thread, node = self.running.pop()
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=2.0)
            node.destroy_node()


@pytest.fixture
def spinner(context):
    s = Spinner(context)
    yield s
    s.close()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Probe(Node):
    """The test's side of the graph: records what it receives, with the time it arrived."""

    def __init__(self, context, topics: dict[str, type]):
        super().__init__("probe", context=context)
        self.received: dict[str, list[tuple[float, object]]] = {t: [] for t in topics}
        # Deep queues: the probe must not drop what it is checking.
        self.subs = {t: self.create_subscription(cls, t, self._keep(t), recording_qos(t)) for t, cls in topics.items()}
        self.pubs: dict[str, object] = {}

    def _keep(self, topic):
        return lambda msg: self.received[topic].append((time.monotonic(), msg))

    def publisher(self, topic: str, cls: type):
        self.pubs[topic] = self.create_publisher(cls, topic, qos_for(topic))
        return self.pubs[topic]

    def connected(self) -> bool:
        return (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and all(s.get_publisher_count() > 0 for s in self.subs.values()))

    def statuses(self, name: str) -> list[tuple[float, object]]:
        return [(t, s) for t, msg in self.received["diagnostics"] for s in msg.status if s.name == name]


def call(probe: Node, service: str) -> Trigger.Response:
    client = probe.create_client(Trigger, service)
    assert client.wait_for_service(timeout_sec=10.0), f"service {service} not available"
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 10.0, f"{service} to answer")
    return future.result()


# -------------------------------------------------------------- policy_node
def robot_state(i: int, nan_joint: str | None = None) -> tuple[JointState, Imu, np.ndarray, np.ndarray]:
    """A state whose joints are listed in reverse order; returns the messages and pos/vel in robot order."""
    pos = np.asarray(A1.default_joint_pos) + 0.01 * np.arange(12) + 0.001 * (i % 7)
    vel = 0.1 * np.arange(12) - 0.5
    names = A1.joint_names[::-1]
    position = pos[::-1].tolist()
    if nan_joint:
        position[names.index(nan_joint)] = math.nan
    joints = JointState(name=names, position=position, velocity=vel[::-1].tolist(), effort=[0.0] * 12)
    joints.header.stamp.sec, joints.header.stamp.nanosec = 1000 + i, 0
    imu = Imu()
    imu.header.stamp = joints.header.stamp
    imu.orientation.x, imu.orientation.w = math.sin(0.05), math.cos(0.05)  # rolled 0.1 rad
    imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = 0.1, -0.2, 0.3
    imu.linear_acceleration.z = 9.81
    return joints, imu, pos, vel


def start_policy(context, spinner, model_dir, **params) -> tuple[PolicyNode, Probe]:
    overrides = [Parameter("model_dir", value=str(model_dir)), Parameter("diagnostics_period_s", value=0.2)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    policy = spinner.add(PolicyNode(context=context, parameter_overrides=overrides))
    probe = Probe(context, {"joint_commands": JointState, "policy/obs_action": Float32MultiArray,
                            "diagnostics": DiagnosticArray})
    for topic, cls in (("joint_states", JointState), ("imu/data", Imu), ("cmd_vel", Twist), ("estop", Bool),
                       ("adaptation/latent", Float32MultiArray)):
        probe.publisher(topic, cls)
    spinner.add(probe)
    wait_for(probe.connected, 15.0, "the policy node and the probe to discover each other")
    time.sleep(0.3)
    return policy, probe


def stream(probe: Probe, first: int, count: int, nan_joint: str | None = None, twist: Twist | None = None) -> list[int]:
    """Publish `count` states at the control rate, as a bridge would; returns their stamps (ns)."""
    stamps = []
    start = time.monotonic()
    for k in range(count):
        joints, imu, _, _ = robot_state(first + k, nan_joint)
        if twist is not None:
            probe.pubs["cmd_vel"].publish(twist)
        probe.pubs["imu/data"].publish(imu)
        probe.pubs["joint_states"].publish(joints)
        stamps.append(stamp_nanoseconds(joints.header.stamp))
        time.sleep(max(0.0, start + (k + 1) * PERIOD - time.monotonic()))
    return stamps


def test_policy_answers_each_state_with_the_training_observation_by_joint_name(context, spinner, model_dir):
    policy, probe = start_policy(context, spinner, model_dir, latent_timeout_s=5.0)  # no latent needed in 1 s
    layout = [(name, size) for name, size in policy.policy.meta["obs_layout"]]
    sizes = [size for _, size in layout]
    bounds = dict(zip([n for n, _ in layout], np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1]), strict=True))
    twist = Twist()
    twist.linear.x, twist.linear.y, twist.angular.z = 0.4, 0.1, -0.2
    stamps = stream(probe, 0, 50, twist=twist)
    time.sleep(0.2)

    commands = [m for _, m in probe.received["joint_commands"]]
    answered = [stamp_nanoseconds(m.header.stamp) for m in commands]
    assert set(answered) <= set(stamps) and len(set(answered)) >= 0.8 * len(stamps), \
        f"{len(set(answered))} of {len(stamps)} states answered"
    assert all(m.name == A1.joint_names for m in commands)

    steps = [split_float_array(m) for _, m in probe.received["policy/obs_action"]]
    assert len(steps) == len(commands)
    obs, action = steps[-1]["obs"], steps[-1]["action"]
    part = {name: obs[idx] for name, idx in bounds.items()}
    # Which state this step saw: the states differ only in a 0.001 * (i % 7) offset of every joint.
    offset = float(part["joint_pos_rel"][0])  # joint 0: default + 0.001 * (i % 7)
    _, imu, pos, vel = robot_state(int(round(offset / 0.001)))
    np.testing.assert_allclose(part["joint_pos_rel"], pos - np.asarray(A1.default_joint_pos), atol=1e-6)
    np.testing.assert_allclose(part["joint_vel"], vel, atol=1e-6)
    np.testing.assert_allclose(part["base_ang_vel"], [0.1, -0.2, 0.3], atol=1e-6)
    quat = np.array([imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w])
    np.testing.assert_allclose(part["projected_gravity"], projected_gravity(quat), atol=1e-6)
    np.testing.assert_allclose(part["command"], [0.4, 0.1, -0.2], atol=1e-6)
    np.testing.assert_array_equal(part["last_action"], steps[-2]["action"])  # consecutive cycles
    # The targets are the model's own action map at the phase the observation showed.
    action_map = policy.policy.action_map()
    sin, cos = part["gait_phase"]
    action_map.phase = (math.atan2(sin, cos) / (2 * math.pi)) % 1.0
    np.testing.assert_allclose(commands[-1].position, action_map.targets(action, PERIOD), atol=1e-4)


def test_a_nan_in_joint_states_sends_no_command_and_says_why(context, spinner, model_dir):
    policy, probe = start_policy(context, spinner, model_dir)
    stream(probe, 0, 15)
    wait_for(lambda: len(probe.received["joint_commands"]) > 5, 5.0, "commands to flow")
    sent = time.monotonic()
    bad = set(stream(probe, 100, 15, nan_joint="FR_lower_joint"))
    good = set(stream(probe, 200, 15))
    time.sleep(0.2)

    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert not answered & bad, "a state with a NaN was answered with a command"
    assert answered & good, "commands did not resume after the NaN"
    errors = [s for t, s in probe.statuses("policy_node") if t > sent and level_of(s) == 2]
    assert any("NaN" in s.message and "FR_lower_joint" in s.message for s in errors), [s.message for s in errors]


def test_a_state_whose_imu_comes_late_is_answered_when_the_imu_arrives(context, spinner, model_dir):
    """joint_states first, its imu reading (same stamp) 150 ms later: the policy waits for it, then answers, and
    that is one cycle of its loop, not two."""
    policy, probe = start_policy(context, spinner, model_dir)
    stream(probe, 0, 15)
    wait_for(lambda: len(probe.received["joint_commands"]) > 5, 5.0, "commands to flow")
    joints, imu, _, _ = robot_state(500)
    time.sleep(0.2)  # longer than the staleness limit: the last imu reading is stale now
    cycles, commands = policy.schedule.cycles, policy.commands
    probe.pubs["joint_states"].publish(joints)
    time.sleep(0.15)
    assert stamp_nanoseconds(joints.header.stamp) not in {
        stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    probe.pubs["imu/data"].publish(imu)
    wait_for(lambda: stamp_nanoseconds(joints.header.stamp) in {
        stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}, 2.0,
        "the late state to be answered once its imu came")
    wait_for(lambda: policy.commands > commands, 1.0, "the node to count the command it sent")
    assert (policy.schedule.cycles - cycles, policy.commands - commands) == (1, 1), \
        "one late state must be one cycle and one command"


def test_estop_stops_the_policy_until_released(context, spinner, model_dir):
    policy, probe = start_policy(context, spinner, model_dir)
    stream(probe, 0, 10)
    probe.pubs["estop"].publish(Bool(data=True))
    time.sleep(0.1)
    held = set(stream(probe, 100, 10))
    probe.pubs["estop"].publish(Bool(data=False))
    time.sleep(0.1)
    released = set(stream(probe, 200, 10))
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert not answered & held and answered & released
    assert any("estop" in s.message for _, s in probe.statuses("policy_node"))


def test_the_policy_keeps_the_last_latent_when_adaptation_goes_silent(context, spinner, with_latent_input):
    policy, probe = start_policy(context, spinner, with_latent_input("any"), latent_timeout_s=0.3)
    assert policy.latent_source == "prior_mean"
    np.testing.assert_allclose(policy.latent, policy.prior.mean)
    latent = policy.prior.mean + 0.25
    msg = Float32MultiArray(data=latent.astype(np.float32).tolist())
    for _ in range(3):  # best effort: send a few
        probe.pubs["adaptation/latent"].publish(msg)
        stream(probe, 0, 3)
    wait_for(lambda: policy.latent_source == "adaptation", 2.0, "the latent to arrive")
    np.testing.assert_allclose(policy.latent, latent, atol=1e-6)
    silent = time.monotonic()
    stamps = set(stream(probe, 100, 30))  # 0.6 s without a latent
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert len(answered & stamps) >= 0.8 * len(stamps), "commands stopped with adaptation"
    assert policy.latent_source == "held"
    np.testing.assert_allclose(policy.latent, latent, atol=1e-6)
    warnings = [s for t, s in probe.statuses("policy_node") if t > silent and level_of(s) == 1]
    assert any("adaptation/latent silent" in s.message and "keeping the last latent" in s.message for s in warnings)


def test_a_policy_fine_tuned_on_the_adapter_runs_only_while_its_latent_flows(context, spinner, with_latent_input):
    """latent_input: adapter (phase 3): the initial latent for latent_timeout_s at most, then a live latent or
    no command, and the same when adaptation goes silent: such a policy overspeeds on a held latent."""
    policy, probe = start_policy(context, spinner, with_latent_input("adapter"), latent_timeout_s=0.3)
    assert policy.policy.latent_input == "adapter"
    first = set(stream(probe, 0, 10))  # 0.2 s: within the grace, on the prior mean
    never = set(stream(probe, 100, 25))  # 0.5 s more without a latent
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert len(answered & first) >= 8, "the initial latent was not used while the adapter's history fills"
    late = sorted(never)[-10:]  # the last 0.2 s, past 0.3 s after the first command
    assert not answered & set(late), "commanded on the initial latent past latent_timeout_s"
    errors = [s.message for _, s in probe.statuses("policy_node") if level_of(s) == 2]
    assert any("adaptation/latent not received" in m and "latent_input: adapter" in m for m in errors), errors

    latent = Float32MultiArray(data=(policy.prior.mean + 0.25).astype(np.float32).tolist())
    flowing = []
    for k in range(20):  # a live latent every 40 ms, as the adaptation node sends at 10-25 Hz
        if k % 2 == 0:
            probe.pubs["adaptation/latent"].publish(latent)
        flowing += stream(probe, 200 + k, 1)
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert len(answered & set(flowing[5:])) >= 12, "commands did not resume once the latent flowed"
    assert policy.latent_source == "adaptation"

    silent = time.monotonic()
    quiet = stream(probe, 300, 30)  # 0.6 s without a latent
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert answered & set(quiet[:5]), "stopped before latent_timeout_s"
    assert not answered & set(quiet[-10:]), "kept commanding on a held latent"
    errors = [s.message for t, s in probe.statuses("policy_node") if t > silent and level_of(s) == 2]
    assert any("adaptation/latent silent" in m and "not trained to run on a held or fixed latent" in m for m in errors), errors
    # While it waits it still publishes what it observes, with no action part (none was taken): an adaptation
    # node that restarted its history after the gap fills it from these, and commands resume.
    waiting = [split_float_array(m) for t, m in probe.received["policy/obs_action"] if t > silent + 0.45]
    assert len(waiting) >= 5 and all(set(w) == {"obs"} and len(w["obs"]) == policy.policy.obs_dim for w in waiting)
    flowing = []
    for k in range(10):
        if k % 2 == 0:
            probe.pubs["adaptation/latent"].publish(latent)
        flowing += stream(probe, 400 + k, 1)
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert answered & set(flowing[3:]), "commands did not resume once the latent flowed again"


def test_the_latent_ages_with_the_loop_not_the_wall_clock(context, spinner, with_latent_input):
    """A lock-step simulator on a busy machine slows the loop; the latent's age counts the loop's cycles (0.6 s
    of wall time without a latent is 6 cycles of 20 ms here, under latent_timeout_s = 0.3 s)."""
    policy, probe = start_policy(context, spinner, with_latent_input("adapter"), latent_timeout_s=0.3)
    latent = Float32MultiArray(data=(policy.prior.mean + 0.25).astype(np.float32).tolist())
    probe.pubs["adaptation/latent"].publish(latent)
    stream(probe, 0, 5)
    wait_for(lambda: policy.latent_source == "adaptation", 2.0, "the latent to arrive")
    slow = []
    for k in range(6):  # one state per 100 ms: the simulated world runs at a fifth of real time
        slow += stream(probe, 100 + k, 1)
        time.sleep(0.08)
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert set(slow) <= answered, "stopped on wall-clock silence the slowed loop did not live through"
    quiet = stream(probe, 200, 25)  # at the loop's full rate: 0.3 s of cycles go by, and it stops
    time.sleep(0.2)
    answered = {stamp_nanoseconds(m.header.stamp) for _, m in probe.received["joint_commands"]}
    assert not answered & set(quiet[-5:]), "kept commanding on a held latent"


def test_a_model_for_other_gains_or_bad_parameters_are_refused(context, model_dir, tmp_path):
    data = yaml.safe_load((ROOT / "config" / "robots" / "a1.yaml").read_text())
    data["kp"] = [35.0]
    stiff = tmp_path / "a1_stiff.yaml"
    stiff.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="'kp': model has"):
        PolicyNode(context=context, parameter_overrides=[Parameter("model_dir", value=str(model_dir)),
                                                         Parameter("robot", value=str(stiff))])
    with pytest.raises(InvalidParameterValueException, match="out of range"):
        PolicyNode(context=context, parameter_overrides=[Parameter("model_dir", value=str(model_dir)),
                                                         Parameter("input_timeout_periods", value=0.5)])
    with pytest.raises(ConfigError, match=r"initial_latent.*allowed values are \['prior_mean', 'nominal'\]"):
        PolicyNode(context=context, parameter_overrides=[Parameter("model_dir", value=str(model_dir)),
                                                         Parameter("initial_latent", value="oracle")])


# ------------------------------------------------------------- robot_bridge
def start_bridge(context, spinner, robot: str = "a1", **params) -> tuple[RobotBridge, Probe]:
    overrides = [Parameter("robot", value=robot), Parameter("diagnostics_period_s", value=0.2)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    bridge = spinner.add(RobotBridge(context=context, parameter_overrides=overrides))
    probe = Probe(context, {"joint_states": JointState, "imu/data": Imu, "diagnostics": DiagnosticArray})
    for topic, cls in (("joint_commands", JointState), ("estop", Bool), ("sim/events", String)):
        probe.publisher(topic, cls)
    spinner.add(probe)
    wait_for(probe.connected, 15.0, "the bridge and the probe to discover each other")
    return bridge, probe


class StandInPolicy:
    """Answers every joint_states with the default pose, stamped with the state's stamp, until stopped."""

    def __init__(self, probe: Probe):
        self.answering = True
        self.last: float | None = None
        """When the last answer went out (ROS time, s)."""
        self.pub = probe.pubs["joint_commands"]
        self.clock = probe.get_clock()
        probe.create_subscription(JointState, "joint_states", self._answer, qos_for("joint_states"))

    def _answer(self, state: JointState) -> None:
        if not self.answering:
            return
        cmd = JointState(name=A1.joint_names, position=list(map(float, A1.default_joint_pos)))
        cmd.header.stamp = state.header.stamp
        self.pub.publish(cmd)
        self.last = self.clock.now().nanoseconds * 1e-9


def test_bridge_stands_goes_active_and_damps_when_commands_stop(context, spinner):
    bridge, probe = start_bridge(context, spinner, stand_ramp_s=0.3)
    assert bridge.core.mode == "passive"
    policy = StandInPolicy(probe)
    assert call(probe, "/robot_bridge/activate").success is False  # stand comes first
    assert call(probe, "/robot_bridge/stand").success
    time.sleep(0.6)
    response = call(probe, "/robot_bridge/activate")
    assert response.success, response.message
    time.sleep(0.5)
    assert bridge.core.mode == "active"
    assert bridge.truth["base_z_m"] > 0.2, f"the robot did not stand: {bridge.truth}"
    assert len(probe.received["joint_states"]) > 0.7 * 1.1 / PERIOD  # states at the control rate

    policy.answering = False
    time.sleep(0.01)
    last = policy.last
    wait_for(lambda: bridge.core.mode == "damping", 2.0, "damping")
    t, _, mode, reason = bridge.transitions[-1]
    assert reason.startswith("stale command"), reason
    age_ms = float(re.search(r"(\d+) ms old", reason).group(1))
    # Damping at the first tick where the last command is more than 3 periods old: 3 periods after it, or 4
    # when that tick lands a hair early (ticks are 1 period apart; 10 ms for scheduling on a busy machine).
    assert t - last <= 4 * PERIOD + 0.01, f"damping {1000 * (t - last):.0f} ms after the last command"
    assert age_ms <= 4 * PERIOD * 1000 + 10
    policy.answering = True
    time.sleep(0.2)
    assert bridge.core.mode == "damping"  # fresh commands do not re-arm: that is explicit
    assert call(probe, "/robot_bridge/rearm").success and bridge.core.mode == "passive"


def test_estop_damps_the_bridge_at_once(context, spinner, tmp_path):
    # A slow control period (100 ms ticks) tells "at once" from "at the next tick".
    data = yaml.safe_load((ROOT / "config" / "robots" / "a1.yaml").read_text())
    data["control_dt"] = 0.1
    slow = tmp_path / "a1_slow.yaml"
    slow.write_text(yaml.safe_dump(data))
    bridge, probe = start_bridge(context, spinner, robot=str(slow), stand_ramp_s=0.2)
    assert call(probe, "/robot_bridge/stand").success
    time.sleep(0.35)
    assert bridge.core.mode == "stand"
    ticked = len(probe.received["joint_states"])
    wait_for(lambda: len(probe.received["joint_states"]) > ticked, 1.0, "a tick")  # the next one is 100 ms away
    sent = probe.get_clock().now().nanoseconds * 1e-9
    probe.pubs["estop"].publish(Bool(data=True))
    wait_for(lambda: bridge.core.mode == "damping", 2.0, "damping")
    t, _, _, reason = bridge.transitions[-1]
    assert reason == "estop"
    assert t - sent < 0.04, f"damping {1000 * (t - sent):.0f} ms after the estop (ticks are 100 ms apart)"
    probe.pubs["estop"].publish(Bool(data=False))
    time.sleep(0.25)
    assert bridge.core.mode == "damping"
    wait_for(lambda: any(s.message.startswith("damping: estop") and level_of(s) == 2
                         for _, s in probe.statuses("robot_bridge")), 2.0, "an ERROR diagnostic naming the estop")


def test_sim_events_hurt_the_simulated_robot_and_bad_ones_are_refused(context, spinner):
    bridge, probe = start_bridge(context, spinner)
    events = probe.pubs["sim/events"]
    events.publish(String(data=json.dumps({"t": 0.0, "kind": "fault", "joint": "FR_lower_joint",
                                           "fault": {"mode": "locked"}})))
    wait_for(lambda: bridge.events_applied == 1, 5.0, "the fault event")
    assert bridge.sim.task.faults["FR_lower_joint"].mode == "locked"
    events.publish(String(data=json.dumps({"kind": "fault", "joint": "FR_knee", "fault": {"mode": "limp"}})))
    events.publish(String(data=json.dumps({"kind": "push", "force_n": [0, 60, 0], "duration_s": 0.1})))
    wait_for(lambda: bridge.events_applied == 2, 5.0, "the push event")
    assert "FR_knee" in bridge.problem and "sim/events rejected" in bridge.problem
    wait_for(lambda: any("FR_knee" in status_values(s).get("last_problem", "")
                         for _, s in probe.statuses("robot_bridge")), 2.0, "a diagnostic naming the bad joint")


def test_bridge_drives_a_serial_bridge_robot_and_damps_when_the_cable_is_pulled(context, spinner):
    from metaloco.hardware.serial_bridge_emulator import SerialBridgeEmulator
    from metaloco.sim.robot import SimRobot

    sim = SimRobot(A1)
    sim.reset()
    device = SerialBridgeEmulator(sim, A1)  # the robot's microcontroller on a pty, the A1 behind it
    try:
        bridge, probe = start_bridge(context, spinner, driver="serial_bridge", port=device.port, stand_ramp_s=0.2)
        wait_for(lambda: len(probe.received["joint_states"]) >= 5, 5.0, "joint_states read from the MCU")
        msg = probe.received["joint_states"][-1][1]
        with device.lock:
            truth = sim.read_state().joint_pos
        np.testing.assert_allclose([msg.position[msg.name.index(j)] for j in A1.joint_names], truth, atol=1e-3)
        assert call(probe, "/robot_bridge/stand").success
        applied = device.commands_applied
        wait_for(lambda: device.commands_applied > applied + 5, 3.0, "PD commands reaching the MCU")
        device.unplug()
        wait_for(lambda: bridge.core.mode == "damping", 2.0, "damping on a lost link")
        assert "link lost" in bridge.core.reason
        assert call(probe, "/robot_bridge/rearm").success is False  # not while the link is down
        device.replug()
        wait_for(lambda: bridge.core.link_up, 5.0, "the bridge to reconnect")
        assert call(probe, "/robot_bridge/rearm").success and bridge.core.mode == "passive"
    finally:
        spinner.close()  # the bridge lets go of the port before the device goes
        device.close()
        sim.close()
