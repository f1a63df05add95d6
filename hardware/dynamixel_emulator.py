"""A bus of Dynamixel X-series servos on a pseudo-terminal, answering Protocol 2.0 byte for byte.

Each servo keeps its own control table (the registers in `dynamixel_protocol`) and answers Ping, Read, Write,
Sync Read and Sync Write as the e-Manual describes: status packets in the order of the Sync Read's ID list,
no status for broadcast writes, a CRC Error status for a damaged packet addressed to it, Access Error for
registers it does not have or may not write, and its Bus Watchdog: with torque on and the watchdog armed, a
bus silent for longer than the watchdog makes the servo stop (hold where it is), the register reads -1
(0xFF) and goal writes are refused until the host writes 0 to it.

The servos' position controllers are the robot's PD: goal ticks become joint targets through the robot's
calibration (`ServoUnits`), Position P and D Gain become kp and kd, a servo with torque off gets zero gains.
"""

from __future__ import annotations

import numpy as np

from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.interface import JointCommand, RobotInterface
from metaloco.hardware.pty_device import LinkFaults, PtyDevice
from metaloco.hardware.robot_config import RobotConfig
from metaloco.schema import ConfigError

_WRITABLE = set(range(64, 66)) | set(range(76, 92)) | {98} | set(range(100, 120))
"""RAM registers a host may write (Torque Enable, LED, gains, Bus Watchdog, goals)."""
_GOALS = set(range(100, 120))


class DynamixelEmulator(PtyDevice):
    """The robot's servo bus, as the host sees it through a serial port.

    Args:
        robot: The joints behind the servos (e.g. the sim driver).
        cfg: The robot description; its `dynamixel` section gives IDs, calibration and baud.
        baud: The servos' baud rate (default: the configured one; set another to emulate misconfigured servos).
        faults: Faults to inject into status packets.
        silent_ids: Servos that do not answer anything (no power, broken cable); changeable at any time.
        pace: Release status packets at wire speed.
        **kwargs: `lock`, `link_dir`, `seed` of `PtyDevice`.
    """

    def __init__(self, robot: RobotInterface, cfg: RobotConfig, *, baud: int | None = None,
                 faults: LinkFaults | None = None, silent_ids: set[int] | None = None, pace: bool = False, **kwargs):
        if cfg.dynamixel is None:
            raise ConfigError(cfg.source, "dynamixel", f"robot '{cfg.name}' has no dynamixel section to emulate")
        self.ids = list(cfg.dynamixel.ids)
        self.units = dxl.ServoUnits.from_config(cfg.dynamixel)
        self.silent_ids = set(silent_ids or ())
        self.parser = dxl.PacketParser()
        self.instructions = 0
        """Valid instruction packets received."""
        self._index = {sid: i for i, sid in enumerate(self.ids)}
        self._tables = {sid: bytearray(dxl.CONTROL_TABLE_SIZE) for sid in self.ids}
        self._last_seen = 0.0
        self._model = cfg.dynamixel.model_number or 1120
        baud = baud or cfg.dynamixel.baud
        for sid, table in self._tables.items():
            self._put(table, dxl.MODEL_NUMBER, self._model)
            self._put(table, dxl.FIRMWARE_VERSION, 46)
            self._put(table, dxl.ID, sid)
            self._put(table, dxl.BAUD_RATE, dxl.BAUD_INDEX[baud])
            self._put(table, dxl.OPERATING_MODE, 3)
            self._put(table, dxl.POSITION_P_GAIN, 800)
        super().__init__(robot, baud, "ttyDXL0", faults=faults, pace=pace, **kwargs)
        with self.lock:
            self._refresh_present()
        for table in self._tables.values():
            table[116:120] = table[132:136]  # goal = where the servo is at power-up

    def set_register(self, servo_id: int, reg: tuple[int, int], value: int) -> None:
        """Set a register as a technician with DYNAMIXEL Wizard would (EEPROM included; for tests)."""
        self._put(self._tables[servo_id], reg, value)

    def register(self, servo_id: int, reg: tuple[int, int], signed: bool = False) -> int:
        """A register's value in servo `servo_id`'s control table (for tests and diagnostics)."""
        value = int.from_bytes(self._tables[servo_id][reg[0]:reg[0] + reg[1]], "little")
        return dxl.signed(value, reg[1]) if signed else value

    # -------------------------------------------------------------- device
    def on_bytes(self, data: bytes, now: float) -> list[tuple[int, list[bytes]]]:
        crc_before = self.parser.crc_errors
        out = []
        for packet in self.parser.feed(data):
            self.instructions += 1
            self._last_seen = now
            wire = 10 + len(packet.params)
            out.append((wire, [p for p in self._execute(packet) if p]))
        if self.parser.crc_errors != crc_before and self.parser.last_bad_id in self._tables:
            sid = self.parser.last_bad_id
            if sid not in self.silent_ids:
                out.append((10, [dxl.encode_status(sid, dxl.ERR_CRC)]))
        return out

    def on_idle(self, now: float) -> None:
        tripped = False
        for sid, table in self._tables.items():
            armed = table[98]
            if table[64] and 1 <= armed <= 127 and now - self._last_seen > armed * 0.02:
                table[98] = 0xFF  # Bus Watchdog Error: the servo stops where it is
                with self.lock:
                    self._refresh_present()
                table[116:120] = table[132:136]
                tripped = True
        if tripped:
            self._apply()

    # ------------------------------------------------------- instructions
    def _execute(self, p: dxl.Packet) -> list[bytes]:
        if p.instruction == dxl.SYNC_READ:
            return self._sync_read(p.params)
        if p.instruction == dxl.SYNC_WRITE:
            self._sync_write(p.params)
            return []
        targets = list(self._tables) if p.id == dxl.BROADCAST_ID else [p.id] if p.id in self._tables else []
        targets = [sid for sid in targets if sid not in self.silent_ids]
        if p.instruction == dxl.PING:
            return [dxl.encode_status(sid, 0, self._model.to_bytes(2, "little") + bytes([46])) for sid in targets]
        if p.instruction == dxl.READ and len(p.params) == 4 and p.id != dxl.BROADCAST_ID:
            addr, size = int.from_bytes(p.params[:2], "little"), int.from_bytes(p.params[2:], "little")
            return [self._read_status(sid, addr, size) for sid in targets]
        if p.instruction == dxl.WRITE and len(p.params) >= 3:
            addr, data = int.from_bytes(p.params[:2], "little"), p.params[2:]
            errors = {sid: self._write(sid, addr, data) for sid in targets}
            self._apply()
            return [] if p.id == dxl.BROADCAST_ID else [dxl.encode_status(sid, err) for sid, err in errors.items()]
        if p.id == dxl.BROADCAST_ID:
            return []
        return [dxl.encode_status(sid, dxl.ERR_INSTRUCTION) for sid in targets]

    def _sync_read(self, params: bytes) -> list[bytes]:
        if len(params) < 5:
            return []
        addr, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
        with self.lock:
            self._refresh_present()
        return [self._read_status(sid, addr, size) for sid in params[4:]
                if sid in self._tables and sid not in self.silent_ids]

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 5:
            return
        addr, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
        body = params[4:]
        step = size + 1
        for k in range(0, len(body) - size, step):
            sid = body[k]
            if sid in self._tables and sid not in self.silent_ids:
                self._write(sid, addr, body[k + 1:k + step])
        self._apply()

    def _read_status(self, sid: int, addr: int, size: int) -> bytes:
        if size == 0 or addr + size > dxl.CONTROL_TABLE_SIZE:
            return dxl.encode_status(sid, dxl.ERR_ACCESS)
        return dxl.encode_status(sid, 0, bytes(self._tables[sid][addr:addr + size]))

    def _write(self, sid: int, addr: int, data: bytes) -> int:
        table = self._tables[sid]
        span = set(range(addr, addr + len(data)))
        if not span <= _WRITABLE:
            return dxl.ERR_ACCESS
        if table[98] == 0xFF and span & _GOALS:
            return dxl.ERR_DATA_RANGE  # goals are read-only while the Bus Watchdog Error stands
        table[addr:addr + len(data)] = data
        return 0

    # ----------------------------------------------------------- physics
    def _refresh_present(self) -> None:
        state = self.robot.read_state()
        u = self.units
        ticks = u.rad_to_ticks(state.joint_pos)
        vel = u.rad_s_to_units(state.joint_vel)
        cur = u.nm_to_current(state.joint_torque)
        for sid, i in self._index.items():
            table = self._tables[sid]
            table[126:128] = int(cur[i]).to_bytes(2, "little", signed=True)
            table[128:132] = int(vel[i]).to_bytes(4, "little", signed=True)
            table[132:136] = int(ticks[i]).to_bytes(4, "little", signed=True)

    def _apply(self) -> None:
        n = len(self.ids)
        goal, kp, kd = np.zeros(n), np.zeros(n), np.zeros(n)
        for sid, i in self._index.items():
            table = self._tables[sid]
            goal[i] = int.from_bytes(table[116:120], "little", signed=True)
            if table[64]:
                kp[i] = int.from_bytes(table[84:86], "little")
                kd[i] = int.from_bytes(table[80:82], "little")
        u = self.units
        command = JointCommand(position=u.ticks_to_rad(goal), kp=kp * u.kp_per_unit, kd=kd * u.kd_per_unit)
        with self.lock:
            self.robot.write_command(command)

    @staticmethod
    def _put(table: bytearray, reg: tuple[int, int], value: int) -> None:
        table[reg[0]:reg[0] + reg[1]] = value.to_bytes(reg[1], "little")
