"""BridgeCore end to end: the A1 in pybullet behind each serial path (hardware in the loop), and the sim driver.

Time is simulated: every tick advances the A1 by one control period, and `now` is the simulator's clock.
"""

from __future__ import annotations

import numpy as np
import pytest

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.bridge_core import BridgeCore
from metaloco.hardware.dynamixel import DynamixelDriver
from metaloco.hardware.dynamixel_emulator import DynamixelEmulator
from metaloco.hardware.interface import JointCommand
from metaloco.hardware.safety import SafetyError
from metaloco.hardware.serial_bridge import SerialBridgeDriver
from metaloco.hardware.serial_bridge_emulator import SerialBridgeEmulator

CROUCH = [-0.1, 1.3, -2.6, 0.1, 1.3, -2.6, -0.1, 1.3, -2.6, 0.1, 1.3, -2.6]
"""Lying on the belly: thighs up, knees folded (a pose the A1 can get up from)."""


class Loop:
    """One robot bridge in the loop with the simulator: `tick()` = one control period."""

    def __init__(self, cfg, sim, protocol: str):
        self.cfg, self.sim = cfg, sim
        if protocol == "dynamixel":
            self.device = DynamixelEmulator(sim, cfg)
            driver = DynamixelDriver(cfg, port=self.device.port, imu=self._imu)
        elif protocol == "serial_bridge":
            self.device = SerialBridgeEmulator(sim, cfg)
            driver = SerialBridgeDriver(cfg, port=self.device.port)
        else:
            self.device, driver = None, sim
        self.core = BridgeCore(cfg, driver, stand_ramp_s=1.0)

    def _imu(self):
        with self.device.lock:
            s = self.sim.read_state()
        return s.imu_quat, s.imu_ang_vel, s.imu_lin_acc

    def tick(self, command: JointCommand | None = None):
        now = self.sim.time_s
        if command is not None:
            self.core.set_command(command, now)
        result = self.core.tick(now)
        if self.device is None:
            self.sim.step()
        else:
            with self.device.lock:
                self.sim.step()
        return result

    def run(self, seconds: float, command=None):
        result = None
        for _ in range(int(round(seconds / self.cfg.control_dt))):
            result = self.tick(command(self.sim.time_s) if command else None)
        return result

    def close(self):
        if self.device is not None:  # the sim itself belongs to its fixture
            self.core.close()
            self.device.close()


@pytest.fixture
def loop_factory(a1, sim):
    loops = []

    def make(protocol: str) -> Loop:
        loops.append(Loop(a1, sim, protocol))
        return loops[-1]

    yield make
    for loop in loops:
        loop.close()


def trot(cfg, amplitude: float = 0.12, hz: float = 2.0):
    """Joint targets of a trot in place: diagonal pairs lift in turn."""
    default = np.asarray(cfg.default_joint_pos)
    phase = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]) * np.pi
    knee = np.array([0, 0, 1] * 4, dtype=float)
    thigh = np.array([0, 1, 0] * 4, dtype=float)

    def command(t: float) -> JointCommand:
        lift = np.maximum(0.0, np.sin(2 * np.pi * hz * t + phase))
        position = default + amplitude * lift * (thigh - 2 * knee)
        return JointCommand(position=position, kp=np.asarray(cfg.kp), kd=np.asarray(cfg.kd))

    return command


@pytest.mark.parametrize("protocol", ["dynamixel", "serial_bridge"])
def test_the_a1_stands_up_through_the_serial_path(loop_factory, sim, standing, protocol):
    sim.reset(joint_pos=np.array(CROUCH))
    loop = loop_factory(protocol)
    loop.run(0.5)  # passive: torque off, the A1 lies where it fell
    ok, lying = standing(sim)
    assert not ok, f"starts lying down ({lying})"
    loop.core.arm_stand()
    result = loop.run(2.0)
    ok, where = standing(sim)
    assert result.mode == "stand" and ok, f"through {protocol}: {where}, mode {result.mode} ({result.reason})"


@pytest.mark.parametrize("protocol", ["dynamixel", "serial_bridge"])
def test_unplugging_mid_walk_damps_and_recovers_after_rearm(loop_factory, sim, a1, standing, protocol):
    loop = loop_factory(protocol)
    walk = trot(a1)
    loop.core.arm_stand()
    loop.run(1.0)
    loop.core.set_command(walk(sim.time_s), sim.time_s)
    loop.core.activate(sim.time_s)
    result = loop.run(1.0, walk)
    assert result.mode == "active", result.reason

    loop.device.unplug()
    result = loop.tick(walk(sim.time_s))
    assert result.mode == "damping" and result.reason.startswith("link lost") and result.state is None, result
    for _ in range(10):
        result = loop.tick(walk(sim.time_s))
        assert result.mode == "damping" and result.state is None
    with pytest.raises(SafetyError, match="link to the robot is down"):
        loop.core.rearm()

    loop.device.replug()
    for _ in range(20):
        result = loop.tick(walk(sim.time_s))
        if loop.core.link_up:
            break
    assert loop.core.link_up and result.mode == "damping", "back on the link, still damping"
    loop.run(0.3, walk)  # the policy keeps publishing: nothing but damping goes out
    if protocol == "dynamixel":
        assert all(loop.device.register(sid, dxl.POSITION_P_GAIN) == 0 for sid in a1.dynamixel.ids), "no stiffness"
        assert all(loop.device.register(sid, dxl.POSITION_D_GAIN) == 1000 for sid in a1.dynamixel.ids), "damping kd 1.0"
    else:
        assert loop.device.mode == bp.MODE_DAMPING

    loop.core.rearm()
    assert loop.tick().mode == "passive"
    loop.core.arm_stand()
    result = loop.run(2.0)
    ok, where = standing(sim)
    assert result.mode == "stand" and ok, f"stands again after re-arming: {where}"
    loop.core.set_command(walk(sim.time_s), sim.time_s)
    loop.core.activate(sim.time_s)
    assert loop.run(0.2, walk).mode == "active"


def test_stale_policy_command_damps_within_three_periods(loop_factory, sim, a1):
    loop = loop_factory("sim")
    loop.core.arm_stand()
    loop.run(1.0)
    hold = JointCommand(position=np.asarray(a1.default_joint_pos), kp=np.asarray(a1.kp), kd=np.asarray(a1.kd))
    loop.core.set_command(hold, sim.time_s)
    loop.core.activate(sim.time_s)
    modes = [loop.tick().mode for _ in range(5)]  # the policy went silent: ages 0, 1, 2, 3, 4 periods
    assert modes == ["active"] * 4 + ["damping"], modes
    assert loop.core.reason.startswith("stale command")


def test_passive_means_torque_off_and_a_fall_means_damping(loop_factory, sim, a1):
    loop = loop_factory("sim")
    loop.tick()
    assert sim.torque_enabled is False
    loop.core.arm_stand()
    loop.run(1.0)
    assert sim.torque_enabled is True
    sim.push([0.0, 400.0, 0.0], 0.3)  # a shove that rolls the A1 over
    result = loop.run(1.0)
    assert result.mode == "damping" and result.reason.startswith("attitude beyond limits"), result.reason


def test_estop_damps_at_once(loop_factory, sim, a1):
    loop = loop_factory("sim")
    loop.core.arm_stand()
    loop.run(0.5)
    loop.core.estop("estop topic")
    result = loop.tick()
    assert result.mode == "damping" and result.reason == "estop topic"
