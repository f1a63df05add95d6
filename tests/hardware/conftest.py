"""Shared fixtures: the A1 description, a pybullet A1 behind the emulators, and a hardware-in-the-loop stepper.

Functional tests give the drivers generous timeouts, so a loaded 2-core machine does not turn scheduling
hiccups into link failures; tests of timeouts set their own.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pybullet
import pytest

from metaloco.hardware.robot_config import RobotConfig, load_robot
from metaloco.sim.robot import SimRobot

def relaxed(cfg: RobotConfig, timeout_ms: float = 40.0, retries: int = 2) -> RobotConfig:
    """`cfg` with long link timeouts on both serial sections."""
    cfg.dynamixel = dataclasses.replace(cfg.dynamixel, timeout_ms=timeout_ms, retries=retries)
    cfg.serial_bridge = dataclasses.replace(cfg.serial_bridge, timeout_ms=timeout_ms, retries=retries)
    return cfg


@pytest.fixture
def a1() -> RobotConfig:
    return relaxed(load_robot("a1"))


@pytest.fixture(scope="module")
def _sim_module():
    sim = SimRobot(load_robot("a1"))
    yield sim
    sim.close()


@pytest.fixture
def sim(_sim_module: SimRobot) -> SimRobot:
    """The A1 standing at the origin in the nominal task, reset for each test."""
    _sim_module.reset()
    _sim_module.set_torque_enabled(True)
    return _sim_module


def _step(device, sim: SimRobot, substeps: int | None = None) -> None:
    with device.lock:
        sim.step(substeps)


@pytest.fixture
def step():
    """`step(device, sim, substeps=None)`: advance the simulation behind an emulator (default: one control period),
    under the emulator's lock, as the emulator thread reads the same robot."""
    return _step


def _standing(sim: SimRobot, min_height: float = 0.22) -> tuple[bool, str]:
    pos, quat, _, _ = sim.base_state()
    rot = np.asarray(pybullet.getMatrixFromQuaternion(quat)).reshape(3, 3)
    tilt = float(np.arccos(np.clip(rot[2, 2], -1.0, 1.0)))
    return pos[2] > min_height and tilt < 0.25, f"base height {pos[2]:.3f} m, tilt {tilt:.2f} rad"


def wait_for(condition, timeout_s: float = 2.0) -> bool:
    """Poll `condition()` until it holds or `timeout_s` passes (device threads run on their own schedule)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.fixture
def eventually():
    """`eventually(condition, timeout_s=2.0) -> bool`: poll until a device thread has done something."""
    return wait_for


@pytest.fixture
def standing():
    """`standing(sim) -> (ok, description)`: whether the A1 stands, base high enough and level."""
    return _standing
