"""rosbag2 (MCAP) bags of a metaloco graph: a crash-tolerant writer and a reader into numpy series.

Writing. `rosbags`' MCAP writer keeps the current chunk (up to 1 MiB) in memory
and writes the summary and footer only when it closes, and metadata.yaml only
then too: a process killed with SIGKILL leaves a file that no reader opens.
`SegmentedBagWriter` therefore writes a *split* bag, as `ros2 bag record
--max-bag-duration` does: every flush period the current segment is closed
(a complete MCAP file with summary and footer, written under a hidden name and
then renamed into place) and metadata.yaml is rewritten atomically to list it.
At any instant the directory is a valid rosbag2 bag of every closed segment, so
a killed recorder loses at most the last flush period, and what it leaves is
read by `rosbags`, `ros2 bag info` and Foxglove (which opens the .mcap files)
without any repair. The segment being written when the process died stays
behind as a hidden `.NAME_K/` folder that no reader looks at. Files are not
fsync'ed: this survives the death of the process, not of the machine.

Reading. `read_bag` decodes the contract topics of DESIGN.md into arrays, with
times in seconds from the first message of the bag.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import dump_qos_v9
from rosbags.typesys import Stores, get_typestore

#: Message definitions of the installed ROS 2 distro (Kilted; Jazzy's hashes are the same for these types).
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BAG_VERSION = 9
#: custom_data key set when the writer closed cleanly.
CLOSED_KEY = "metaloco.closed"
#: custom_data key: the model folder a trial's policy node ran (adaptation off may run before_phase3/).
MODEL_KEY = "metaloco.model"
#: custom_data key: the trial's time 0 (integer ns on the clock that stamped the bag), as the trial runner saw it.
START_KEY = "metaloco.start_ns"


class BagError(RuntimeError):
    """A bag that cannot be written or read, with the path and what is wrong."""


def topic_name(topic: str) -> str:
    """Fully qualified topic name, as rosbag2 stores it ("joint_states" -> "/joint_states")."""
    return topic if topic.startswith("/") else "/" + topic


class SegmentedBagWriter:
    """Writes a split rosbag2/MCAP bag whose closed segments are always readable.

    Args:
        path: Bag directory to create; refused if it exists.

    Attributes:
        counts: Messages written so far per topic (closed and open segments).
        segments: The closed segments as metadata.yaml lists them (file name, start, duration, count).
        custom: Key-values for metadata.yaml's custom_data (scenario, method, closed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag directory {self.path} already exists; choose a new one (nothing was overwritten)")
        self.path.mkdir(parents=True)
        self.name = self.path.name
        self._topics: dict[str, tuple[str, list[Qos], str, str]] = {}
        self.counts: dict[str, int] = {}
        self.segments: list[dict[str, Any]] = []
        self.custom: dict[str, str] = {}
        self._segment: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._segment_counts: dict[str, int] = {}
        self._write_metadata()

    def add_topic(self, topic: str, msgtype: str, offered_qos: list[Qos] | None = None) -> None:
        """Register a topic; it is listed in metadata.yaml even if no message arrives.

        Args:
            topic: Topic name.
            msgtype: ROS type name, e.g. "sensor_msgs/msg/JointState".
            offered_qos: The publishers' QoS, stored so `ros2 bag play` can offer it again.
        """
        msgdef, _ = TYPESTORE.generate_msgdef(msgtype, ros_version=2)
        self._topics[topic_name(topic)] = (msgtype, list(offered_qos or []), msgdef, TYPESTORE.hash_rihs01(msgtype))
        self.counts.setdefault(topic_name(topic), 0)
        self._write_metadata()

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one CDR-serialised message to the open segment.

        Args:
            topic: A registered topic.
            timestamp_ns: Receive time (ns since the epoch).
            data: The message as CDR bytes (with the encapsulation header), as rclpy hands them over.
        """
        name = topic_name(topic)
        if self._segment is None:
            hidden = self.path / f".{self.name}_{len(self.segments)}"
            shutil.rmtree(hidden, ignore_errors=True)
            self._segment = Writer(hidden, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            self._segment.open()
        if name not in self._connections:
            if name not in self._topics:
                raise BagError(f"{self.path}: topic {name} was never registered with add_topic()")
            msgtype, qos, msgdef, rihs01 = self._topics[name]
            self._connections[name] = self._segment.add_connection(
                name, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=qos
            )
        self._segment.write(self._connections[name], timestamp_ns, data)
        self._segment_counts[name] = self._segment_counts.get(name, 0) + 1
        self.counts[name] += 1

    def flush(self) -> None:
        """Close the open segment (if it holds messages) and list it in metadata.yaml."""
        if self._segment is None:
            return
        writer, self._segment = self._segment, None
        writer.close()
        file_name = f"{self.name}_{len(self.segments)}.mcap"
        os.replace(writer.path / f"{writer.path.name}.mcap", self.path / file_name)
        shutil.rmtree(writer.path)
        start, end = writer.min_timestamp, writer.max_timestamp
        self.segments.append(
            {
                "path": file_name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": end - start},
                "message_count": sum(self._segment_counts.values()),
            }
        )
        self._connections.clear()
        self._segment_counts.clear()
        self._write_metadata()

    def close(self) -> None:
        """Flush the last segment and mark the bag as cleanly closed."""
        self.flush()
        self.custom[CLOSED_KEY] = "true"
        self._write_metadata()

    def _flushed_counts(self) -> dict[str, int]:
        return {t: n - self._segment_counts.get(t, 0) for t, n in self.counts.items()}

    def _write_metadata(self) -> None:
        counts = self._flushed_counts()
        start = min((s["starting_time"]["nanoseconds_since_epoch"] for s in self.segments), default=0)
        end = max(
            (s["starting_time"]["nanoseconds_since_epoch"] + s["duration"]["nanoseconds"] for s in self.segments),
            default=0,
        )
        info = {
            "version": BAG_VERSION,
            "storage_identifier": "mcap",
            "relative_file_paths": [s["path"] for s in self.segments],
            "duration": {"nanoseconds": end - start},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(counts.values()),
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": name,
                        "type": msgtype,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": dump_qos_v9(qos),
                        "type_description_hash": rihs01,
                    },
                    "message_count": counts[name],
                }
                for name, (msgtype, qos, _, rihs01) in self._topics.items()
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": self.segments,
            "custom_data": dict(self.custom) or None,
            "ros_distro": "kilted",
        }
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False), "utf8")
        os.replace(tmp, self.path / "metadata.yaml")


@dataclass
class TopicSeries:
    """One topic decoded into arrays; `t` is seconds since the bag's first message.

    Fields by type: JointState `name` (list), `position`/`velocity`/`effort` (N x J, NaN where absent);
    Imu `orientation` (N x 4, xyzw), `angular_velocity`, `linear_acceleration` (N x 3); Twist `linear`,
    `angular` (N x 3); Float32MultiArray `data` (N x K, NaN-padded); Bool/String `data`; DiagnosticArray one
    row per status: `t`, `name`, `level`, `message`, `values` (dict of key -> string).
    """

    topic: str
    msgtype: str
    t: np.ndarray
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class BagSeries:
    """A whole bag as time series, one `TopicSeries` per topic that holds messages."""

    path: Path
    start_ns: int
    counts: dict[str, int]
    topics: dict[str, TopicSeries]
    custom: dict[str, str]

    @property
    def complete(self) -> bool:
        """Whether the recorder closed the bag; False for a killed recording."""
        return self.custom.get(CLOSED_KEY) == "true"

    @property
    def duration_s(self) -> float:
        return max((float(s.t[-1]) for s in self.topics.values() if len(s)), default=0.0)

    def topic(self, name: str) -> TopicSeries:
        """The series of a topic, or a BagError naming it and what the bag holds."""
        key = topic_name(name)
        if key not in self.topics:
            present = ", ".join(sorted(self.topics)) or "none"
            raise BagError(f"bag {self.path} has no messages on {key} (topics with messages: {present})")
        return self.topics[key]

    def has(self, name: str) -> bool:
        return topic_name(name) in self.topics


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _joint_state(msgs: list[Any]) -> dict[str, Any]:
    names = list(msgs[0].name)
    cols = {n: i for i, n in enumerate(names)}
    out = {key: np.full((len(msgs), len(names)), np.nan) for key in ("position", "velocity", "effort")}
    for row, msg in enumerate(msgs):
        for key in out:
            values = getattr(msg, key)
            for name, value in zip(msg.name, values):
                if name in cols:  # joints are addressed by name; order may differ between messages
                    out[key][row, cols[name]] = value
    return {"name": names, **out}


def _vec3(v: Any) -> list[float]:
    return [v.x, v.y, v.z]


def _diagnostics(msgs: list[Any], t: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    rows = [(ti, s) for ti, m in zip(t, msgs) for s in m.status]
    return np.array([r[0] for r in rows], dtype=float), {
        "name": [s.name for _, s in rows],
        "level": np.array([int(s.level) for _, s in rows], dtype=int),
        "message": [s.message for _, s in rows],
        "values": [{kv.key: kv.value for kv in s.values} for _, s in rows],
    }


def _decode(msgtype: str, msgs: list[Any], t: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    short = msgtype.rsplit("/", 1)[-1]
    if short == "JointState":
        return t, _joint_state(msgs)
    if short == "Imu":
        return t, {
            "orientation": np.array([[m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w]
                                     for m in msgs]),
            "angular_velocity": np.array([_vec3(m.angular_velocity) for m in msgs]),
            "linear_acceleration": np.array([_vec3(m.linear_acceleration) for m in msgs]),
        }
    if short == "Twist":
        return t, {"linear": np.array([_vec3(m.linear) for m in msgs]),
                   "angular": np.array([_vec3(m.angular) for m in msgs])}
    if short == "Float32MultiArray":
        return t, {"data": _stack([np.asarray(m.data, dtype=float) for m in msgs])}
    if short == "Bool":
        return t, {"data": np.array([bool(m.data) for m in msgs])}
    if short == "String":
        return t, {"data": [m.data for m in msgs]}
    if short == "DiagnosticArray":
        return _diagnostics(msgs, t)
    return t, {}


def resolve_bag_dir(path: str | Path) -> Path:
    """The rosbag2 directory for a bag path or a trial directory holding `bag/`.

    Raises:
        BagError: Nothing there, or no metadata.yaml.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}: the directory does not exist")
    if (path / "bag" / "metadata.yaml").is_file():
        return path / "bag"
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml in it or in {path / 'bag'})")
    return path


def read_bag(path: str | Path, topics: list[str] | None = None) -> BagSeries:
    """Read a bag (also one whose recorder was killed) into time series.

    Args:
        path: Bag directory, or a trial directory with the bag in `bag/`.
        topics: Only these topics (all when None).

    Returns:
        The decoded bag.

    Raises:
        BagError: Missing or unreadable bag.
    """
    bag_dir = resolve_bag_dir(path)
    wanted = {topic_name(t) for t in topics} if topics else None
    try:
        with Reader(bag_dir) as reader:
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            raw: dict[str, tuple[str, list[int], list[Any]]] = {c.topic: (c.msgtype, [], []) for c in conns}
            for conn, stamp, data in reader.messages(connections=conns) if conns else ():  # [] means "all"
                raw[conn.topic][1].append(stamp)
                raw[conn.topic][2].append(TYPESTORE.deserialize_cdr(data, conn.msgtype))
            counts = {c.topic: c.msgcount for c in reader.connections}
            start = reader.start_time if reader.message_count else 0  # the bag's first message, of any topic
    except Exception as exc:  # rosbags raises several types; name the bag either way
        raise BagError(f"cannot read bag {bag_dir}: {exc}") from exc
    meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text("utf8"))["rosbag2_bagfile_information"]
    custom = meta.get("custom_data") or {}
    series = {}
    for name, (msgtype, stamps, msgs) in sorted(raw.items()):
        if msgs:
            t = (np.asarray(stamps, dtype=np.int64) - start) / 1e9
            t, fields = _decode(msgtype, msgs, t)
            series[name] = TopicSeries(name, msgtype, t, fields)
    return BagSeries(bag_dir, start, counts, series, {str(k): str(v) for k, v in custom.items()})


def diagnostic_values(series: TopicSeries, key: str, name_contains: str = "") -> tuple[np.ndarray, list[str]]:
    """Times and values of one key-value across the statuses of a DiagnosticArray topic.

    Args:
        series: A decoded DiagnosticArray topic.
        key: The key to look for.
        name_contains: Only statuses whose name contains this.

    Returns:
        (times in s, values as strings), for each status that carries the key.
    """
    rows = [(t, v[key]) for t, n, v in zip(series.t, series["name"], series["values"])
            if key in v and name_contains in n]
    return np.array([r[0] for r in rows], dtype=float), [r[1] for r in rows]
