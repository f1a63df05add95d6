"""The dynamixel driver (official dynamixel_sdk, pyserial) against the emulated servo bus on a real pty.

The servos' joints are the pybullet A1, so what the driver reads can be checked against the simulator.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.dynamixel import DynamixelDriver
from metaloco.hardware.dynamixel_emulator import DynamixelEmulator
from metaloco.hardware.interface import DriverError, JointCommand
from metaloco.hardware.pty_device import LinkFaults
from metaloco.schema import ConfigError

TICK = 2 * math.pi / 4096


@pytest.fixture
def bus(a1, sim):
    device = DynamixelEmulator(sim, a1)
    yield device
    device.close()


@pytest.fixture
def driver(a1, bus):
    drv = DynamixelDriver(a1, port=bus.port)
    yield drv
    drv.close()


def stand_command(cfg) -> JointCommand:
    return JointCommand(position=np.asarray(cfg.default_joint_pos), kp=np.asarray(cfg.kp), kd=np.asarray(cfg.kd))


def test_state_round_trip_matches_the_simulator(driver, bus, sim, step):
    step(bus, sim, 20)
    state = driver.read_state()
    truth = sim.read_state()
    assert np.allclose(state.joint_pos, truth.joint_pos, atol=TICK), "positions to within one encoder tick"
    assert np.allclose(state.joint_vel, truth.joint_vel, atol=0.03), "velocities to within one 0.229 rpm unit"
    kt = np.asarray(driver.dxl.torque_constant_nm_per_a)
    one_unit = 0.00269 * kt.max()
    assert np.allclose(state.joint_torque, truth.joint_torque, atol=one_unit), "torques to within one current unit"


def test_goal_and_gains_land_in_the_servos_registers(a1, driver, bus):
    driver.set_torque_enabled(True)
    target = np.asarray(a1.default_joint_pos) + 0.1
    driver.write_command(JointCommand(position=target, kp=np.full(12, 20.0), kd=np.full(12, 0.5)))
    driver.read_state()  # a round trip: the reply-less sync writes before it have been executed
    d = a1.dynamixel
    for i, sid in enumerate(d.ids):
        expected = 2048 + d.direction[i] * (target[i] - d.offset_rad[i]) / TICK
        assert abs(bus.register(sid, dxl.GOAL_POSITION) - expected) <= 0.5, f"servo {sid} goal"
        assert bus.register(sid, dxl.POSITION_P_GAIN) == 800 and bus.register(sid, dxl.POSITION_D_GAIN) == 500
        assert bus.register(sid, dxl.TORQUE_ENABLE) == 1


def test_servo_path_moves_the_a1_as_direct_pd_does(a1, driver, bus, sim, step):
    target = np.asarray(a1.default_joint_pos).copy()
    target[[2, 5]] += 0.3  # straighten both front knees; FL's servo is mounted mirrored (direction -1)
    command = JointCommand(position=target, kp=np.full(12, 20.0), kd=np.full(12, 0.5))
    driver.set_torque_enabled(True)
    for _ in range(50):
        driver.write_command(command)
        driver.read_state()  # a round trip: the servos have their goals before physics moves on
        step(bus, sim)
    through_servos = sim.true_joint_pos()
    sim.reset()
    for _ in range(50):
        sim.write_command(command)
        sim.step(4)
    direct = sim.true_joint_pos()
    assert np.allclose(through_servos, direct, atol=0.03), f"servo path {through_servos} vs direct PD {direct}"


def test_bus_watchdog_is_armed_and_stops_a_silent_bus(a1, driver, bus, eventually):
    ids = a1.dynamixel.ids
    driver.read_state()  # a round trip: every earlier (reply-less) write has been executed
    assert all(bus.register(sid, dxl.BUS_WATCHDOG) == a1.dynamixel.watchdog_ms // 20 for sid in ids)
    driver.set_torque_enabled(True)
    t0 = time.monotonic()
    driver.read_state()  # the last instruction the servos see
    tripped = lambda: all(bus.register(sid, dxl.BUS_WATCHDOG) == 0xFF for sid in ids)  # noqa: E731
    assert eventually(tripped), "Bus Watchdog Error (-1)"
    assert time.monotonic() - t0 >= a1.dynamixel.watchdog_ms / 1000, "not before the watchdog period"
    stopped = [bus.register(sid, dxl.GOAL_POSITION) == bus.register(sid, dxl.PRESENT_POSITION) for sid in ids]
    assert all(stopped), "each servo holds where it was when the bus went silent"
    driver.reconnect()
    driver.read_state()
    armed = [bus.register(sid, dxl.BUS_WATCHDOG) == a1.dynamixel.watchdog_ms // 20 for sid in ids]
    assert all(armed), "cleared and re-armed"


def test_close_turns_torque_off(a1, bus, eventually):
    drv = DynamixelDriver(a1, port=bus.port)
    drv.set_torque_enabled(True)
    drv.read_state()
    assert all(bus.register(sid, dxl.TORQUE_ENABLE) == 1 for sid in a1.dynamixel.ids)
    drv.close()
    assert eventually(lambda: all(bus.register(sid, dxl.TORQUE_ENABLE) == 0 for sid in a1.dynamixel.ids))


def test_wrong_port_is_named(a1):
    with pytest.raises(DriverError, match="/dev/ttyNOPE0 does not exist"):
        DynamixelDriver(a1, port="/dev/ttyNOPE0")


def test_absent_servo_id_is_named(a1, bus):
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 42]
    a1.dynamixel = dataclasses.replace(a1.dynamixel, ids=ids, timeout_ms=5.0)
    with pytest.raises(DriverError, match=r"servo ID\(s\) \[42\] \(joints \['RL_lower_joint'\]\) did not answer"):
        DynamixelDriver(a1, port=bus.port)


def test_wrong_baud_is_diagnosed(a1, sim):
    with DynamixelEmulator(sim, a1, baud=1_000_000) as slow_bus:
        a1.dynamixel = dataclasses.replace(a1.dynamixel, timeout_ms=5.0)
        with pytest.raises(DriverError, match="answers at 1000000 baud: set dynamixel.baud: 1000000"):
            DynamixelDriver(a1, port=slow_bus.port)
        assert slow_bus.baud_mismatches > 0, "the servos saw the 4 Mbit/s bytes as garbage"


def test_wrong_model_is_named(a1, bus):
    a1.dynamixel = dataclasses.replace(a1.dynamixel, model_number=1020)
    with pytest.raises(DriverError, match=r"model_number 1020 .*: ID 1 \(FR_hip_joint\) is model 1120"):
        DynamixelDriver(a1, port=bus.port)


def test_robot_without_a_dynamixel_section_is_refused(a1):
    a1.dynamixel = None
    with pytest.raises(ConfigError, match="no dynamixel section"):
        DynamixelDriver(a1)


def test_a_servo_that_stops_answering_takes_the_link_down(a1, driver, bus):
    driver.read_state()
    bus.silent_ids = {7}
    with pytest.raises(DriverError, match="servo ID 7"):
        driver.read_state()
    assert driver.stats.timeouts == a1.dynamixel.retries + 1


def test_late_replies_count_as_timeouts(a1, sim):
    with DynamixelEmulator(sim, a1) as device:
        drv = DynamixelDriver(a1, port=device.port)
        a1.dynamixel.timeout_ms, a1.dynamixel.retries = 5.0, 1  # the driver reads its config live
        device.faults.late_rate, device.faults.late_s = 1.0, 0.03
        before = drv.stats.timeouts
        with pytest.raises(DriverError, match="failed 2 times"):
            drv.read_state()
        assert drv.stats.timeouts - before == 2
        device.faults.late_rate = 0.0
        a1.dynamixel.retries = 3  # slack for a loaded machine
        time.sleep(0.1)
        drv.read_state()  # the link is usable again once replies are on time
        drv.close()


def test_corrupted_and_truncated_replies_are_never_read_as_data(a1, sim):
    faults = LinkFaults()
    with DynamixelEmulator(sim, a1, faults=faults, seed=3) as device:
        drv = DynamixelDriver(a1, port=device.port)
        a1.dynamixel.timeout_ms, a1.dynamixel.retries = 20.0, 0  # the driver reads its config live
        faults.corrupt_crc_rate = faults.drop_byte_rate = 0.02
        good = failed = 0
        for _ in range(150):
            with device.lock:
                truth = sim.read_state().joint_pos
            try:
                state = drv.read_state()
            except DriverError:
                failed += 1
                continue
            good += 1
            assert np.allclose(state.joint_pos, truth, atol=TICK), "a reading that got through is exact"
        assert good > 50 and failed > 0
        assert drv.stats.crc_errors + drv.stats.timeouts >= failed
        drv.close()


def test_unplug_fails_fast_and_replug_reconnects(a1, driver, bus):
    driver.read_state()
    bus.unplug()
    t0 = time.monotonic()
    with pytest.raises(DriverError, match="lost serial port"):
        driver.read_state()
        driver.write_command(stand_command(a1))
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(DriverError, match="does not exist"):
        driver.reconnect()
    bus.replug()
    driver.reconnect()
    assert driver.stats.reconnects == 1
    driver.read_state()


@pytest.mark.parametrize("reg,value,message", [
    (dxl.OPERATING_MODE, 1, r"servo ID 5 \(FL_upper_joint\) is in Operating Mode 1, not position control"),
    (dxl.DRIVE_MODE, 1, r"servo ID 5 \(FL_upper_joint\) has the reverse bit of Drive Mode set"),
    (dxl.RETURN_DELAY_TIME, 250, r"servo ID 5 \(FL_upper_joint\) has Return Delay Time 250 \(500 us per reply\)"),
])
def test_servo_setup_that_breaks_calibration_or_timing_is_refused(a1, bus, reg, value, message):
    a1.dynamixel = dataclasses.replace(a1.dynamixel, timeout_ms=5.0)  # 12 x 500 us of reply delay cannot fit
    bus.set_register(5, reg, value)
    with pytest.raises(DriverError, match=message):
        DynamixelDriver(a1, port=bus.port)
