"""Conversions between ROS 2 messages and metaloco's types (RobotState, JointCommand, arrays).

Joint arrays in messages are always addressed by name: a `JointState` may list joints in any
order, or carry extra ones; `JointOrder` maps it onto the robot config's order once per distinct
name list. Nothing here decides anything: a message that does not fit raises `MessageError`
with a sentence saying why, and the node turns that into a diagnostic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from metaloco.hardware.interface import JointCommand, RobotState

#: Diagnostic levels (bytes, as the message field is).
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class MessageError(ValueError):
    """A message cannot be used: the text says why (missing joints, NaN, wrong size)."""


class JointOrder:
    """Maps a message's joint names onto a fixed joint order (the robot config's).

    Args:
        joint_names: The order everything else uses.
    """

    def __init__(self, joint_names: Sequence[str]):
        self.joint_names = list(joint_names)
        self._cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def index(self, names: Sequence[str]) -> np.ndarray:
        """Positions in `names` of each of our joints, in our order.

        Raises:
            MessageError: `names` lacks some of our joints.
        """
        key = tuple(names)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        where = {name: i for i, name in enumerate(key)}
        missing = [j for j in self.joint_names if j not in where]
        if missing:
            raise MessageError(f"joint names do not match the model: missing {missing} (message has {list(key)})")
        idx = np.array([where[j] for j in self.joint_names], dtype=np.int64)
        self._cache = (key, idx)
        return idx

    def pick(self, names: Sequence[str], values: Sequence[float], field: str) -> np.ndarray:
        """Our joints' values from a name-addressed array.

        Raises:
            MessageError: Missing joints, an array of the wrong length, or a value that is not finite.
        """
        if len(values) != len(names):
            raise MessageError(f"{field} has {len(values)} values for {len(names)} joint names")
        out = np.asarray(values, dtype=np.float64)[self.index(names)]
        if not np.isfinite(out).all():
            joints = [j for j, ok in zip(self.joint_names, np.isfinite(out), strict=True) if not ok]
            raise MessageError(f"NaN or infinite value in {field} of {joints}")
        return out


def stamp_seconds(stamp: Time) -> float:
    """A header stamp in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_nanoseconds(stamp: Time) -> int:
    """A header stamp in integer nanoseconds (exact; used to match a command to its state)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def state_to_msgs(state: RobotState, joint_names: Sequence[str], stamp: Time,
                  frame_id: str = "base") -> tuple[JointState, Imu]:
    """A driver reading as the `joint_states` and `imu/data` messages."""
    joints = JointState(name=list(joint_names), position=state.joint_pos.tolist(),
                        velocity=state.joint_vel.tolist(), effort=state.joint_torque.tolist())
    joints.header.stamp = stamp
    imu = Imu()
    imu.header.stamp = stamp
    imu.header.frame_id = frame_id
    q = imu.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in state.imu_quat)
    w = imu.angular_velocity
    w.x, w.y, w.z = (float(v) for v in state.imu_ang_vel)
    a = imu.linear_acceleration
    a.x, a.y, a.z = (float(v) for v in state.imu_lin_acc)
    return joints, imu


def state_from_msgs(joints: JointState, imu: Imu, order: JointOrder, effort: bool = True) -> RobotState:
    """A `RobotState` in our joint order from `joint_states` and `imu/data`.

    Args:
        joints: Positions and velocities are required; effort is optional (drivers without torque
            sensing send none).
        imu: Orientation, angular velocity, linear acceleration.
        order: Our joint order.
        effort: Read efforts too (False: zeros; the policy does not observe torques).

    Raises:
        MessageError: Missing joints, missing velocities, or a value that is not finite.
    """
    pos = order.pick(joints.name, joints.position, "joint_states.position")
    vel = order.pick(joints.name, joints.velocity, "joint_states.velocity")
    torque = np.zeros(len(pos))
    if effort and len(joints.effort):
        torque = order.pick(joints.name, joints.effort, "joint_states.effort")
    q, w, a = imu.orientation, imu.angular_velocity, imu.linear_acceleration
    values = np.array([q.x, q.y, q.z, q.w, w.x, w.y, w.z, a.x, a.y, a.z])
    if not np.isfinite(values).all():
        bad = [name for name, part in (("orientation", values[:4]), ("angular_velocity", values[4:7]),
                                       ("linear_acceleration", values[7:])) if not np.isfinite(part).all()]
        raise MessageError(f"NaN or infinite value in imu/data.{bad[0]}")
    quat = values[:4]
    norm = float(np.sqrt(quat @ quat))
    if abs(norm - 1.0) > 0.05:
        raise MessageError(f"imu/data.orientation is not a unit quaternion (norm {norm:.3f})")
    return RobotState(stamp_s=stamp_seconds(joints.header.stamp), joint_pos=pos, joint_vel=vel, joint_torque=torque,
                      imu_quat=quat, imu_ang_vel=values[4:7], imu_lin_acc=values[7:])


def targets_to_msg(targets: np.ndarray, joint_names: Sequence[str], stamp: Time) -> JointState:
    """Joint position targets as a `joint_commands` message (positions only: the gains are the robot YAML's)."""
    msg = JointState(name=list(joint_names), position=np.asarray(targets, dtype=np.float64).tolist())
    msg.header.stamp = stamp
    return msg


def command_from_msg(msg: JointState, order: JointOrder, kp: np.ndarray, kd: np.ndarray) -> JointCommand:
    """A `joint_commands` message as PD targets with the robot's gains.

    Raises:
        MessageError: Missing joints or a value that is not finite.
    """
    return JointCommand(position=order.pick(msg.name, msg.position, "joint_commands.position"), kp=kp, kd=kd)


def twist_to_command(msg: Twist) -> np.ndarray:
    """`cmd_vel` as the policy's (vx, vy, yaw_rate)."""
    return np.array([msg.linear.x, msg.linear.y, msg.angular.z])


def float_array(parts: Mapping[str, np.ndarray]) -> Float32MultiArray:
    """A `Float32MultiArray` of named parts laid end to end; the layout names each part and its size."""
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=len(v), stride=len(v)) for label, v in parts.items()]
    msg.data = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in parts.values()]).tolist()
    return msg


def split_float_array(msg: Float32MultiArray) -> dict[str, np.ndarray]:
    """The named parts of a message made by `float_array` (a layout-less message is one part, "data").

    Raises:
        MessageError: The layout's sizes do not add up to the data.
    """
    data = np.asarray(msg.data, dtype=np.float32)
    if not msg.layout.dim:
        return {"data": data}
    sizes = [d.size for d in msg.layout.dim]
    if sum(sizes) != len(data):
        raise MessageError(f"layout sizes {sizes} do not add up to {len(data)} values")
    bounds = np.cumsum([0] + sizes)
    return {d.label: data[a:b] for d, a, b in zip(msg.layout.dim, bounds[:-1], bounds[1:], strict=True)}


def status(name: str, level: bytes, message: str, values: Mapping[str, object] | None = None,
           hardware_id: str = "") -> DiagnosticStatus:
    """One `DiagnosticStatus` (level: `OK`, `WARN` or `ERROR`) with its key/values as strings."""
    out = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    out.values = [KeyValue(key=str(k), value=_text(v)) for k, v in (values or {}).items()]
    return out


def diagnostic_array(stamp: Time, *statuses: DiagnosticStatus) -> DiagnosticArray:
    msg = DiagnosticArray(status=list(statuses))
    msg.header.stamp = stamp
    return msg


def status_values(msg: DiagnosticStatus) -> dict[str, str]:
    """A status's key/values as a dict."""
    return {kv.key: kv.value for kv in msg.values}


def level_of(msg: DiagnosticStatus) -> int:
    """A status's level as an int (it is a byte in some distros)."""
    return msg.level[0] if isinstance(msg.level, bytes) else int(msg.level)


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return str(value)
