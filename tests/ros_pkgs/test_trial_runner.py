"""The trial_runner node on its own over DDS: on a robot (wall clock) events are operator prompts and marks,
and a graph without a bridge is named when the runner gives up."""

from __future__ import annotations

import json
import threading
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from metaloco.ros_pkgs.messages import OK, diagnostic_array, status
from metaloco.ros_pkgs.qos import qos_for, recording_qos
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery
from metaloco.ros_pkgs.trial_runner import TrialRunner

ensure_localhost_discovery()
SCENARIO = """name: field
duration_s: 0.6
command: {vx: 0.4}
events:
  - {t: 0.3, push: {force_n: [0, 60, 0], duration_s: 0.2}}
"""


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    thread = threading.Thread(target=executor.spin, daemon=True)
    yield ctx, executor, thread
    executor.shutdown(timeout_sec=2.0)
    thread.join(timeout=2.0)
    rclpy.shutdown(context=ctx)


class FakeRobot(Node):
    """A hardware bridge as the trial runner sees it (an active status whose command count grows), and a probe."""

    def __init__(self, context):
        super().__init__("fake_robot", context=context)
        self.commands = 0
        self.cmd_vel: list[Twist] = []
        self.marks: list[str] = []
        self._diag = self.create_publisher(DiagnosticArray, "diagnostics", qos_for("diagnostics"))
        self.create_subscription(Twist, "cmd_vel", self.cmd_vel.append, recording_qos("cmd_vel"))
        self.create_subscription(String, "sim/events", lambda m: self.marks.append(m.data), qos_for("sim/events"))
        self.create_timer(0.1, self._status)

    def _status(self):
        self.commands += 5
        self._diag.publish(diagnostic_array(self.get_clock().now().to_msg(), status(
            "robot_bridge", OK, "active: policy in control", {"mode": "active", "commands": self.commands})))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def test_on_a_robot_events_are_operator_prompts_and_marks_on_the_wall_clock(context, tmp_path, capfd):
    ctx, executor, thread = context
    (tmp_path / "field.yaml").write_text(SCENARIO)
    robot = FakeRobot(ctx)
    runner = TrialRunner(context=ctx, parameter_overrides=[
        Parameter("scenario", value=str(tmp_path / "field.yaml")), Parameter("hardware", value=True),
        Parameter("settle_s", value=0.3), Parameter("rate_hz", value=20.0)])
    executor.add_node(robot)
    executor.add_node(runner)
    thread.start()
    wait_for(lambda: runner.state == "done", 15.0, f"the trial to end (state {runner.state}: {runner.missing_now})")
    assert runner.t_end - runner.t0 == pytest.approx(0.6, abs=0.06)  # wall seconds
    wait_for(lambda: len(robot.cmd_vel) >= runner.published["cmd_vel"], 2.0, "the last cmd_vel")
    assert runner.published == {"cmd_vel": len(robot.cmd_vel), "sim/events": 1}
    assert 11 <= len(robot.cmd_vel) <= 14 and all(m.linear.x == pytest.approx(0.4) for m in robot.cmd_vel)
    assert [json.loads(m)["kind"] for m in robot.marks] == ["push"]  # a mark in the recording
    assert runner.event_log[0]["sent_at_s"] == pytest.approx(0.3, abs=0.06)
    err = capfd.readouterr().err
    assert "OPERATOR, now (t = 0.3 s): push the base with [0.0, 60.0, 0.0] N for 0.2 s" in err


def test_without_a_bridge_the_runner_gives_up_and_names_what_is_missing(context, tmp_path):
    ctx, executor, thread = context
    (tmp_path / "field.yaml").write_text(SCENARIO)
    runner = TrialRunner(context=ctx, parameter_overrides=[
        Parameter("scenario", value=str(tmp_path / "field.yaml")), Parameter("hardware", value=True),
        Parameter("ready_timeout_s", value=1.0)])
    executor.add_node(runner)
    thread.start()
    wait_for(lambda: runner.state == "failed", 5.0, "the runner to give up")
    assert "not ready after 1 s" in runner.failure
    assert "no 'robot_bridge' status on diagnostics" in runner.failure
    assert "nobody subscribes to cmd_vel" in runner.failure
    assert runner.published == {"cmd_vel": 0, "sim/events": 0}
