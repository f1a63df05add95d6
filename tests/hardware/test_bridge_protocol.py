"""The serial bridge codec (hardware/PROTOCOL.md): COBS, CRC, layouts, and what the decoder drops."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from metaloco.hardware import bridge_protocol as bp


def crc_ccitt_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE computed bit by bit, independently of the codec's."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# COBS examples of Cheshire and Baker's paper / the usual reference table.
COBS = [
    ("00", "01 01"),
    ("00 00", "01 01 01"),
    ("11 22 00 33", "03 11 22 02 33"),
    ("11 22 33 44", "05 11 22 33 44"),
    ("11 00 00 00", "02 11 01 01 01"),
    (bytes(range(1, 255)).hex(), "FF " + bytes(range(1, 255)).hex()),
    (bytes(range(0, 255)).hex(), "01 FF " + bytes(range(1, 255)).hex()),
    (bytes(range(1, 256)).hex(), "FF " + bytes(range(1, 255)).hex() + " 02 FF"),
]


@pytest.mark.parametrize("raw,encoded", COBS)
def test_cobs_reference_vectors(raw, encoded):
    assert bp.cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
    assert bp.cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_cobs_rejects_invalid_encodings():
    assert bp.cobs_decode(bytes.fromhex("05 11 22")) is None, "code points past the end"
    assert bp.cobs_decode(bytes.fromhex("03 11 00")) is None, "a zero inside a block"


def test_crc_check_value():
    assert bp.crc16(b"123456789") == 0x29B1 == crc_ccitt_bitwise(b"123456789")


def test_state_request_frame_byte_for_byte():
    # header: version 1, type 0x02, seq 7 -> 01 02 07 00; CRC-16/CCITT-FALSE of those = 0x0583, low byte first;
    # COBS: run "01 02 07" (code 04), the zero, run "83 05" (code 03); then the delimiter.
    raw = bytes([0x01, 0x02, 0x07, 0x00])
    assert crc_ccitt_bitwise(raw) == 0x0583
    assert bp.encode(bp.STATE_REQUEST, 7) == bytes.fromhex("04 01 02 07 03 83 05 00")


def test_command_layout_matches_protocol_md():
    cmd = bp.Command(bp.MODE_PD, np.arange(12.0), np.full(12, 20.0), np.full(12, 0.5))
    raw = bp.cobs_decode(bp.encode_command(9, cmd)[:-1])
    assert len(raw) == 4 + 2 + 12 * 12 + 2
    assert raw[:4] == bytes([1, 0x03, 9, 0]) and raw[4:6] == bytes([bp.MODE_PD, 12])
    assert struct.unpack_from("<12f", raw, 6) == tuple(range(12))
    assert struct.unpack_from("<f", raw, 6 + 48)[0] == 20.0 and struct.unpack_from("<f", raw, 6 + 96)[0] == 0.5


def test_state_round_trip():
    n = 12
    s = bp.State(7, 5, 123456, bp.MODE_DAMPING, (1 << 3) | bp.FAULT_WATCHDOG, np.linspace(-1, 1, n),
                 np.full(n, 0.25), np.full(n, -2.0), np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.1, 0.2, 0.3]),
                 np.array([0.0, 0.0, 9.81]))
    (packet,) = bp.FrameDecoder().feed(bp.encode_state(42, s))
    got = packet.body
    assert packet.type == bp.STATE and packet.seq == 42
    header = (got.request_seq, got.command_seq, got.mcu_time_us, got.mode, got.fault_bits)
    assert header == (7, 5, 123456, bp.MODE_DAMPING, s.fault_bits)
    for name in ("joint_pos", "joint_vel", "joint_torque", "imu_quat", "imu_ang_vel", "imu_lin_acc"):
        assert np.allclose(getattr(got, name), getattr(s, name), atol=1e-6), name


def frame_with(raw: bytes) -> bytes:
    return bp.cobs_encode(raw + bp.crc16(raw).to_bytes(2, "little")) + b"\x00"


@pytest.mark.parametrize("why,frame", [
    ("crc", bp.encode(bp.HEARTBEAT, 1)[:-2] + bytes([bp.encode(bp.HEARTBEAT, 1)[-2] ^ 0x40]) + b"\x00"),
    ("version", frame_with(bytes([2, bp.HEARTBEAT, 1, 0]))),
    ("layout", frame_with(bytes([1, 0x55, 1, 0]))),  # unknown type
    ("layout", frame_with(bytes([1, bp.COMMAND, 1, 0, bp.MODE_PD, 12]) + bytes(12 * 11))),  # one joint short
    ("layout", frame_with(bytes([1, bp.HEARTBEAT, 1, 0, 0xAA]))),  # body where none belongs
    ("short", bp.cobs_encode(b"\x01\x02") + b"\x00"),
    ("cobs", bytes([0x09, 0x01, 0x02, 0x00])),
])
def test_decoder_drops_and_counts_bad_frames(why, frame):
    decoder = bp.FrameDecoder()
    good = bp.encode(bp.HEARTBEAT, 2)
    packets = decoder.feed(frame + good)
    assert [(p.type, p.seq) for p in packets] == [(bp.HEARTBEAT, 2)], "only the good frame comes out"
    assert decoder.rejects == {why: 1}
    assert decoder.crc_errors == (why == "crc") and decoder.bad_frames == (why != "crc")


def test_decoder_names_the_peers_version():
    decoder = bp.FrameDecoder()
    decoder.feed(frame_with(bytes([3, bp.HEARTBEAT_REPLY, 1, 0]) + bytes(14)))
    assert decoder.peer_version == 3


def test_decoder_survives_split_frames_and_overlong_garbage():
    decoder = bp.FrameDecoder()
    frame = bp.encode(bp.STATE_REQUEST, 11)
    stream = bytes(range(1, 256)) * 3 + b"\x00" + frame + frame
    packets = []
    for i in range(0, len(stream), 7):
        packets += decoder.feed(stream[i:i + 7])
    assert [p.seq for p in packets] == [11, 11]
    assert decoder.rejects == {"long": 1}
