"""The sim graph as `metaloco up launch/sim.launch.xml` runs it: bridge + policy + adaptation over real DDS.

The simulator runs in lockstep (the launch file's `lockstep:=true`), so a busy test machine slows the
simulated world instead of starving the policy; everything else is the shipped launch file.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray, String

from metaloco.hardware.robot_config import load_robot
from metaloco.ros_pkgs.launch_xml import LaunchRunner
from metaloco.ros_pkgs.messages import level_of, split_float_array, status_values
from metaloco.ros_pkgs.qos import qos_for, recording_qos
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

ensure_localhost_discovery()
ROOT = Path(__file__).resolve().parents[2]
A1 = load_robot("a1")




def trained(folder: Path) -> bool:
    """Whether the model was trained long enough to walk (not a `smoke` export)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("preset") != "smoke" and manifest.get("env_steps", 0) >= 500_000


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Probe(Node):
    """Watches the graph's topics (deep queues) and publishes what a user or a trial would."""

    TOPICS = {"joint_commands": JointState, "policy/obs_action": Float32MultiArray,
              "adaptation/latent": Float32MultiArray, "adaptation/status": DiagnosticArray,
              "diagnostics": DiagnosticArray}

    def __init__(self, context):
        super().__init__("graph_probe", context=context)
        self.received: dict[str, list[tuple[float, object]]] = {t: [] for t in self.TOPICS}
        for topic, cls in self.TOPICS.items():
            self.create_subscription(cls, topic, self._keep(topic), recording_qos(topic))
        self.cmd_vel = self.create_publisher(Twist, "cmd_vel", qos_for("cmd_vel"))
        self.events = self.create_publisher(String, "sim/events", qos_for("sim/events"))

    def _keep(self, topic):
        return lambda msg: self.received[topic].append((time.monotonic(), msg))

    def since(self, topic: str, t: float) -> list:
        return [m for s, m in self.received[topic] if s >= t]

    def statuses(self, name: str, t: float = 0.0) -> list:
        return [s for m in self.since("diagnostics", t) for s in m.status if s.name == name]


@pytest.fixture
def graph(request, model_dir, with_latent_input, tmp_path):
    """sim.launch.xml brought up in this process, with a probe; yields (runner, probe).

    Parametrized (indirect) with a `latent_input`, the model is relabelled to it (see `with_latent_input`); with
    a (latent_input, latent_source) pair the adaptation node also sends that latent."""
    latent_input, latent_source = (request.param if isinstance(getattr(request, "param", None), tuple)
                                   else (getattr(request, "param", None), None))
    if latent_input:
        model_dir = with_latent_input(latent_input)
    params = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    if latent_source:
        params["adaptation_node"]["ros__parameters"]["latent_source"] = latent_source
    for node in params.values():
        node["ros__parameters"]["diagnostics_period_s"] = 0.2
    params["policy_node"]["ros__parameters"]["latent_timeout_s"] = 0.5
    params_file = tmp_path / "nodes.yaml"
    params_file.write_text(yaml.safe_dump(params))
    context = rclpy.Context()
    rclpy.init(context=context)
    runner = LaunchRunner(ROOT / "launch" / "sim.launch.xml",
                          [f"model_dir:={model_dir}", "lockstep:=true", f"params_file:={params_file}"], context=context)
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()  # the probe first: it must not miss the stand phase
    runner.start()
    try:
        yield runner, probe
    finally:
        runner.shutdown()
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        probe.destroy_node()
        rclpy.shutdown(context=context)


def bridge_mode(probe: Probe, t: float = 0.0) -> str | None:
    statuses = probe.statuses("robot_bridge", t)
    return status_values(statuses[-1])["mode"] if statuses else None


def test_the_a1_stands_the_policy_takes_over_and_cmd_vel_reaches_it(graph, model_dir):
    runner, probe = graph
    bridge = runner.nodes["robot_bridge"]
    wait_for(lambda: bridge_mode(probe) == "active", 20.0, "the bridge to stand and go active")
    standing = [status_values(s) for s in probe.statuses("robot_bridge") if status_values(s)["mode"] == "stand"]
    assert standing, "the bridge never reported standing"
    assert float(standing[-1]["sim_base_z_m"]) > 0.22, f"the A1 did not stand up: {standing[-1]}"
    assert [mode for _, _, mode, _ in bridge.transitions] == ["stand", "active"]

    # Commands flow at the control rate: one per simulated control period (lockstep), and briskly in wall time.
    t0, sim0, n0 = time.monotonic(), bridge.sim.time_s, len(probe.received["joint_commands"])
    time.sleep(2.0)
    sim_s, wall_s = bridge.sim.time_s - sim0, time.monotonic() - t0
    commands = len(probe.received["joint_commands"]) - n0
    assert commands / sim_s == pytest.approx(1.0 / A1.control_dt, rel=0.1), f"{commands} commands in {sim_s:.2f} sim s"
    assert commands / wall_s > 0.5 / A1.control_dt, f"{commands} commands in {wall_s:.2f} s"
    assert bridge.core.mode == "active", bridge.core.reason

    # cmd_vel reaches the policy's observation; a trained A1 walks forward on it.
    layout = runner.nodes["policy_node"].policy.meta["obs_layout"]
    start = sum(size for name, size in layout[:[n for n, _ in layout].index("command")])
    x0, t0, sim0 = bridge.truth["base_x_m"], time.monotonic(), bridge.sim.time_s
    forward = Twist()
    forward.linear.x = 0.5
    while bridge.sim.time_s - sim0 < 3.0 and time.monotonic() - t0 < 20.0:
        probe.cmd_vel.publish(forward)
        time.sleep(0.05)
    seen = [split_float_array(m)["obs"][start:start + 3] for m in probe.since("policy/obs_action", t0 + 0.5)]
    assert seen and np.allclose(seen[-1], [0.5, 0.0, 0.0]), seen[-1:]
    if trained(model_dir):
        distance = bridge.truth["base_x_m"] - x0
        assert distance > 0.3 * (bridge.sim.time_s - sim0), f"walked {distance:.2f} m forward on 0.5 m/s"
        assert bridge.core.mode == "active", bridge.core.reason


@pytest.mark.parametrize("graph", ["any", ("adapter", "raw")], indirect=True)
def test_a_fault_on_sim_events_moves_the_latent_and_the_policy_handles_adaptation_dying(graph):
    runner, probe = graph
    bridge, policy = runner.nodes["robot_bridge"], runner.nodes["policy_node"]
    wait_for(lambda: bridge.core.mode == "active", 20.0, "the bridge to go active")
    time.sleep(1.5)  # the adapter's history fills with the robot trotting in place

    def latents(t0: float, t1: float) -> np.ndarray:
        msgs = [m for s, m in probe.received["adaptation/latent"] if t0 <= s < t1]
        return np.array([split_float_array(m)["latent"] for m in msgs])

    t0 = time.monotonic()
    time.sleep(1.5)
    t1 = time.monotonic()
    for joint in ("FR_upper_joint", "FR_lower_joint"):  # the whole front-right leg goes limp
        probe.events.publish(String(data=json.dumps({"kind": "fault", "joint": joint, "fault": {"mode": "limp"}})))
    wait_for(lambda: bridge.events_applied == 2, 5.0, "the bridge to apply both fault events")
    # Counted in simulated time: on a loaded machine the simulator falls behind the wall clock, and 2 s of wall time
    # could leave the adapter's 1 s history still mostly from before the fault.
    sim_fault = bridge.sim.time_s
    wait_for(lambda: bridge.sim.time_s - sim_fault >= 0.5, 20.0, "0.5 simulated seconds after the fault")
    t_after = time.monotonic()
    wait_for(lambda: bridge.sim.time_s - sim_fault >= 2.0, 20.0, "2 simulated seconds after the fault")
    before, after = latents(t0, t1), latents(t_after, time.monotonic())
    assert len(before) >= 5 and len(after) >= 5, (len(before), len(after))
    spread = before.std(axis=0).mean() + 1e-9
    shift = np.linalg.norm(after.mean(axis=0) - before.mean(axis=0))
    assert shift > 3.0 * spread, f"latent moved {shift:.4f} after the fault; it wanders {spread:.4f} without one"
    status = [status_values(s) for _, m in probe.received["adaptation/status"] for s in m.status]
    assert status and {"confidence", "change_detected", "suspected_joint"} <= set(status[-1])

    # The adaptation node dies. A policy fine-tuned on the adapter's estimate (phase 3) stops commanding, and
    # the bridge damps (stale commands): such a policy was never trained on a held latent.
    adaptation = runner.nodes["adaptation_node"]
    runner.stop_node("adaptation_node")
    last = policy.latent.copy()
    t2 = time.monotonic()
    # What went out on adaptation/latent: the estimate fused with the prior (config/nodes.yaml), or the adapter's
    # raw output where this test set latent_source: raw (for the phase-3 policy, which was trained on it); the
    # wire carries the node's last latent.
    expected = "raw" if policy.policy.latent_input == "adapter" else "fused"
    assert adaptation.cfg.latent_source == expected and status[-1]["latent_source"] == expected
    estimate, published = adaptation.last_published
    np.testing.assert_array_equal(published, estimate.raw if expected == "raw" else estimate.latent)
    wait_for(lambda: np.allclose(latents(t2 - 1.0, time.monotonic() + 1.0)[-1], published, atol=1e-6), 1.0,
             "the node's last latent on the wire")
    if policy.policy.latent_input == "adapter":  # the parameter, whichever model this checkout ships
        wait_for(lambda: any("adaptation/latent silent" in s.message and level_of(s) == 2
                             for s in probe.statuses("policy_node", t2)), 5.0, "the policy to stop without a latent")
        wait_for(lambda: bridge.core.mode == "damping", 2.0, "the bridge to damp once commands stopped")
        return
    # Any other policy keeps its last latent, keeps commanding, and says so.
    wait_for(lambda: any("adaptation/latent silent" in s.message and level_of(s) == 1
                         for s in probe.statuses("policy_node", t2)), 5.0, "the policy to report adaptation silent")
    n = len(probe.received["joint_commands"])
    time.sleep(0.5)
    assert len(probe.received["joint_commands"]) > n + 5, "the policy stopped without adaptation"
    assert policy.latent_source == "held"
    np.testing.assert_array_equal(policy.latent, last)
