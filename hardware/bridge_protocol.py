"""metaloco's serial bridge protocol, version 1: the codec both ends use (specification: hardware/PROTOCOL.md).

A frame on the wire is `COBS(header | body | crc16) 0x00`:

    header  u8 version, u8 type, u16 seq        (little endian throughout)
    body    per type, fixed length for a given joint count
    crc16   CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of header and body

COBS (Cheshire and Baker, 1999) removes every 0x00 from the frame, so 0x00 only ever delimits frames and a
receiver resynchronises at the next one after any garbage. `FrameDecoder` returns only frames whose COBS,
length, CRC, version, type and body length are all right, and counts every other one.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np

VERSION = 1
HEARTBEAT, STATE_REQUEST, COMMAND = 0x01, 0x02, 0x03
"""Host -> MCU packet types."""
HEARTBEAT_REPLY, STATE = 0x81, 0x82
"""MCU -> host packet types (high bit set)."""
MODE_PASSIVE, MODE_PD, MODE_DAMPING = 0, 1, 2
FAULT_WATCHDOG = 1 << 24
"""Fault bit: the MCU's watchdog fired (no valid host frame for its period); it damps until told passive."""
JOINT_FAULT_MASK = (1 << 24) - 1
MAX_JOINTS = 24
MAX_FRAME = 512
"""Longest encoded frame (bytes, delimiter excluded) a receiver buffers before dropping it."""

_HEADER = struct.Struct("<BBH")
_STATE_HEAD = struct.Struct("<HHIBBI")
_COMMAND_HEAD = struct.Struct("<BB")
_HEARTBEAT_REPLY = struct.Struct("<HBBHII")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR (check value 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: `data` without any 0x00, one code byte per run (and per 254 bytes)."""
    out = bytearray()
    runs = data.split(b"\x00")
    for k, run in enumerate(runs):
        while len(run) >= 254:
            out.append(0xFF)
            out += run[:254]
            run = run[254:]
            if not run and k == len(runs) - 1:
                return bytes(out)  # a full last block needs no closing code
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Undo `cobs_encode`; None if `data` is not a valid encoding (a zero byte, a code pointing past the end)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        block = data[i + 1:end]
        if 0 in block:
            return None
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass
class Packet:
    """One valid frame's contents."""

    type: int
    seq: int
    body: object | None
    """`Command`, `State`, `HeartbeatReply`, or None for the empty host requests."""


@dataclass
class Command:
    """Host -> MCU: PD targets for every joint and the mode to run them in."""

    mode: int
    position: np.ndarray
    kp: np.ndarray
    kd: np.ndarray


@dataclass
class State:
    """MCU -> host: one reading of every sensor, answering the state request `request_seq`."""

    request_seq: int
    command_seq: int
    """Seq of the last command the MCU applied."""
    mcu_time_us: int
    mode: int
    fault_bits: int
    joint_pos: np.ndarray
    joint_vel: np.ndarray
    joint_torque: np.ndarray
    imu_quat: np.ndarray
    imu_ang_vel: np.ndarray
    imu_lin_acc: np.ndarray


@dataclass
class HeartbeatReply:
    """MCU -> host: who the MCU is and how it is, answering the heartbeat `request_seq`."""

    request_seq: int
    n_joints: int
    mode: int
    watchdog_ms: int
    uptime_ms: int
    fault_bits: int


def encode(ptype: int, seq: int, body: bytes = b"") -> bytes:
    """A complete frame, delimiter included."""
    raw = _HEADER.pack(VERSION, ptype, seq & 0xFFFF) + body
    return cobs_encode(raw + crc16(raw).to_bytes(2, "little")) + b"\x00"


def encode_command(seq: int, cmd: Command) -> bytes:
    arrays = np.concatenate([cmd.position, cmd.kp, cmd.kd]).astype("<f4")
    return encode(COMMAND, seq, _COMMAND_HEAD.pack(cmd.mode, len(cmd.position)) + arrays.tobytes())


def encode_state(seq: int, s: State) -> bytes:
    n = len(s.joint_pos)
    head = _STATE_HEAD.pack(s.request_seq & 0xFFFF, s.command_seq & 0xFFFF, s.mcu_time_us & 0xFFFFFFFF, s.mode, n,
                            s.fault_bits)
    arrays = np.concatenate([s.joint_pos, s.joint_vel, s.joint_torque, s.imu_quat, s.imu_ang_vel, s.imu_lin_acc])
    arrays = arrays.astype("<f4")
    return encode(STATE, seq, head + arrays.tobytes())


def encode_heartbeat_reply(seq: int, h: HeartbeatReply) -> bytes:
    body = _HEARTBEAT_REPLY.pack(h.request_seq & 0xFFFF, h.n_joints, h.mode, h.watchdog_ms, h.uptime_ms, h.fault_bits)
    return encode(HEARTBEAT_REPLY, seq, body)


def _decode_body(ptype: int, body: bytes) -> object | None:
    """The typed body, or raise ValueError when its length or contents do not fit its type."""
    if ptype in (HEARTBEAT, STATE_REQUEST):
        if body:
            raise ValueError("non-empty body")
        return None
    if ptype == COMMAND:
        mode, n = _COMMAND_HEAD.unpack_from(body)
        if mode > MODE_DAMPING or not 0 < n <= MAX_JOINTS or len(body) != _COMMAND_HEAD.size + 12 * n:
            raise ValueError("command layout")
        a = np.frombuffer(body, "<f4", offset=_COMMAND_HEAD.size).astype(np.float64)
        return Command(mode, a[:n], a[n:2 * n], a[2 * n:])
    if ptype == STATE:
        req, cmd, t_us, mode, n, faults = _STATE_HEAD.unpack_from(body)
        if mode > MODE_DAMPING or not 0 < n <= MAX_JOINTS or len(body) != _STATE_HEAD.size + 4 * (3 * n + 10):
            raise ValueError("state layout")
        a = np.frombuffer(body, "<f4", offset=_STATE_HEAD.size).astype(np.float64)
        return State(req, cmd, t_us, mode, faults, a[:n], a[n:2 * n], a[2 * n:3 * n], a[3 * n:3 * n + 4],
                     a[3 * n + 4:3 * n + 7], a[3 * n + 7:])
    if ptype == HEARTBEAT_REPLY:
        if len(body) != _HEARTBEAT_REPLY.size:
            raise ValueError("heartbeat layout")
        return HeartbeatReply(*_HEARTBEAT_REPLY.unpack(body))
    raise ValueError("unknown type")


def decode_frame(frame: bytes) -> tuple[Packet | None, str]:
    """Check and decode one frame (delimiter removed). Returns (packet, "") or (None, why it was rejected)."""
    raw = cobs_decode(frame)
    if raw is None:
        return None, "cobs"
    if len(raw) < _HEADER.size + 2:
        return None, "short"
    if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        return None, "crc"
    version, ptype, seq = _HEADER.unpack_from(raw)
    if version != VERSION:
        return None, "version"
    try:
        body = _decode_body(ptype, raw[_HEADER.size:-2])
    except (ValueError, struct.error):
        return None, "layout"
    return Packet(ptype, seq, body), ""


class FrameDecoder:
    """Splits a byte stream at 0x00 delimiters and returns the valid packets; never raises on any input.

    Attributes:
        frames: Valid frames returned.
        crc_errors: Frames whose CRC did not match.
        bad_frames: Frames dropped for anything else: invalid COBS, too short or too long, another protocol
            version, an unknown type, a body that does not fit its type.
        rejects: Count of dropped frames per reason.
    """

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        self.crc_errors = 0
        self.bad_frames = 0
        self.rejects: dict[str, int] = {}
        self.peer_version: int | None = None
        """Protocol version of the last CRC-valid frame of another version (to name it in errors)."""

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        if b"\x00" not in data:
            if len(self._buf) > MAX_FRAME:
                self._buf.clear()
                self._overflow = True
            return []
        *frames, rest = bytes(self._buf).split(b"\x00")
        self._buf = bytearray(rest)
        packets = []
        for frame in frames:
            if self._overflow:  # the tail of a frame whose head was thrown away
                self._overflow = False
                self._reject("long")
                continue
            if not frame:
                continue  # back-to-back delimiters: a sender may flush with an extra 0x00
            packet, why = decode_frame(frame) if len(frame) <= MAX_FRAME else (None, "long")
            if packet is None:
                self._reject(why)
                if why == "version":
                    self.peer_version = cobs_decode(frame)[0]
            else:
                self.frames += 1
                packets.append(packet)
        if len(self._buf) > MAX_FRAME:
            self._buf.clear()
            self._overflow = True
        return packets

    def reset(self) -> None:
        """Forget a partial frame (after reopening a port)."""
        self._buf.clear()
        self._overflow = False

    def _reject(self, why: str) -> None:
        self.rejects[why] = self.rejects.get(why, 0) + 1
        if why == "crc":
            self.crc_errors += 1
        else:
            self.bad_frames += 1
