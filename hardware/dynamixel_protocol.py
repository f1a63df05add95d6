"""Dynamixel Protocol 2.0 on the wire: CRC, byte stuffing, packets, the X-series registers metaloco uses, units.

Packet layout (ROBOTIS e-Manual, "DYNAMIXEL Protocol 2.0"):

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAMS... | CRC_L CRC_H

LEN counts INST, PARAMS and CRC (a status packet's ERR byte is its first parameter). Inside INST..PARAMS
every `FF FF FD` gets a stuffing `FD` appended; LEN and CRC cover the stuffed bytes. The CRC is CRC-16
with polynomial 0x8005, initial value 0, no reflection, no final XOR, over everything before it.

The host side uses ROBOTIS's `dynamixel_sdk`; this module is metaloco's own codec for the device side
(the emulator) and for checking packets byte for byte in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_PACKET_LEN = 1024
"""Longest packet (bytes) either side accepts; the SDK's own buffer limit."""

# Instructions
PING, READ, WRITE, SYNC_READ, SYNC_WRITE, STATUS = 0x01, 0x02, 0x03, 0x82, 0x83, 0x55
# Status error numbers (bits 0..6 of ERR); bit 7 is the hardware Alert.
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_DATA_RANGE, ERR_DATA_LENGTH, ERR_ACCESS = 1, 2, 3, 4, 5, 7
ERR_ALERT = 0x80

# X-series control table (e.g. XM540-W270): (address, size in bytes).
MODEL_NUMBER = (0, 2)
FIRMWARE_VERSION = (6, 1)
ID = (7, 1)
BAUD_RATE = (8, 1)
RETURN_DELAY_TIME = (9, 1)
DRIVE_MODE = (10, 1)
OPERATING_MODE = (11, 1)
POSITION_CONTROL_MODE = 3
TORQUE_ENABLE = (64, 1)
HARDWARE_ERROR_STATUS = (70, 1)
POSITION_D_GAIN = (80, 2)
POSITION_I_GAIN = (82, 2)
POSITION_P_GAIN = (84, 2)
BUS_WATCHDOG = (98, 1)
GOAL_POSITION = (116, 4)
PRESENT_CURRENT = (126, 2)
PRESENT_VELOCITY = (128, 4)
PRESENT_POSITION = (132, 4)
CONTROL_TABLE_SIZE = 147
PRESENT_BLOCK = (126, 10)
"""Present Current, Velocity and Position are contiguous: one Sync Read gets all three."""
GAINS_BLOCK = (80, 6)
"""Position D, I and P Gain are contiguous: one Sync Write sets all three."""

BAUD_INDEX = {9_600: 0, 57_600: 1, 115_200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6, 4_500_000: 7}
"""Baud Rate register (addr 8) value for each bus speed."""

TICKS_PER_REV = 4096
CENTER_TICK = 2048
VELOCITY_UNIT_RPM = 0.229
CURRENT_UNIT_A = 0.00269


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """The Protocol 2.0 CRC-16 (poly 0x8005, init 0, MSB first) of `data`, continuing from `crc`."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert a 0xFD after every `FF FF FD` in INST..PARAMS (the header must not appear inside a packet)."""
    if b"\xff\xff\xfd" not in body:
        return body
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:] == b"\xff\xff\xfd":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo `stuff`: drop the 0xFD that follows each `FF FF FD`."""
    if b"\xff\xff\xfd\xfd" not in body:
        return body
    out = bytearray()
    skip = False
    for i, byte in enumerate(body):
        if skip:
            skip = False
            continue
        out.append(byte)
        if byte == 0xFD and i >= 2 and body[i - 2:i + 2] == b"\xff\xff\xfd\xfd":
            skip = True
    return bytes(out)


def encode(packet_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet: header, ID, length, stuffed instruction and parameters, CRC."""
    body = stuff(bytes([instruction]) + params)
    head = HEADER + bytes([packet_id]) + (len(body) + 2).to_bytes(2, "little") + body
    return head + crc16(head).to_bytes(2, "little")


def encode_status(servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A status packet (instruction 0x55) from servo `servo_id`."""
    return encode(servo_id, STATUS, bytes([error]) + params)


@dataclass
class Packet:
    """One decoded packet: an instruction (host to servo) or a status (servo to host)."""

    id: int
    instruction: int
    params: bytes
    """Parameters with stuffing removed (a status packet's ERR byte first)."""


class PacketParser:
    """Finds packets in a byte stream, as a servo does: resynchronises on the header, checks length and CRC.

    Attributes:
        crc_errors: Packets whose CRC did not match (dropped).
        bad_packets: Headers followed by an impossible length (dropped).
    """

    def __init__(self):
        self._buf = bytearray()
        self.crc_errors = 0
        self.bad_packets = 0
        self.last_bad_id: int | None = None
        """ID of the last packet dropped for its CRC (a servo answers it with a CRC error)."""

    def feed(self, data: bytes) -> list[Packet]:
        """Add received bytes; return every complete, valid packet they finish."""
        self._buf += data
        buf = self._buf
        packets = []
        while True:
            start = buf.find(b"\xff\xff\xfd")
            if start < 0:
                del buf[:max(0, len(buf) - 2)]  # keep a possible partial header
                return packets
            if start:
                del buf[:start]
            if len(buf) < 7:
                return packets
            length = buf[5] | (buf[6] << 8)
            if buf[3] != 0x00 or buf[4] in (0xFD, 0xFF) or not 3 <= length <= MAX_PACKET_LEN - 7:
                self.bad_packets += 1
                del buf[:1]  # not a header here; resynchronise from the next byte
                continue
            total = 7 + length
            if len(buf) < total:
                return packets
            frame = bytes(buf[:total])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self.crc_errors += 1
                self.last_bad_id = frame[4]
                del buf[:3]
                continue
            del buf[:total]
            body = unstuff(frame[7:-2])
            packets.append(Packet(id=frame[4], instruction=body[0], params=body[1:]))


@dataclass
class ServoUnits:
    """Joint units <-> servo register units for every joint, with the robot's direction/offset calibration.

    Args:
        direction: +1 or -1 per joint.
        offset_rad: Joint angle at the center tick, per joint.
        torque_constant: Nm per A, per joint.
        kp_per_unit: Nm/rad per Position P Gain unit.
        kd_per_unit: Nm s/rad per Position D Gain unit.
    """

    direction: np.ndarray
    offset_rad: np.ndarray
    torque_constant: np.ndarray
    kp_per_unit: float
    kd_per_unit: float

    RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
    RAD_S_PER_UNIT = VELOCITY_UNIT_RPM * 2 * math.pi / 60

    @staticmethod
    def from_config(dxl) -> ServoUnits:
        """Build from a `DynamixelConfig` whose lists were broadcast to the joint count."""
        return ServoUnits(np.asarray(dxl.direction, dtype=np.float64), np.asarray(dxl.offset_rad, dtype=np.float64),
                          np.asarray(dxl.torque_constant_nm_per_a, dtype=np.float64), dxl.kp_per_unit, dxl.kd_per_unit)

    def ticks_to_rad(self, ticks: np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=np.float64)
        return self.direction * (ticks - CENTER_TICK) * self.RAD_PER_TICK + self.offset_rad

    def rad_to_ticks(self, q: np.ndarray) -> np.ndarray:
        ticks = CENTER_TICK + self.direction * (np.asarray(q, dtype=np.float64) - self.offset_rad) / self.RAD_PER_TICK
        return np.clip(np.rint(ticks), 0, TICKS_PER_REV - 1).astype(np.int64)

    def units_to_rad_s(self, units: np.ndarray) -> np.ndarray:
        return self.direction * np.asarray(units, dtype=np.float64) * self.RAD_S_PER_UNIT

    def rad_s_to_units(self, qd: np.ndarray) -> np.ndarray:
        return np.rint(self.direction * np.asarray(qd, dtype=np.float64) / self.RAD_S_PER_UNIT).astype(np.int64)

    def current_to_nm(self, units: np.ndarray) -> np.ndarray:
        return self.direction * np.asarray(units, dtype=np.float64) * CURRENT_UNIT_A * self.torque_constant

    def nm_to_current(self, tau: np.ndarray) -> np.ndarray:
        units = self.direction * np.asarray(tau, dtype=np.float64) / (CURRENT_UNIT_A * self.torque_constant)
        return np.clip(np.rint(units), -32768, 32767).astype(np.int64)

    def kp_to_units(self, kp: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.asarray(kp, dtype=np.float64) / self.kp_per_unit), 0, 16383).astype(np.int64)

    def kd_to_units(self, kd: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(np.asarray(kd, dtype=np.float64) / self.kd_per_unit), 0, 16383).astype(np.int64)


def signed(value: int, size: int) -> int:
    """A little-endian register value read as two's complement of `size` bytes."""
    bits = 8 * size
    return value - (1 << bits) if value & (1 << (bits - 1)) else value
