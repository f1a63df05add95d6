"""The recorder over real DDS on loopback: counts match, a SIGKILL leaves a readable bag, bad input is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import String

from metaloco.adaptation.bag import BagError, read_bag
from metaloco.ros_pkgs.qos import EVENT_QOS, SENSOR_QOS, STATUS_QOS
from metaloco.ros_pkgs.recorder import Recorder
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

ensure_localhost_discovery()




def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def joint_state(i: int) -> JointState:
    msg = JointState(name=["a", "b"], position=[float(i), 0.5], velocity=[0.0, 0.0], effort=[1.0, 2.0])
    msg.header.stamp.sec = i
    return msg


def test_recorder_writes_every_published_message(context, tmp_path):
    recorder = Recorder(context=context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path / "bag")),
        Parameter("topics", value=["joint_states", "imu/data", "sim/events", "diagnostics"]),
        Parameter("flush_period_s", value=0.3), Parameter("scenario", value="unit")])
    node = Node("publisher", context=context)
    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(DiagnosticArray, "diagnostics", diagnostics.append, STATUS_QOS)
    pubs = {"joints": node.create_publisher(JointState, "joint_states", SENSOR_QOS),
            "imu": node.create_publisher(Imu, "imu/data", SENSOR_QOS),
            "events": node.create_publisher(String, "sim/events", EVENT_QOS)}
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        wait_for(lambda: min(p.get_subscription_count() for p in pubs.values()) >= 1, 10.0, "recorder subscriptions")
        time.sleep(0.5)
        for i in range(300):
            pubs["joints"].publish(joint_state(i))
            if i % 3 == 0:
                pubs["imu"].publish(Imu())
            if i % 100 == 0:
                pubs["events"].publish(String(data=json.dumps({"t": i / 200, "push": {"force_n": [0, 60, 0]}})))
            time.sleep(0.005)
        wait_for(lambda: recorder.received["/joint_states"] >= 300 and recorder.received["/sim/events"] >= 3,
                 10.0, f"messages to arrive (received {recorder.received})")
        wait_for(lambda: any(kv.key == "received:/joint_states" and kv.value == "300"
                             for d in diagnostics for s in d.status for kv in s.values), 5.0, "counts on diagnostics")
    finally:
        executor.shutdown()
        spinner.join(5.0)
    summary = recorder.close()
    recorder.destroy_node()
    node.destroy_node()

    assert summary["received"]["/joint_states"] == 300 and summary["received"]["/imu/data"] == 100
    bag = read_bag(tmp_path / "bag")
    assert bag.complete and bag.custom["metaloco.scenario"] == "unit"
    assert {t: bag.counts[t] for t in ("/joint_states", "/imu/data", "/sim/events")} == {
        "/joint_states": 300, "/imu/data": 100, "/sim/events": 3}
    assert bag.topic("joint_states")["position"][:, 0].tolist() == [float(i) for i in range(300)]
    assert json.loads(bag.topic("sim/events")["data"][1])["t"] == 0.5
    assert bag.counts["/diagnostics"] == summary["received"]["/diagnostics"] > 0  # its own status is recorded too


def test_a_recorder_killed_with_sigkill_leaves_a_readable_bag(context, tmp_path):
    bag_dir = tmp_path / "bag"
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaloco.ros_pkgs.recorder", "--ros-args", "-p", f"output_dir:={bag_dir}",
         "-p", "topics:=[joint_states]", "-p", "flush_period_s:=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    node = Node("publisher", context=context)
    pub = node.create_publisher(JointState, "joint_states", SENSOR_QOS)
    try:
        wait_for(lambda: pub.get_subscription_count() >= 1 or proc.poll() is not None, 30.0, "the recorder")
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.5)
        sent_at = []
        for i in range(300):  # 3 s at 100 Hz
            pub.publish(joint_state(i))
            sent_at.append(time.monotonic())
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()

    bag = read_bag(bag_dir)
    assert not bag.complete
    seen = bag.topic("joint_states")["position"][:, 0].astype(int).tolist()
    assert seen == list(range(len(seen)))  # in order, none invented
    # Everything sent more than one flush period (plus slack for a loaded machine) before the kill is there.
    must_have = sum(1 for s in sent_at if s < killed_at - 0.5 - 0.8)
    assert len(seen) >= must_have > 100
    with Reader(bag_dir) as reader:  # plain rosbags agrees with the metadata
        assert sum(1 for _ in reader.messages()) == reader.message_count == len(seen)


def test_an_existing_bag_directory_is_refused(context, tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError, match=str(tmp_path / "bag")):
        Recorder(context=context, parameter_overrides=[Parameter("output_dir", value=str(tmp_path / "bag"))])
    with pytest.raises(ValueError, match="odom"):
        Recorder(context=context, parameter_overrides=[Parameter("output_dir", value=str(tmp_path / "b2")),
                                                       Parameter("topics", value=["odom"])])


def test_localhost_discovery_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    assert ensure_localhost_discovery() == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_LOCALHOST_ONLY": "1"}
