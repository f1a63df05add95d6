"""Reports from bags written without a running graph: determinism, comparison, killed bags, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metaloco.adaptation.bag import START_KEY, TYPESTORE, BagError, SegmentedBagWriter, read_bag
from metaloco.adaptation.metrics import EVAL_KEYS
from metaloco.adaptation.report import from_trial_start, regenerate_report, trial_episode, trial_metrics, write_report

T0_NS = 1_700_000_000_000_000_000
JOINTS = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "upper", "lower")]
TOPICS = {
    "joint_states": "sensor_msgs/msg/JointState",
    "cmd_vel": "geometry_msgs/msg/Twist",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "sim/events": "std_msgs/msg/String",
    "adaptation/latent": "std_msgs/msg/Float32MultiArray",
    "adaptation/status": "diagnostic_msgs/msg/DiagnosticArray",
}


def _msg(kind: str, **fields):
    return TYPESTORE.types[kind](**fields)


def _cdr(msg) -> bytes:
    return TYPESTORE.serialize_cdr(msg, msg.__msgtype__)


def write_trial_bag(path: Path, recover_at: float, *, method: str = "adaptive", close: bool = True,
                    duration: float = 6.0, dt: float = 0.02, with_velocity: bool = True,
                    events: list[dict] | None = None) -> SegmentedBagWriter:
    """A trial walking at 0.5 m/s, slowed to 0.1 m/s by a fault at 2 s until `recover_at`; 1 s segments.

    `events` are the /sim/events messages written on the 2 s tick (default: the FR knee locks, due at 2 s).
    """
    events = events or [{"t": 2.0, "fault": {"joint": "FR_lower_joint", "mode": "locked"}}]
    writer = SegmentedBagWriter(path)
    for topic, msgtype in TOPICS.items():
        writer.add_topic(topic, msgtype)
    writer.custom.update({"metaloco.scenario": "synthetic_fault", "metaloco.method": method})
    header = _msg("std_msgs/msg/Header", stamp=_msg("builtin_interfaces/msg/Time", sec=0, nanosec=0), frame_id="")
    vec = lambda x: _msg("geometry_msgs/msg/Vector3", x=x, y=0.0, z=0.0)  # noqa: E731
    steps = int(round(duration / dt))
    for i in range(steps + 1):
        t = i * dt
        ns = T0_NS + int(round(t * 1e9))
        vx = 0.1 if 2.0 <= t < recover_at else 0.5
        if i % 5 == 0:
            writer.write("cmd_vel", ns, _cdr(_msg("geometry_msgs/msg/Twist", linear=vec(0.5), angular=vec(0.0))))
            writer.write("adaptation/latent", ns, _cdr(_msg(
                "std_msgs/msg/Float32MultiArray", layout=_msg("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0),
                data=np.array([t / 6, vx], dtype=np.float32))))
            status = _msg("diagnostic_msgs/msg/DiagnosticStatus", level=0, name="adaptation", hardware_id="",
                          message="change detected" if t >= 2.2 else "nominal",
                          values=[_msg("diagnostic_msgs/msg/KeyValue", key="suspected_joint",
                                       value="FR_lower_joint" if t >= 2.2 else "")])
            writer.write("adaptation/status", ns, _cdr(_msg("diagnostic_msgs/msg/DiagnosticArray", header=header,
                                                             status=[status])))
        writer.write("joint_states", ns, _cdr(_msg(
            "sensor_msgs/msg/JointState", header=header, name=JOINTS, position=np.zeros(12),
            velocity=np.full(12, 2.0), effort=np.full(12, 3.0 if t >= 2.0 else 1.0))))
        values = [("fallen", "false"), ("mass_kg", "12.0")] + ([("base_vx", repr(vx))] if with_velocity else [])
        bridge = _msg("diagnostic_msgs/msg/DiagnosticStatus", level=0, name="robot_bridge", message="active",
                      hardware_id="", values=[_msg("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in values])
        writer.write("diagnostics", ns, _cdr(_msg("diagnostic_msgs/msg/DiagnosticArray", header=header,
                                                   status=[bridge])))
        if abs(t - 2.0) < 1e-9:
            for event in events:
                writer.write("sim/events", ns, _cdr(_msg("std_msgs/msg/String", data=json.dumps(event))))
        if i % 50 == 49:
            writer.flush()
    if close:
        writer.close()
    return writer


def test_report_regenerates_identically_from_the_same_bag(tmp_path):
    write_trial_bag(tmp_path / "trial" / "bag", recover_at=2.8)
    first = regenerate_report(tmp_path / "trial")  # what `metaloco report DIR` does
    assert first == tmp_path / "trial" / "report.md"
    text = first.read_text()
    first.unlink()
    second = regenerate_report(tmp_path / "trial" / "bag")  # given the bag itself: same place, same file
    assert second == first and second.read_text() == text
    for name in ("speed.png", "latent.png", "torques_event_1.png"):
        assert (tmp_path / "trial" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    metrics = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert tuple(metrics) == EVAL_KEYS
    # back to 0.5 m/s at 2.8 s; the stride average (0.5 s) is within 0.1 m/s a quarter window later
    assert metrics["recovery_time_s"] == pytest.approx(0.8 + 0.125, abs=0.021)
    assert metrics["distance_m"] == pytest.approx(0.5 * 6.0 - 0.4 * 0.8, abs=0.02)
    assert f"| recovery_time_s | {metrics['recovery_time_s']:.3f} |" in text
    assert "FR_lower_joint" in text and "change detected" in text


def test_two_events_seen_on_one_tick_keep_their_own_due_times(tmp_path):
    late = {"t": 1.96, "fault": {"joint": "FR_lower_joint", "mode": "locked"}}
    on_time = {"t": 2.0, "terrain": {"friction": 0.3}}
    write_trial_bag(tmp_path / "trial" / "bag", recover_at=2.8, events=[late, on_time])
    text = regenerate_report(tmp_path / "trial").read_text()
    assert "| 1 | 2.000 | 1.960 | `fault FR_lower_joint locked` |" in text, text
    assert "| 2 | 2.000 | 2.000 | `terrain friction=0.3` |" in text, text
    # and each phase between them names the event that started it
    assert "| 1 | 2.000 | 2.000 | `fault FR_lower_joint locked` |" in text
    assert "| 2 | 2.000 | 6.000 | `terrain friction=0.3` |" in text


def test_compare_puts_adaptation_on_and_off_side_by_side(tmp_path):
    write_trial_bag(tmp_path / "on" / "bag", recover_at=2.8)
    write_trial_bag(tmp_path / "off" / "bag", recover_at=99.0, method="nominal")
    report = write_report(tmp_path / "on", tmp_path / "report", compare=tmp_path / "off",
                          labels=("adaptation on", "adaptation off")).read_text()
    assert "| metric | adaptation on | adaptation off |" in report
    row = next(line for line in report.splitlines() if line.startswith("| recovery_time_s |"))
    assert row.split("|")[3].strip() == "–"  # off never recovers
    # by how much: on recovered within 1 s (at most 0.1); off stays 0.4 m/s under the command to the end
    row = next(line for line in report.splitlines() if line.startswith("| recovery_tolerance_mps |"))
    on, off = (float(cell) for cell in row.split("|")[2:4])
    assert on <= 0.1 and off == pytest.approx(0.4, abs=0.01)
    row = next(line for line in report.splitlines() if line.startswith("| settled_speed_mps |"))
    assert float(row.split("|")[3]) == pytest.approx(0.1, abs=0.03)
    assert trial_metrics(tmp_path / "off")["method"] == "nominal"


def test_a_killed_recording_is_reported_up_to_its_last_segment(tmp_path):
    writer = write_trial_bag(tmp_path / "bag", recover_at=2.8, close=False)  # the process "died" here
    bag = read_bag(tmp_path / "bag")
    assert not bag.complete
    assert len(writer.segments) == 6
    assert bag.counts["/joint_states"] == 300 == len(bag.topic("joint_states"))  # 6 flushed seconds of 50 Hz
    assert writer.counts["/joint_states"] == 301  # the unflushed sample is what was lost
    text = write_report(tmp_path / "bag", tmp_path / "report").read_text()
    assert "cut short" in text


def test_bad_bags_are_refused_with_their_names(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        write_report(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        read_bag(tmp_path / "empty")
    write_trial_bag(tmp_path / "novel", recover_at=2.8, with_velocity=False)
    with pytest.raises(BagError, match="base_vx"):
        trial_episode(read_bag(tmp_path / "novel"))
    with pytest.raises(BagError, match="already exists"):
        SegmentedBagWriter(tmp_path / "novel")
    bag = read_bag(tmp_path / "novel", topics=["joint_states"])
    with pytest.raises(BagError, match="/cmd_vel"):
        bag.topic("cmd_vel")


def test_a_bag_without_measured_speed_is_reported_as_such(tmp_path):
    """A hardware bridge has no ground-truth velocity: the report says so and claims no speed figures."""
    write_trial_bag(tmp_path / "field" / "bag", recover_at=2.8, with_velocity=False)
    text = regenerate_report(tmp_path / "field").read_text()
    assert "no measured forward speed" in text and "hardware bridge has no ground truth" in text
    metrics = json.loads((tmp_path / "field" / "metrics.json").read_text())
    assert tuple(metrics) == EVAL_KEYS and metrics["episodes"] == 1
    assert all(metrics[k] is None for k in ("distance_m", "tracking_error_mps", "falls", "recovery_time_s"))
    assert "| energy_j |" in text and "| 1 | 2.000 |" in text  # torques and events are still reported


def test_a_trial_counts_from_its_first_command(tmp_path):
    """What the bag holds before the first cmd_vel (standing up, setup events) is not measured."""
    writer = SegmentedBagWriter(tmp_path / "bag")
    for topic, msgtype in TOPICS.items():
        writer.add_topic(topic, msgtype)
    header = _msg("std_msgs/msg/Header", stamp=_msg("builtin_interfaces/msg/Time", sec=0, nanosec=0), frame_id="")
    vec = lambda x: _msg("geometry_msgs/msg/Vector3", x=x, y=0.0, z=0.0)  # noqa: E731
    setup = {"t": 0.0, "kind": "terrain", "terrain": {"type": "flat", "friction": 0.5}}
    writer.write("sim/events", T0_NS, _cdr(_msg("std_msgs/msg/String", data=json.dumps(setup))))
    for i in range(400):  # 8 s at 50 Hz: standing still for 3 s, then walking at 0.5 m/s as commanded
        t = i * 0.02
        ns = T0_NS + int(round(t * 1e9))
        bridge = _msg("diagnostic_msgs/msg/DiagnosticStatus", level=0, name="robot_bridge/truth", message="",
                      hardware_id="", values=[_msg("diagnostic_msgs/msg/KeyValue", key="base_vx",
                                                   value="0.5" if t >= 3.0 else "0.0")])
        writer.write("diagnostics", ns, _cdr(_msg("diagnostic_msgs/msg/DiagnosticArray", header=header,
                                                   status=[bridge])))
        if t >= 3.0:
            writer.write("cmd_vel", ns, _cdr(_msg("geometry_msgs/msg/Twist", linear=vec(0.5), angular=vec(0.0))))
    writer.close()
    text = write_report(tmp_path / "bag", tmp_path).read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["distance_m"] == pytest.approx(0.5 * 4.98, abs=0.08)  # the stride average blurs the first 0.25 s
    assert metrics["recovery_time_s"] == 0.0  # the setup event came before the start: no event in the trial
    assert "1 event(s) recorded before the start are not counted" in text


def test_a_trial_counts_from_the_runners_time_0_when_the_bag_holds_it(tmp_path):
    """The recorder stamps on receipt, so the first cmd_vel can land off the runner's time 0 (`START_KEY`)."""
    writer = write_trial_bag(tmp_path / "bag", recover_at=2.5, close=False)
    writer.custom[START_KEY] = str(T0_NS + 100_000_000)  # the runner started 0.1 s after the first cmd_vel's stamp
    writer.close()
    text = write_report(tmp_path / "bag", tmp_path).read_text()
    assert "| 1 | 1.900 | 2.000 | `fault FR_lower_joint locked` |" in text  # seen at 1.9 s of the trial, due at 2
    episode, events = trial_episode(from_trial_start(read_bag(tmp_path / "bag")))
    assert episode.t[0] == pytest.approx(0.0) and events[0][0] == pytest.approx(1.9)
