"""`recorder` node: records the metaloco graph to a rosbag2 directory (MCAP storage).

Messages are taken from DDS as raw CDR bytes (`raw=True` subscriptions) and
written as they are, stamped with their receive time, so nothing is decoded or
re-serialised on the way. The bag is split into one complete MCAP file per
flush period (see `metaloco.adaptation.bag`): a recorder killed with SIGKILL
leaves a bag that every rosbag2 reader opens, missing at most the last period.

Run it with `recorder --ros-args -p output_dir:=trial/bag` (or
`python -m metaloco.ros_pkgs.recorder ...`); Ctrl-C or SIGTERM close it cleanly.
Every flush it publishes its counts on `diagnostics`; on exit it prints them as
one JSON line.

With `use_sim_time:=true` (as `ros2 bag record --use-sim-time`) messages are stamped
with the simulator's `/clock`, and the bag says so (custom_data `metaloco.clock: sim`);
messages that arrive before the first `/clock` have no time to be stamped with and
are counted in `unclocked` instead of written.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from metaloco.adaptation.bag import BagError, SegmentedBagWriter, topic_name
from metaloco.ros_pkgs.qos import STATUS_QOS, qos_for, recording_qos
from metaloco.ros_pkgs.ros_env import ensure_localhost_discovery

#: The contract topics (DESIGN.md, "ROS 2 graph") and their types.
RECORDED_TOPICS: dict[str, str] = {
    "joint_states": "sensor_msgs/msg/JointState",
    "imu/data": "sensor_msgs/msg/Imu",
    "cmd_vel": "geometry_msgs/msg/Twist",
    "joint_commands": "sensor_msgs/msg/JointState",
    "policy/obs_action": "std_msgs/msg/Float32MultiArray",
    "adaptation/latent": "std_msgs/msg/Float32MultiArray",
    "adaptation/status": "diagnostic_msgs/msg/DiagnosticArray",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "estop": "std_msgs/msg/Bool",
    "sim/events": "std_msgs/msg/String",
}


def message_class(msgtype: str) -> type:
    """The rclpy message class of a ROS type name such as "sensor_msgs/msg/JointState"."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def parse_topic(entry: str) -> tuple[str, str]:
    """A `topics` parameter entry: a contract topic name, or "name=pkg/msg/Type" for any other.

    Raises:
        ValueError: An unknown topic without a type.
    """
    name, _, msgtype = entry.partition("=")
    name = name.strip().lstrip("/")
    if msgtype:
        return name, msgtype.strip()
    if name not in RECORDED_TOPICS:
        raise ValueError(f"topic {name!r} is not a contract topic ({', '.join(RECORDED_TOPICS)}); "
                         f"give its type as '{name}=package/msg/Type'")
    return name, RECORDED_TOPICS[name]


def bag_qos(profile: QoSProfile) -> Qos:
    """The rosbags form of a QoS profile, stored as the topic's offered_qos_profiles."""
    zero = QosTime(0, 0)  # "unspecified": the rmw default (infinite)
    return Qos(
        QosHistory(int(profile.history)), profile.depth, QosReliability(int(profile.reliability)),
        QosDurability(int(profile.durability)), zero, zero, QosLiveliness.AUTOMATIC, zero, False,
    )


class Recorder(Node):
    """Subscribes to the graph's topics and writes every message to a split rosbag2/MCAP bag.

    Parameters: `output_dir` (the bag directory; refused if it exists), `topics`, `flush_period_s`,
    `scenario` and `method` (stored in the bag's custom_data for reports).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.declare_parameter("output_dir", "", ParameterDescriptor(
            description="Bag directory to create (rosbag2, MCAP storage); an existing one is refused."))
        self.declare_parameter("topics", list(RECORDED_TOPICS), ParameterDescriptor(
            description="Topics to record: contract names, or 'name=package/msg/Type' for others."))
        self.declare_parameter("flush_period_s", 1.0, ParameterDescriptor(
            description="Seconds per bag segment: the most a killed recorder loses.",
            floating_point_range=[FloatingPointRange(from_value=0.05, to_value=600.0)]))
        self.declare_parameter("scenario", "", ParameterDescriptor(description="Scenario name, kept in the bag."))
        self.declare_parameter("method", "", ParameterDescriptor(
            description="Method (adaptive, nominal, ...), kept in the bag."))

        output_dir = self.get_parameter("output_dir").value
        if not output_dir:
            raise ValueError("parameter output_dir is required (e.g. -p output_dir:=trial/bag)")
        topics = [parse_topic(e) for e in self.get_parameter("topics").value]
        period = float(self.get_parameter("flush_period_s").value)

        #: Messages handed over by DDS, per fully qualified topic.
        self.received: dict[str, int] = {}
        #: use_sim_time: messages left out because no /clock had arrived yet, per topic.
        self.unclocked: dict[str, int] = {}
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.writer = SegmentedBagWriter(output_dir)
        if self.sim_time:
            self.writer.custom["metaloco.clock"] = "sim"
        for key in ("scenario", "method"):
            if value := self.get_parameter(key).value:
                self.writer.custom[f"metaloco.{key}"] = value
        for name, msgtype in topics:
            full = topic_name(self.resolve_topic_name(name))
            self.writer.add_topic(full, msgtype, [bag_qos(qos_for(name))])
            self.received[full] = 0
            self.create_subscription(message_class(msgtype), name, self._recorder_for(full), recording_qos(name),
                                     raw=True)
        #: Set by close(); nothing is written after it.
        self.closed = False
        self._diagnostics = self.create_publisher(DiagnosticArray, "diagnostics", STATUS_QOS)
        self.create_timer(period, self.flush)
        self.get_logger().info(f"recording {len(topics)} topics to {output_dir} (segments of {period:g} s)")

    def _recorder_for(self, topic: str) -> Callable[[bytes], None]:
        def record(data: bytes) -> None:
            if self.closed:  # the node may still spin after close() in an in-process graph
                return
            self.received[topic] += 1
            stamp = self.get_clock().now().nanoseconds
            if stamp == 0 and self.sim_time:
                self.unclocked[topic] = self.unclocked.get(topic, 0) + 1
                return
            self.writer.write(topic, stamp, data)

        return record

    def summary(self) -> dict[str, Any]:
        """Counts so far: messages received and written per topic, segments closed, bag bytes."""
        files = [self.writer.path / s["path"] for s in self.writer.segments]
        return {
            "bag": str(self.writer.path),
            "received": dict(self.received),
            "written": dict(self.writer.counts),
            "unclocked": dict(self.unclocked),
            "segments": len(files),
            "bytes": sum(f.stat().st_size for f in files if f.exists()),
        }

    def flush(self) -> None:
        """Close the current segment and publish the counts on `diagnostics`."""
        if self.closed:
            return
        self.writer.flush()
        summary = self.summary()
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="recorder", message=summary["bag"])
        status.values = [KeyValue(key=f"received:{t}", value=str(n)) for t, n in summary["received"].items()]
        status.values += [KeyValue(key=k, value=str(summary[k])) for k in ("segments", "bytes")]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    def close(self) -> dict[str, Any]:
        """Write the last segment and mark the bag complete.

        Returns:
            The final summary.
        """
        if not self.closed:
            self.writer.close()
            self.closed = True
        return self.summary()


def main(args: list[str] | None = None) -> int:
    """Entry point of the `recorder` console script."""
    ensure_localhost_discovery()
    rclpy.init(args=args)
    node = None
    try:
        node = Recorder()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, BagError, ParameterException) as exc:  # bad parameters, or a bag directory that exists
        print(f"recorder: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            print(json.dumps(node.close()), flush=True)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


#: The A1's joints (config/robots/a1.yaml), so the benchmark's JointState has the real size.
_BENCH_JOINTS = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "upper", "lower")]


def _bench_messages(i: int, stamp: Any) -> tuple[Any, Any]:
    from sensor_msgs.msg import Imu, JointState

    x = 0.001 * i
    joints = JointState(name=_BENCH_JOINTS, position=[x] * 12, velocity=[-x] * 12, effort=[2 * x] * 12)
    joints.header.stamp = stamp
    imu = Imu()
    imu.header.stamp = stamp
    imu.orientation.w = 1.0
    imu.angular_velocity.x = x
    imu.linear_acceleration.z = 9.81
    return joints, imu


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def bench_recorder(rate_hz: float = 200.0, seconds: float = 600.0, *, flush_period_s: float = 1.0,
                   keep_bag: str | Path | None = None,
                   progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Recorder throughput: JointState (12 joints) + Imu at `rate_hz` through real DDS on loopback.

    The recorder runs as its own process (as in a trial); this process publishes with the contract's
    sensor QoS on a deadline-scheduled loop, then stops the recorder with SIGINT and counts what the
    bag holds by reading every message back.

    Args:
        rate_hz: Publishing rate of each topic.
        seconds: How long to publish.
        flush_period_s: The recorder's segment length.
        keep_bag: Write the bag here and keep it (default: a temporary directory, removed after).
        progress: Called with the fraction done, about once a second.

    Returns:
        {"rate_hz", "seconds", "achieved_rate_hz", "late_ticks", "published", "received", "recorded",
        "lost", "bag_bytes", "bag_bytes_per_min", "segments", "recorder_cpu_percent"}; per-topic
        figures are dicts keyed by topic.

    Raises:
        RuntimeError: The recorder did not start or its subscriptions never matched.
    """
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Imu, JointState

    from metaloco.ros_pkgs.qos import SENSOR_QOS

    env = {**os.environ, **ensure_localhost_discovery()}
    tmp = Path(tempfile.mkdtemp(prefix="metaloco-bench-recorder-"))
    bag = Path(keep_bag) if keep_bag else tmp / "bag"
    log = (tmp / "recorder.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaloco.ros_pkgs.recorder", "--ros-args", "-p", f"output_dir:={bag}",
         "-p", "topics:=[joint_states, imu/data]", "-p", f"flush_period_s:={flush_period_s}"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("recorder_bench", context=context)
    try:
        pubs = {"/joint_states": node.create_publisher(JointState, "joint_states", SENSOR_QOS),
                "/imu/data": node.create_publisher(Imu, "imu/data", SENSOR_QOS)}
        deadline = time.monotonic() + 60.0
        while min(p.get_subscription_count() for p in pubs.values()) < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"recorder never subscribed (exit code {proc.poll()}): {log.read()[-2000:]}")
            time.sleep(0.05)
        time.sleep(1.0)  # let the recorder's side of discovery finish too: best-effort data sent before is lost

        cpu_start = _cpu_seconds(proc.pid)
        published = dict.fromkeys(pubs, 0)
        period, ticks, late = 1.0 / rate_hz, int(round(rate_hz * seconds)), 0
        start = next_tick = time.perf_counter()
        for i in range(ticks):
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                late += 1
            joints, imu = _bench_messages(i, node.get_clock().now().to_msg())
            pubs["/joint_states"].publish(joints)
            pubs["/imu/data"].publish(imu)
            published["/joint_states"] += 1
            published["/imu/data"] += 1
            next_tick += period
            if progress and i % max(1, int(rate_hz)) == 0:
                progress(i / ticks)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(proc.pid)
        cpu = cpu - cpu_start if cpu is not None and cpu_start is not None else None
        time.sleep(flush_period_s + 1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        lines = [x for x in out.splitlines() if x.startswith("{")]
        received = json.loads(lines[-1])["received"] if lines else {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.destroy_node()
        rclpy.shutdown(context=context)
        log.close()

    recorded = dict.fromkeys(pubs, 0)
    with Reader(bag) as reader:
        for conn, _, _ in reader.messages():
            recorded[conn.topic] = recorded.get(conn.topic, 0) + 1
    files = list(bag.glob("*.mcap"))
    size = sum(f.stat().st_size for f in files) + (bag / "metadata.yaml").stat().st_size
    if not keep_bag:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rate_hz": rate_hz,
        "seconds": seconds,
        "achieved_rate_hz": round(published["/joint_states"] / elapsed, 2),
        "late_ticks": late,
        "published": published,
        "received": {t: received.get(t, 0) for t in pubs},
        "recorded": recorded,
        "lost": sum(published.values()) - sum(recorded[t] for t in pubs),
        "bag_bytes": size,
        "bag_bytes_per_min": round(size / (elapsed / 60.0)),
        "segments": len(files),
        "recorder_cpu_percent": round(100.0 * cpu / elapsed, 1) if cpu is not None else None,
    }


if __name__ == "__main__":
    sys.exit(main())
