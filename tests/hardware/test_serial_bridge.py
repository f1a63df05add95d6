"""The serial_bridge driver (pyserial) against the emulated microcontroller on a real pty, the A1 behind it."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware.interface import DriverError, JointCommand
from metaloco.hardware.pty_device import LinkFaults
from metaloco.hardware.serial_bridge import SerialBridgeDriver
from metaloco.hardware.serial_bridge_emulator import SerialBridgeEmulator
from metaloco.schema import ConfigError


@pytest.fixture
def mcu(a1, sim):
    device = SerialBridgeEmulator(sim, a1)
    yield device
    device.close()


@pytest.fixture
def driver(a1, mcu):
    drv = SerialBridgeDriver(a1, port=mcu.port)
    yield drv
    drv.close()


def pd(cfg, offset: float = 0.0) -> JointCommand:
    position = np.asarray(cfg.default_joint_pos) + offset
    return JointCommand(position=position, kp=np.asarray(cfg.kp), kd=np.asarray(cfg.kd))


def test_handshake_reports_the_mcu(driver):
    assert driver.mcu.n_joints == 12 and driver.mcu.watchdog_ms == 100 and driver.mcu.mode == bp.MODE_PASSIVE


def test_state_round_trip_matches_the_simulator(driver, mcu, sim, step):
    step(mcu, sim, 20)
    state = driver.read_state()
    truth = sim.read_state()
    for name in ("joint_pos", "joint_vel", "joint_torque", "imu_quat", "imu_ang_vel"):
        assert np.allclose(getattr(state, name), getattr(truth, name), rtol=1e-6, atol=1e-5), name


def test_command_round_trip_drives_the_a1_as_direct_pd_does(a1, driver, mcu, sim, step):
    command = pd(a1, 0.15)
    driver.set_torque_enabled(True)
    for _ in range(50):
        driver.write_command(command)
        driver.read_state()  # a round trip: the MCU has applied the command before physics moves on
        step(mcu, sim)
    through_mcu = sim.true_joint_pos()
    assert mcu.mode == bp.MODE_PD and mcu.commands_applied >= 50
    sim.reset()
    for _ in range(50):
        sim.write_command(command)
        sim.step(4)
    assert np.allclose(through_mcu, sim.true_joint_pos(), atol=1e-3)


def test_torque_off_makes_the_mcu_passive(a1, driver, mcu):
    driver.set_torque_enabled(True)
    driver.write_command(pd(a1))
    driver.read_state()
    assert mcu.mode == bp.MODE_PD
    driver.set_torque_enabled(False)
    driver.read_state()
    assert mcu.mode == bp.MODE_PASSIVE


def test_mcu_watchdog_damps_and_waits_for_a_passive_command(a1, driver, mcu, eventually):
    driver.set_torque_enabled(True)
    driver.write_command(pd(a1))
    t0 = time.monotonic()
    driver.read_state()  # the last frame the MCU sees
    assert eventually(lambda: mcu.mode == bp.MODE_DAMPING)
    assert time.monotonic() - t0 >= mcu.watchdog_s, "not before the watchdog period"
    state = driver.read_state()
    assert mcu.mode == bp.MODE_DAMPING and driver.mcu_faults & bp.FAULT_WATCHDOG
    assert state.fault_bits == 0, "the watchdog is an MCU fault, not a joint fault"
    refused = mcu.commands_refused
    driver.write_command(pd(a1))
    driver.read_state()
    assert mcu.commands_refused == refused + 1 and mcu.mode == bp.MODE_DAMPING, "no torque before re-arming"
    driver.set_torque_enabled(False)
    driver.set_torque_enabled(True)
    driver.write_command(pd(a1))
    driver.read_state()
    assert mcu.mode == bp.MODE_PD and not driver.mcu_faults & bp.FAULT_WATCHDOG


def test_non_finite_command_is_refused_by_the_mcu(a1, driver, mcu):
    driver.set_torque_enabled(True)
    driver.write_command(pd(a1))
    bad = pd(a1)
    bad.position[4] = np.nan
    driver.write_command(bad)
    driver.read_state()
    assert mcu.commands_refused == 1 and mcu.mode == bp.MODE_DAMPING


def test_joint_fault_bits_reach_the_state(driver, mcu):
    mcu.faulty_joints = {2}
    assert driver.read_state().fault_bits == 1 << 2


def test_wrong_port_is_named(a1):
    with pytest.raises(DriverError, match="/dev/ttyNOPE1 does not exist"):
        SerialBridgeDriver(a1, port="/dev/ttyNOPE1")


def test_wrong_baud_gets_a_clear_error(a1, sim):
    a1.serial_bridge = dataclasses.replace(a1.serial_bridge, timeout_ms=5.0, retries=0)
    with SerialBridgeEmulator(sim, a1, baud=115_200) as slow:
        with pytest.raises(DriverError, match=r"no valid heartbeat reply .* at 4000000 baud.*serial_bridge.baud"):
            SerialBridgeDriver(a1, port=slow.port)


class _FutureMcu(SerialBridgeEmulator):
    """An MCU whose firmware speaks protocol version 2."""

    def on_bytes(self, data, now):
        replies = super().on_bytes(data, now)
        out = []
        for wire, packets in replies:
            changed = []
            for frame in packets:
                raw = bytearray(bp.cobs_decode(frame[:-1])[:-2])
                raw[0] = 2
                changed.append(bp.cobs_encode(bytes(raw) + bp.crc16(bytes(raw)).to_bytes(2, "little")) + b"\x00")
            out.append((wire, changed))
        return out


def test_other_protocol_version_is_named(a1, sim):
    with _FutureMcu(sim, a1) as future:
        with pytest.raises(DriverError, match=r"protocol v1 \(it sent frames of protocol v2\)"):
            SerialBridgeDriver(a1, port=future.port)


def test_joint_count_mismatch_is_named(a1, sim):
    eight = dataclasses.replace(a1, joint_names=a1.joint_names[:8])
    with SerialBridgeEmulator(sim, eight) as small:
        with pytest.raises(DriverError, match="drives 8 joints; robot 'a1' has 12"):
            SerialBridgeDriver(a1, port=small.port)


def test_robot_without_a_bridge_section_is_refused(a1):
    a1.serial_bridge = None
    with pytest.raises(ConfigError, match="no serial_bridge section"):
        SerialBridgeDriver(a1)


def test_late_replies_are_dropped_as_stale(a1, sim):
    with SerialBridgeEmulator(sim, a1) as device:
        drv = SerialBridgeDriver(a1, port=device.port)
        a1.serial_bridge.timeout_ms, a1.serial_bridge.retries = 5.0, 1  # the driver reads its config live
        device.faults.late_rate, device.faults.late_s = 1.0, 0.008
        before = drv.stats.timeouts
        with pytest.raises(DriverError, match="no valid state reply"):
            drv.read_state()
        assert drv.stats.timeouts - before == 2
        device.faults.late_rate = 0.0
        a1.serial_bridge.retries = 3  # slack for a loaded machine
        time.sleep(0.05)
        drv.read_state()
        assert drv.stats.extra["stale"] >= 1, "the late replies arrived, and were dropped as stale"
        drv.close()


def test_corrupted_and_truncated_frames_are_counted_and_never_used(a1, sim):
    faults = LinkFaults()
    with SerialBridgeEmulator(sim, a1, faults=faults, seed=5) as device:
        drv = SerialBridgeDriver(a1, port=device.port)
        a1.serial_bridge.timeout_ms, a1.serial_bridge.retries = 20.0, 0  # the driver reads its config live
        faults.corrupt_crc_rate = faults.drop_byte_rate = 0.1
        good = failed = 0
        for k in range(150):
            with device.lock:
                sim.step(1)
                truth = sim.read_state()
            try:
                state = drv.read_state()
            except DriverError:
                failed += 1
                continue
            good += 1
            assert np.allclose(state.joint_pos, truth.joint_pos, atol=1e-5), "a state that got through is exact"
        assert good > 80 and failed > 0
        assert drv.stats.crc_errors > 0 and drv.stats.dropped_frames > 0, drv.stats
        drv.close()


def test_unplug_fails_fast_and_replug_reconnects(a1, driver, mcu):
    driver.read_state()
    mcu.unplug()
    with pytest.raises(DriverError, match="lost serial port"):
        driver.read_state()
    with pytest.raises(DriverError, match="does not exist"):
        driver.reconnect()
    mcu.replug()
    driver.reconnect()
    assert driver.stats.reconnects == 1
    driver.read_state()
