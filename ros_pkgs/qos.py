"""QoS profiles of the metaloco graph (DESIGN.md, "ROS 2 graph").

Sensor and command streams are best-effort, keep-last depth 1: a late sample is
worthless to a 50-200 Hz control loop, and the newest one replaces it. Status and
events are reliable: a missed fault event or adaptation status changes what a
trial means.

A recorder is the exception to "depth 1": it must keep every sample it is
handed while it is busy writing, so `recording_qos()` deepens the queue but
keeps the reliability of the stream (a reliable subscription would not match a
best-effort publisher).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: Sensor and command streams (joint_states, imu/data, policy/obs_action, cmd_vel, joint_commands,
#: adaptation/latent): only the newest sample matters, a late one is worthless.
LATEST_QOS = QoSProfile(
    reliability=ReliabilityPolicy.BEST_EFFORT,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    durability=DurabilityPolicy.VOLATILE,
)
#: Status and events (adaptation/status, diagnostics, estop, sim/events): every message delivered.
RELIABLE_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    durability=DurabilityPolicy.VOLATILE,
)
SENSOR_QOS = COMMAND_QOS = LATEST_QOS
STATUS_QOS = EVENT_QOS = RELIABLE_QOS

#: The profile each contract topic is published with.
TOPIC_QOS: dict[str, QoSProfile] = {
    "joint_states": SENSOR_QOS,
    "imu/data": SENSOR_QOS,
    "policy/obs_action": SENSOR_QOS,
    "cmd_vel": COMMAND_QOS,
    "joint_commands": COMMAND_QOS,
    "adaptation/latent": COMMAND_QOS,
    "adaptation/status": STATUS_QOS,
    "diagnostics": STATUS_QOS,
    "estop": EVENT_QOS,
    "sim/events": EVENT_QOS,
}

#: Queue depth of a recorder subscription: 5 s of a 200 Hz stream.
RECORDING_DEPTH = 1000


def qos_for(topic: str) -> QoSProfile:
    """The contract profile of a topic.

    Args:
        topic: Topic name without a leading slash, e.g. "joint_states".

    Returns:
        Its profile; topics outside the contract get STATUS_QOS (reliable).
    """
    return TOPIC_QOS.get(topic.lstrip("/"), STATUS_QOS)


def recording_qos(topic: str, depth: int = RECORDING_DEPTH) -> QoSProfile:
    """The profile a recorder subscribes with: the topic's reliability, a deep queue.

    Args:
        topic: Topic name.
        depth: Samples kept while the recorder is busy.

    Returns:
        A new profile compatible with the topic's publishers.
    """
    base = qos_for(topic)
    return QoSProfile(
        reliability=base.reliability,
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=base.durability,
    )
