"""Shared fixtures for the simulator tests."""

import pytest

from metaloco.hardware.robot_config import load_robot
from metaloco.sim.robot import SimRobot


@pytest.fixture(scope="module")
def a1_cfg():
    return load_robot("a1")


@pytest.fixture
def robot(a1_cfg):
    r = SimRobot(a1_cfg, seed=0)
    r.reset()
    yield r
    r.close()
