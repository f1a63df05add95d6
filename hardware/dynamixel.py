"""The `dynamixel` driver: a robot whose joints are Dynamixel X-series servos, over ROBOTIS's dynamixel_sdk.

One cycle is two bus transactions for all joints: a Group Sync Read of Present Current, Velocity and Position
(addresses 126..135, contiguous) and a Group Sync Write of Goal Position. Gains go out in a third Sync Write
only when they change (the bridge changes them on mode switches, not every cycle).

What a `JointCommand` means here: the servo closes its own position loop, so `position` becomes Goal Position
and `kp`/`kd` become Position P/D Gain through the calibration factors `kp_per_unit`/`kd_per_unit` of the robot
YAML (identify them on the robot: the servo's gains are not in Nm/rad). `velocity` and `torque_ff` are ignored.
A joint commanded with kp = 0 gets its present position as goal, so restoring stiffness never snaps it.

Safety on the servo side: the Bus Watchdog (address 98) is armed at connect, so servos stop by themselves when
the host goes quiet; torque is enabled only with goal = present position; `close()` turns torque off.
"""

from __future__ import annotations

import os
import select
import termios
import time
from collections.abc import Callable

import dynamixel_sdk as sdk
import numpy as np
import serial

from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.interface import DriverError, DriverStats, JointCommand, RobotState
from metaloco.hardware.robot_config import DynamixelConfig, RobotConfig
from metaloco.schema import ConfigError

ImuSource = Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Returns (quaternion xyzw, angular velocity rad/s, linear acceleration m/s^2) of the base."""
_UPRIGHT = np.array([0.0, 0.0, 0.0, 1.0])
_GRAVITY = np.array([0.0, 0.0, 9.81])


class _Port(sdk.PortHandler):
    """The SDK's port, waiting for bytes in select() instead of spinning, with metaloco's packet timeout.

    The SDK's own timeout adds 2 x 16 ms for an FTDI latency timer; the adapter's latency timer should be set
    to 1 ms on the robot (`/sys/bus/usb-serial/devices/ttyUSB0/latency_timer`), and `timeout_ms` covers the rest.
    """

    def __init__(self, port_name: str, link: DynamixelConfig):
        super().__init__(port_name)
        self.link = link  # read live: a changed timeout applies from the next transaction

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 (SDK name)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.link.timeout_ms

    def readPort(self, length: int) -> bytes:  # noqa: N802 (SDK name)
        if length <= 0:
            return b""
        fd = self.ser.fd  # opened non-blocking by pyserial; os.read skips pyserial's per-call bookkeeping
        data = _read_now(fd, length)
        if data:
            return data
        left_ms = self.packet_timeout - self.getTimeSinceStart()
        if left_ms > 0 and select.select([fd], [], [], left_ms / 1000.0)[0]:
            data = _read_now(fd, length)
            if not data:
                raise serial.SerialException("device reports readiness to read but returned no data (disconnected?)")
        return data


def _read_now(fd: int, length: int) -> bytes:
    try:
        return os.read(fd, length)
    except BlockingIOError:
        return b""


class _PacketHandler(sdk.Protocol2PacketHandler):
    """The SDK's Protocol 2.0 handler with a precomputed CRC table (the SDK rebuilds its table on every call)."""

    def updateCRC(self, crc_accum: int, data_blk_ptr, data_blk_size: int) -> int:  # noqa: N802 (SDK name)
        return dxl.crc16(bytes(data_blk_ptr[:data_blk_size]), crc_accum)


class DynamixelDriver:
    """`RobotInterface` over a Dynamixel Protocol 2.0 bus.

    Args:
        cfg: The robot description; its `dynamixel` section gives port, baud, IDs and calibration.
        port: Serial port (default: the configured one).
        imu: Where the base's IMU readings come from (servos have none). Without one, the state carries an
            upright, still IMU and the bridge's attitude check cannot see a fall.

    Raises:
        ConfigError: The robot has no `dynamixel` section.
        DriverError: The port cannot be opened, a servo does not answer, answers at another baud, is another
            model, or is set up so that the calibration or the timing would be wrong (operating mode, drive
            mode's reverse bit, return delay).
    """

    def __init__(self, cfg: RobotConfig, port: str | None = None, imu: ImuSource | None = None):
        if cfg.dynamixel is None:
            raise ConfigError(cfg.source, "dynamixel", f"robot '{cfg.name}' has no dynamixel section "
                              "(ids, baud, direction, offset_rad ...); add one to use the dynamixel driver")
        self.cfg = cfg
        self.dxl = cfg.dynamixel
        self.joint_names = list(cfg.joint_names)
        self.port_name = port or self.dxl.port
        self.units = dxl.ServoUnits.from_config(self.dxl)
        self.imu = imu
        self.stats = DriverStats()
        self._ph = _PacketHandler()
        self._port: _Port | None = None
        self._ticks = np.zeros(len(self.joint_names), dtype=np.int64)
        self._gains: tuple | None = None
        self.torque_enabled = False
        self._connect()

    # ------------------------------------------------------------ interface
    def read_state(self) -> RobotState:
        """One Sync Read of current, velocity and position of every servo."""
        group = self._read_group
        self._transact(group, group.txRxPacket, "Sync Read of present current/velocity/position")
        n = len(self.dxl.ids)
        cur, vel, pos = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        for i, sid in enumerate(self.dxl.ids):
            data = bytes(group.data_dict[sid])
            cur[i] = int.from_bytes(data[0:2], "little", signed=True)
            vel[i] = int.from_bytes(data[2:6], "little", signed=True)
            pos[i] = int.from_bytes(data[6:10], "little", signed=True)
        self._ticks = pos
        self.stats.cycles += 1
        quat, gyro, acc = self.imu() if self.imu else (_UPRIGHT, np.zeros(3), _GRAVITY)
        u = self.units
        return RobotState(stamp_s=time.monotonic(), joint_pos=u.ticks_to_rad(pos), joint_vel=u.units_to_rad_s(vel),
                          joint_torque=u.current_to_nm(cur), imu_quat=np.asarray(quat, dtype=np.float64),
                          imu_ang_vel=np.asarray(gyro, dtype=np.float64), imu_lin_acc=np.asarray(acc, dtype=np.float64))

    def write_command(self, command: JointCommand) -> None:
        """Goal positions in one Sync Write; gains in another when they changed."""
        u = self.units
        kp, kd = u.kp_to_units(command.kp), u.kd_to_units(command.kd)
        if self._gains is None or not (np.array_equal(kp, self._gains[0]) and np.array_equal(kd, self._gains[1])):
            for i, sid in enumerate(self.dxl.ids):
                block = int(kd[i]).to_bytes(2, "little") + b"\x00\x00" + int(kp[i]).to_bytes(2, "little")
                self._gain_group.changeParam(sid, list(block))
            self._transact(self._gain_group, self._gain_group.txPacket, "Sync Write of position gains")
            self._gains = (kp, kd)
        goal = np.where(kp > 0, u.rad_to_ticks(command.position), self._ticks)
        self._write_all(self._goal_group, goal, 4)
        self._transact(self._goal_group, self._goal_group.txPacket, "Sync Write of goal positions")

    def set_torque_enabled(self, enabled: bool) -> None:
        """Torque on (goal = present position first, so nothing moves) or off, for every servo."""
        if enabled:
            self.read_state()
            self._write_all(self._goal_group, self._ticks, 4)
            self._transact(self._goal_group, self._goal_group.txPacket, "Sync Write of goal positions")
        self._sync_write(dxl.TORQUE_ENABLE, [int(enabled)] * len(self.dxl.ids))
        self.torque_enabled = enabled

    def close(self) -> None:
        """Torque off for every servo, port closed."""
        if self._port is None:
            return
        try:
            self._sync_write(dxl.TORQUE_ENABLE, [0] * len(self.dxl.ids))
        except DriverError:
            pass
        finally:
            self._disconnect()

    def reconnect(self) -> None:
        """Reopen the port; servos back to a known state (watchdog cleared and re-armed, goal = present)."""
        self._disconnect()
        self._connect()
        self.stats.reconnects += 1

    # -------------------------------------------------------------- private
    def _connect(self) -> None:
        name, baud = self.port_name, self.dxl.baud
        if not os.path.exists(name):
            raise DriverError(f"serial port {name} does not exist (adapter unplugged, or wrong dynamixel.port "
                              f"in {self.cfg.source})")
        port = _Port(name, self.dxl)
        try:
            port.setBaudRate(baud)  # opens the port at that speed
        except (serial.SerialException, OSError) as err:
            raise DriverError(f"cannot open serial port {name}: {err}") from None
        self._port = port
        models = {sid: self._ping(sid) for sid in self.dxl.ids}
        missing = [sid for sid, model in models.items() if model is None]
        if missing:
            found = [sid for sid in self.dxl.ids if sid not in missing]
            message = self._missing_message(missing, found)
            self._disconnect()
            raise DriverError(message)
        wrong = {sid: model for sid, model in models.items() if self.dxl.model_number not in (0, model)}
        if wrong:
            self._disconnect()
            raise DriverError(f"servo(s) on {self.port_name} of another model than dynamixel.model_number "
                              f"{self.dxl.model_number} ({self.cfg.source}): "
                              + ", ".join(f"ID {sid} ({self._joint(sid)}) is model {m}" for sid, m in wrong.items()))
        self._check_setup()
        self._read_group = sdk.GroupSyncRead(port, self._ph, *dxl.PRESENT_BLOCK)
        for sid in self.dxl.ids:
            self._read_group.addParam(sid)
        self._goal_group = sdk.GroupSyncWrite(port, self._ph, *dxl.GOAL_POSITION)
        self._gain_group = sdk.GroupSyncWrite(port, self._ph, *dxl.GAINS_BLOCK)
        for sid in self.dxl.ids:
            self._goal_group.addParam(sid, [0, 0, 0, 0])
            self._gain_group.addParam(sid, [0] * 6)
        self._gains = None
        self._sync_write(dxl.BUS_WATCHDOG, [0] * len(self.dxl.ids))  # clears a Bus Watchdog Error
        self.read_state()
        self._write_all(self._goal_group, self._ticks, 4)
        self._transact(self._goal_group, self._goal_group.txPacket, "Sync Write of goal positions")
        self._sync_write(dxl.BUS_WATCHDOG, [self.dxl.watchdog_ms // 20] * len(self.dxl.ids))

    def _check_setup(self) -> None:
        """Refuse servos whose EEPROM setup would make the calibration or the timing wrong."""
        group = sdk.GroupSyncRead(self._port, self._ph, dxl.RETURN_DELAY_TIME[0], 3)  # delay, drive mode, op. mode
        for sid in self.dxl.ids:
            group.addParam(sid)
        self._transact(group, group.txRxPacket, "Sync Read of return delay, drive mode and operating mode")
        problems = []
        for sid, joint in zip(self.dxl.ids, self.joint_names):
            delay, drive, mode = group.data_dict[sid]
            if mode != dxl.POSITION_CONTROL_MODE:
                problems.append(f"servo ID {sid} ({joint}) is in Operating Mode {mode}, not position control (3)")
            if drive & 0x01:
                problems.append(f"servo ID {sid} ({joint}) has the reverse bit of Drive Mode set; direction belongs "
                                f"in dynamixel.direction")
            if delay * 2e-3 * len(self.dxl.ids) > self.dxl.timeout_ms / 2:
                problems.append(f"servo ID {sid} ({joint}) has Return Delay Time {delay} ({2 * delay} us per reply)")
        if problems:
            self._disconnect()
            raise DriverError("servo setup does not fit metaloco (set these in the EEPROM, with torque off): "
                              + "; ".join(problems))

    def _ping(self, sid: int) -> int | None:
        """The servo's model number, or None when it does not answer (`retries` + 1 pings)."""
        for _ in range(self.dxl.retries + 1):
            model, result, _ = self._ph.ping(self._port, sid)
            if result == sdk.COMM_SUCCESS:
                return model
        return None

    def _joint(self, sid: int) -> str:
        return self.joint_names[self.dxl.ids.index(sid)]

    def _missing_message(self, missing: list[int], found: list[int]) -> str:
        name, baud = self.port_name, self.dxl.baud
        if found:
            joints = [self._joint(sid) for sid in missing]
            return (f"servo ID(s) {missing} (joints {joints}) did not answer a ping on {name} at {baud} baud; "
                    f"IDs {found} did. Check power and wiring of those servos, or dynamixel.ids in {self.cfg.source}")
        first = self.dxl.ids[0]
        for other in sorted(dxl.BAUD_INDEX):
            if other == baud or not self._port.setBaudRate(other):
                continue
            if self._ping(first) is not None:
                return (f"no servo answered on {name} at {baud} baud, but servo ID {first} answers at {other} baud: "
                        f"set dynamixel.baud: {other} in {self.cfg.source}, or the servos' Baud Rate (addr 8) "
                        f"to {baud}")
        return (f"no servo answered a ping on {name} at {baud} baud (IDs {self.dxl.ids}): check power, wiring, "
                f"the port and the servos' baud rate")

    def _disconnect(self) -> None:
        if self._port is not None:
            try:
                self._port.closePort()
            except (serial.SerialException, OSError, AttributeError):
                pass
        self._port = None

    def _transact(self, group, call: Callable[[], int], what: str) -> None:
        """Run one bus transaction, retrying within the cycle; DriverError when it keeps failing or the port is gone."""
        if self._port is None:
            raise DriverError(f"dynamixel bus on {self.port_name} is not connected")
        result = sdk.COMM_SUCCESS
        for _ in range(self.dxl.retries + 1):
            try:
                result = call()
            except (serial.SerialException, OSError, termios.error) as err:
                self._disconnect()
                raise DriverError(f"lost serial port {self.port_name} during {what}: {err}") from None
            if result == sdk.COMM_SUCCESS:
                return
            if result == sdk.COMM_RX_TIMEOUT:
                self.stats.timeouts += 1
            elif result == sdk.COMM_RX_CORRUPT:
                self.stats.crc_errors += 1
            self._drain()
        silent = [sid for sid in self.dxl.ids if len(group.data_dict.get(sid, [1])) == 0]
        who = f"; first without a valid reply: servo ID {silent[0]}" if silent else ""
        raise DriverError(f"{what} on {self.port_name} failed {self.dxl.retries + 1} times: "
                          f"{self._ph.getTxRxResult(result)}{who}")

    def _drain(self) -> None:
        """Let a late or broken reply finish arriving, then drop it, so the retry reads only its own replies."""
        ser = self._port.ser
        deadline = time.monotonic() + self.dxl.timeout_ms / 1000.0
        while time.monotonic() < deadline and select.select([ser.fileno()], [], [], 0.0005)[0]:
            ser.read(ser.in_waiting or 1)
        ser.reset_input_buffer()
        self.stats.dropped_frames += 1

    def _sync_write(self, reg: tuple[int, int], values: list[int]) -> None:
        group = sdk.GroupSyncWrite(self._port, self._ph, *reg)
        for sid, value in zip(self.dxl.ids, values):
            group.addParam(sid, list(int(value).to_bytes(reg[1], "little")))
        self._transact(group, group.txPacket, f"Sync Write of register {reg[0]}")

    def _write_all(self, group: sdk.GroupSyncWrite, values: np.ndarray, size: int) -> None:
        for sid, value in zip(self.dxl.ids, values):
            group.changeParam(sid, list(int(value).to_bytes(size, "little", signed=True)))
