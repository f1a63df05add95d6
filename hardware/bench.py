"""`metaloco bench serial`: the cost of one full read+write cycle of every joint over each serial protocol.

The host driver (the real one: dynamixel_sdk or pyserial) talks to the device emulator through a pty. A pty
moves bytes at memory speed, so the emulator paces its replies to the configured baud (10 bits per byte: start,
8 data, stop): the measured cycle includes the line time a real link would have, plus the host's and the
emulated device's processing. `limit_hz` is the bound from the protocol's bytes per cycle alone:
`baud / 10 / bytes_per_cycle`. (A USB adapter adds its latency timer on top; set it to 1 ms on the robot.)

The emulator runs in its own process (a device has its own CPU; in-process it would share the host's GIL) and
its joints are a still robot, so the figure is the link's, not pybullet's. A cycle that times out or arrives
corrupted is counted (`timeouts`, `crc_errors`) and its time stays in the figures.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time

import numpy as np

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.interface import DriverError, JointCommand, RobotState
from metaloco.hardware.robot_config import RobotConfig, SerialBridgeConfig, load_robot

PROTOCOLS = ("dynamixel", "serial_bridge")


class StillRobot:
    """A `RobotInterface` whose joints sit at the commanded targets at once (an ideal servo; no physics)."""

    def __init__(self, cfg: RobotConfig):
        self.joint_names = list(cfg.joint_names)
        self._q = np.asarray(cfg.default_joint_pos, dtype=np.float64)
        self._t0 = time.monotonic()

    def read_state(self) -> RobotState:
        n = len(self._q)
        return RobotState(stamp_s=time.monotonic() - self._t0, joint_pos=self._q.copy(), joint_vel=np.zeros(n),
                          joint_torque=np.zeros(n), imu_quat=np.array([0.0, 0.0, 0.0, 1.0]), imu_ang_vel=np.zeros(3),
                          imu_lin_acc=np.array([0.0, 0.0, 9.81]))

    def write_command(self, command: JointCommand) -> None:
        self._q = np.where(command.kp > 0, command.position, self._q)

    def set_torque_enabled(self, enabled: bool) -> None:
        pass

    def close(self) -> None:
        pass


def bytes_per_cycle(protocol: str, n_joints: int) -> int:
    """Bytes on the wire for one read of every joint and one write of every joint's targets."""
    if protocol == "dynamixel":
        read = dxl.encode(dxl.BROADCAST_ID, dxl.SYNC_READ, bytes([126, 0, 10, 0]) + bytes(range(1, n_joints + 1)))
        status = dxl.encode_status(1, 0, bytes(10))
        write = dxl.encode(dxl.BROADCAST_ID, dxl.SYNC_WRITE, bytes([116, 0, 4, 0]) + bytes(5 * n_joints))
        return len(read) + n_joints * len(status) + len(write)
    ones, quat = np.ones(n_joints), np.array([0.0, 0.0, 0.0, 1.0])
    state = bp.State(1, 1, 1, bp.MODE_PD, 0, ones, ones, ones, quat, np.ones(3), np.ones(3))
    return (len(bp.encode(bp.STATE_REQUEST, 1)) + len(bp.encode_state(1, state))
            + len(bp.encode_command(1, bp.Command(bp.MODE_PD, ones, ones, ones))))


def _link_config(robot: str, baud: int) -> RobotConfig:
    cfg = load_robot(robot)
    if cfg.dynamixel is not None:
        cfg.dynamixel = dataclasses.replace(cfg.dynamixel, baud=baud)
    cfg.serial_bridge = dataclasses.replace(cfg.serial_bridge or SerialBridgeConfig(), baud=baud)
    return cfg


def _connect(protocol: str, cfg: RobotConfig, port: str, attempts: int = 3):
    """The host driver, connected with torque on; a connect that times out on a busy machine is tried again."""
    if protocol == "dynamixel":
        from metaloco.hardware.dynamixel import DynamixelDriver as Driver
    else:
        from metaloco.hardware.serial_bridge import SerialBridgeDriver as Driver
    for attempt in range(attempts):
        driver = None
        try:
            driver = Driver(cfg, port=port)
            driver.set_torque_enabled(True)
            return driver
        except DriverError:
            if driver is not None:
                driver.close()
            if attempt == attempts - 1:
                raise


def _cycle(driver, command: JointCommand) -> bool:
    """One read+write cycle; False when it failed (the driver counted why: timeout, CRC, dropped frame)."""
    try:
        driver.read_state()
        driver.write_command(command)
    except DriverError:
        return False
    return True


def _serve_device(protocol: str, robot: str, baud: int, pace: bool, conn) -> None:
    """Child process: the emulated device, on its own core and GIL as a real device would be."""
    cfg = _link_config(robot, baud)
    if protocol == "dynamixel":
        from metaloco.hardware.dynamixel_emulator import DynamixelEmulator as Device
    else:
        from metaloco.hardware.serial_bridge_emulator import SerialBridgeEmulator as Device
    with Device(StillRobot(cfg), cfg, pace=pace) as device:
        conn.send(device.port)
        conn.recv()


def run_serial_bench(protocol: str = "dynamixel", seconds: float = 5.0, *, baud: int = 4_000_000,
                     robot: str = "a1", pace: bool = True) -> dict:
    """Run full read+write cycles against the emulated device for `seconds` and report the DESIGN.md keys.

    Args:
        protocol: `dynamixel` or `serial_bridge`.
        seconds: Measuring time (after a short warm-up).
        baud: Link speed (both ends).
        robot: Robot whose joints and protocol sections to use.
        pace: Pace the emulator's replies to the baud rate (off: pty speed, no line time).

    Returns:
        {"protocol", "baud", "cycle_hz", "p99_cycle_ms", "crc_errors", "timeouts", "limit_hz"}.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of {list(PROTOCOLS)}")
    if protocol == "dynamixel" and load_robot(robot).dynamixel is None:
        raise ValueError(f"robot '{robot}' has no dynamixel section in config/robots/{robot}.yaml")
    cfg = _link_config(robot, baud)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    device = context.Process(target=_serve_device, args=(protocol, robot, baud, pace, theirs), daemon=True)
    device.start()
    try:
        if not ours.poll(30.0):
            raise RuntimeError(f"the {protocol} emulator did not start within 30 s")
        driver = _connect(protocol, cfg, ours.recv())
        try:
            command = JointCommand(position=np.asarray(cfg.default_joint_pos), kp=np.asarray(cfg.kp),
                                   kd=np.asarray(cfg.kd))
            for _ in range(50):
                _cycle(driver, command)
            stats0 = dataclasses.replace(driver.stats)
            cycles = []
            start = time.perf_counter()
            failures = 0
            while (t0 := time.perf_counter()) - start < seconds:
                failures = 0 if _cycle(driver, command) else failures + 1
                if failures > 20:
                    raise DriverError(f"20 {protocol} cycles in a row failed: {driver.stats}")
                cycles.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
        finally:
            driver.close()
    finally:
        ours.send("stop")
        device.join(timeout=5.0)
    return {
        "protocol": protocol,
        "baud": baud,
        "cycle_hz": round(len(cycles) / elapsed, 1),
        "p99_cycle_ms": round(float(np.percentile(cycles, 99)) * 1000.0, 3),
        "crc_errors": driver.stats.crc_errors - stats0.crc_errors,
        "timeouts": driver.stats.timeouts - stats0.timeouts,
        "limit_hz": round(baud / 10 / bytes_per_cycle(protocol, cfg.n_joints), 1),
    }


if __name__ == "__main__":  # python -m metaloco.hardware.bench [protocol] [seconds]
    import json
    import sys

    print(json.dumps(run_serial_bench(sys.argv[1] if len(sys.argv) > 1 else "dynamixel",
                                      float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)))
