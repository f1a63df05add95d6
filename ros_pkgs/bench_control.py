"""`metaloco bench control`: what the policy node adds to a control round trip, through real DDS.

Two servers run as their own processes, as they would on a robot: a bare echo node (sends every
`JointState` it gets straight back) and the policy node (with `rate_hz` set to the bench rate).
This process plays the robot bridge. Every period it sends a 12-joint `JointState` to the echo
node, and half a period later `imu/data` + `joint_states` to the policy node, and times each
answer (`bench/echo_out`, `joint_commands`; the policy stamps its command with the state's stamp).
The two round trips share the machine, the middleware and the message size; the difference is
what the policy node costs.

`missed_cycles` counts states the policy did not answer within one period (late or lost): a
bridge running at that rate would have had no fresh command for its next tick.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState

from metaloco.adaptation.runtime import POLICY_KEYS, metadata, session
from metaloco.hardware.robot_config import load_robot
from metaloco.paths import models_dir
from metaloco.ros_pkgs.messages import stamp_nanoseconds, status_values
from metaloco.ros_pkgs.qos import SENSOR_QOS, STATUS_QOS
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery
from metaloco.schema import ConfigError

ECHO_IN, ECHO_OUT = "bench/echo_in", "bench/echo_out"


class EchoNode(Node):
    """Sends every `JointState` on bench/echo_in back on bench/echo_out, untouched."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("bench_echo", **kwargs)
        pub = self.create_publisher(JointState, ECHO_OUT, SENSOR_QOS)
        self.create_subscription(JointState, ECHO_IN, pub.publish, SENSOR_QOS)


class _Client:
    """The bridge's side: sends states, times answers."""

    def __init__(self, context: Any, n: int):
        self.node = Node("bench_control", context=context)
        self.echo_in = self.node.create_publisher(JointState, ECHO_IN, SENSOR_QOS)
        self.joints = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.imu = self.node.create_publisher(Imu, "imu/data", SENSOR_QOS)
        self.sent = {"echo": np.full(n, np.nan), "policy": np.full(n, np.nan)}
        self.rtt = {"echo": np.full(n, np.nan), "policy": np.full(n, np.nan)}
        self.policy_status: dict[str, str] = {}
        self.echo_sub = self.node.create_subscription(JointState, ECHO_OUT, self._answer("echo"), SENSOR_QOS)
        self.cmd_sub = self.node.create_subscription(JointState, "joint_commands", self._answer("policy"), SENSOR_QOS)
        self.node.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, STATUS_QOS)

    def _answer(self, path: str) -> Callable[[JointState], None]:
        sent, rtt = self.sent[path], self.rtt[path]

        def receive(msg: JointState) -> None:
            t = time.perf_counter()
            i = stamp_nanoseconds(msg.header.stamp) - 1  # stamps are 1 + the cycle index, in ns
            if 0 <= i < len(sent) and np.isnan(rtt[i]):
                rtt[i] = t - sent[i]

        return receive

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == "policy_node":
                self.policy_status = status_values(s)

    def matched(self) -> bool:
        return (self.echo_in.get_subscription_count() > 0 and self.joints.get_subscription_count() > 0
                and self.echo_sub.get_publisher_count() > 0 and self.cmd_sub.get_publisher_count() > 0)


def _model_robot(folder: Path) -> str:
    path = folder / "policy.onnx"
    return str(metadata(session(path), path, POLICY_KEYS)["robot"])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: the node's clean exit
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_control(rate_hz: float = 200.0, seconds: float = 30.0, model_dir: str | Path | None = None, *,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Round trips to a bare echo node and to the policy node, side by side.

    Args:
        rate_hz: Cycle rate of both round trips (the policy node runs at this rate too).
        seconds: Measuring time (after start-up and one second of warm-up).
        model_dir: Model folder (default models/a1).
        progress: Called with a line of text now and then (default: stderr).

    Returns:
        {"rate_hz", "echo_p50_ms", "echo_p99_ms", "policy_p50_ms", "policy_p99_ms", "added_p99_ms",
        "missed_cycles", "inference_p50_us"} (DESIGN.md).

    Raises:
        ConfigError: No model in `model_dir`.
        RuntimeError: A server did not start or never answered.
    """
    say = progress or (lambda line: print(f"bench control: {line}", file=sys.stderr, flush=True))
    folder = Path(model_dir) if model_dir else models_dir() / "a1"
    if not (folder / "policy.onnx").is_file():
        raise ConfigError(str(folder), "model_dir", "no policy.onnx here; pass --model-dir <folder of an export>")
    robot = load_robot(_model_robot(folder))
    env = {**os.environ, **ensure_localhost_discovery()}
    logs = tempfile.TemporaryFile("w+")
    servers = [
        subprocess.Popen([sys.executable, "-m", "metaloco.ros_pkgs.bench_control", "--echo"], env=env,
                         stdout=logs, stderr=logs),
        subprocess.Popen([sys.executable, "-m", "metaloco.ros_pkgs.policy_node", "--ros-args",
                          "-p", f"robot:={robot.name}", "-p", f"model_dir:={folder}",
                          "-p", f"rate_hz:={float(rate_hz)}",
                          "-p", "diagnostics_period_s:=0.5", "-p", "cmd_vel_timeout_s:=3600.0"],
                         env=env, stdout=logs, stderr=logs),
    ]
    period = 1.0 / rate_hz
    warmup = int(rate_hz)
    n = warmup + int(round(rate_hz * seconds))
    context = rclpy.Context()
    rclpy.init(context=context)
    client = _Client(context, n)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        say(f"starting the echo and policy nodes ({folder}) ...")
        deadline = time.monotonic() + 60.0
        while not client.matched():
            if time.monotonic() > deadline or any(p.poll() is not None for p in servers):
                logs.seek(0)
                raise RuntimeError(f"the bench servers did not come up: {logs.read()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.5)
        joints, imu = _messages(robot)
        say(f"{rate_hz:g} Hz for {seconds:g} s (+1 s warm-up) ...")
        start = time.perf_counter() + 0.01
        for i in range(n):
            _sleep_until(start + i * period)
            joints.header.stamp.sec, joints.header.stamp.nanosec = 0, i + 1
            client.sent["echo"][i] = time.perf_counter()
            client.echo_in.publish(joints)
            _sleep_until(start + (i + 0.5) * period)
            imu.header.stamp = joints.header.stamp
            client.imu.publish(imu)
            client.sent["policy"][i] = time.perf_counter()
            client.joints.publish(joints)
            if i and i % int(5 * rate_hz) == 0:
                say(f"{i * period:.0f} s")
        time.sleep(max(1.0, 3 * period))
        client.policy_status = {}
        wait = time.monotonic() + 3.0
        while not client.policy_status and time.monotonic() < wait:
            time.sleep(0.05)
        status = dict(client.policy_status)
    finally:
        executor.shutdown(timeout_sec=1.0)
        client.node.destroy_node()
        rclpy.shutdown(context=context)
        for proc in servers:
            _stop(proc)
        logs.close()
    echo, policy = client.rtt["echo"][warmup:] * 1e3, client.rtt["policy"][warmup:] * 1e3
    missed = int(np.sum(~(policy <= period * 1e3)))  # NaN (no answer) counts as missed
    lost = {k: int(np.isnan(v).sum()) for k, v in (("echo", echo), ("policy", policy))}
    say(f"unanswered: echo {lost['echo']}, policy {lost['policy']} of {len(echo)}; policy node counted "
        f"{status.get('missed_cycles', '?')} missed cycles and {status.get('refused', '?')} refused")

    def pct(values: np.ndarray, q: float) -> float | None:
        values = values[~np.isnan(values)]
        return round(float(np.percentile(values, q)), 3) if len(values) else None

    result = {"rate_hz": rate_hz, "echo_p50_ms": pct(echo, 50), "echo_p99_ms": pct(echo, 99),
              "policy_p50_ms": pct(policy, 50), "policy_p99_ms": pct(policy, 99)}
    both = result["policy_p99_ms"] is not None and result["echo_p99_ms"] is not None
    result["added_p99_ms"] = round(result["policy_p99_ms"] - result["echo_p99_ms"], 3) if both else None
    result["missed_cycles"] = missed
    p50 = status.get("inference_p50_us")
    result["inference_p50_us"] = round(float(p50), 1) if p50 else None
    return result


def _messages(robot: Any) -> tuple[JointState, Imu]:
    """A standing robot's state: the default pose, level and still."""
    n = robot.n_joints
    joints = JointState(name=list(robot.joint_names), position=list(map(float, robot.default_joint_pos)),
                        velocity=[0.0] * n, effort=[0.0] * n)
    imu = Imu()
    imu.orientation.w = 1.0
    imu.linear_acceleration.z = 9.81
    return joints, imu


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def main(args: list[str] | None = None) -> int:
    """`python -m metaloco.ros_pkgs.bench_control --echo`: the echo server."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] != ["--echo"]:
        print("usage: python -m metaloco.ros_pkgs.bench_control --echo   (run the bench with "
              "`metaloco bench control`)", file=sys.stderr)
        return 2
    from metaloco.ros_pkgs.launch_xml import run_node

    return run_node(EchoNode, "bench_echo", argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
