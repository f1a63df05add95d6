"""Robot descriptions: both shipped robots load and stand; bad ones are refused with the key named."""

from pathlib import Path

import pytest

from metaloco.hardware.robot_config import load_robot
from metaloco.schema import ConfigError
from metaloco.sim.robot import SimRobot

A1 = Path(__file__).parents[2] / "config" / "robots" / "a1.yaml"


@pytest.mark.parametrize("name", ["a1", "aliengo"])
def test_shipped_robots_load_and_stand(name):
    cfg = load_robot(name)
    assert cfg.n_joints == 12 and cfg.decimation == 4
    robot = SimRobot(cfg)
    robot.reset()
    for _ in range(50):
        robot.step()
    assert robot.base_state()[0][2] > 0.6 * cfg.base_height_m
    robot.close()


def variant(tmp_path, old, new):
    text = A1.read_text()
    assert old in text
    path = tmp_path / "robot.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_missing_urdf(tmp_path):
    cfg = load_robot(variant(tmp_path, "urdf: a1/a1.urdf", "urdf: nowhere/robot.urdf"))
    with pytest.raises(ConfigError, match=r"'urdf'.*nowhere/robot.urdf.*not found"):
        SimRobot(cfg)


def test_joint_not_in_urdf(tmp_path):
    cfg = load_robot(variant(tmp_path, "FR_hip_joint, FR_upper", "FR_hipp_joint, FR_upper"))
    with pytest.raises(ConfigError, match=r"'joint_names'.*FR_hipp_joint.*not in"):
        SimRobot(cfg)


def test_wrong_list_length(tmp_path):
    with pytest.raises(ConfigError, match=r"robot.yaml: 'kp': expected 12 values"):
        load_robot(variant(tmp_path, "kp: [20.0]", "kp: [20.0, 20.0]"))


def test_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'stiffness': unknown key; allowed keys are"):
        load_robot(variant(tmp_path, "kp: [20.0]", "kp: [20.0]\nstiffness: 3"))


def test_control_period_not_a_multiple(tmp_path):
    with pytest.raises(ConfigError, match="whole multiple"):
        load_robot(variant(tmp_path, "control_dt: 0.02", "control_dt: 0.0213"))


def test_unknown_robot_name():
    with pytest.raises(ConfigError, match=r"unknown robot 'spot'; known robots are \['a1', 'aliengo'\]"):
        load_robot("spot")


def test_error_inside_an_optional_section_names_the_full_key(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(A1.read_text().replace("  baud: 4000000", "  baud: 12345", 1))
    with pytest.raises(ConfigError, match=r"'dynamixel.baud': got 12345; allowed values are \[57600"):
        load_robot(path)
