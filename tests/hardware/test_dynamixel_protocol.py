"""The Dynamixel codec against the packets printed in the ROBOTIS Protocol 2.0 e-Manual, byte for byte."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dynamixel_sdk import Protocol2PacketHandler
from hypothesis import given
from hypothesis import strategies as st

from metaloco.hardware import dynamixel_protocol as dxl
from metaloco.hardware.dynamixel import _PacketHandler


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# (what, our encoding, the e-Manual's bytes)
REFERENCE = [
    ("ping ID 1", lambda: dxl.encode(1, dxl.PING), "FF FF FD 00 01 03 00 01 19 4E"),
    ("ping status ID 1, XM430-W210 fw 38", lambda: dxl.encode_status(1, 0, h("06 04 26")),
     "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"),
    ("broadcast ping", lambda: dxl.encode(0xFE, dxl.PING), "FF FF FD 00 FE 03 00 01 31 42"),
    ("ping status ID 2", lambda: dxl.encode_status(2, 0, h("06 04 26")), "FF FF FD 00 02 07 00 55 00 06 04 26 6F 6D"),
    ("read Present Position", lambda: dxl.encode(1, dxl.READ, h("84 00 04 00")),
     "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15"),
    ("read status 166", lambda: dxl.encode_status(1, 0, (166).to_bytes(4, "little")),
     "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0"),
    ("write Goal Position 512", lambda: dxl.encode(1, dxl.WRITE, h("74 00 00 02 00 00")),
     "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89"),
    ("write status", lambda: dxl.encode_status(1), "FF FF FD 00 01 04 00 55 00 A1 0C"),
    ("sync read IDs 1, 2", lambda: dxl.encode(0xFE, dxl.SYNC_READ, h("84 00 04 00 01 02")),
     "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA"),
    ("sync read status ID 2 = 2079", lambda: dxl.encode_status(2, 0, (2079).to_bytes(4, "little")),
     "FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE"),
    ("sync write 150 and 170", lambda: dxl.encode(0xFE, dxl.SYNC_WRITE, h("74 00 04 00 01 96 00 00 00 02 AA 00 00 00")),
     "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87"),
]


@pytest.mark.parametrize("what,ours,manual", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_packets_match_the_emanual(what, ours, manual):
    assert ours().hex(" ").upper() == manual


@pytest.mark.parametrize("what,ours,manual", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_parser_reads_the_emanual_packets(what, ours, manual):
    raw = h(manual)
    packets = dxl.PacketParser().feed(raw)
    assert len(packets) == 1
    assert packets[0].id == raw[4] and packets[0].instruction == raw[7]
    assert packets[0].params == raw[8:-2]


def test_crc_is_the_protocol_crc():
    # CRC-16/BUYPASS (poly 0x8005, init 0): check value of "123456789" is 0xFEE8.
    assert dxl.crc16(b"123456789") == 0xFEE8


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_crc_agrees_with_the_official_sdk(data, start):
    official = Protocol2PacketHandler().updateCRC(start, list(data), len(data))
    assert dxl.crc16(data, start) == official
    assert _PacketHandler().updateCRC(start, list(data) + [0x55], len(data)) == official, "the driver's handler"


def test_stuffing_hides_the_header_inside_a_packet():
    params = h("00 00 FF FF FD 05")
    packet = dxl.encode(1, dxl.WRITE, params)
    body = packet[7:-2]
    assert body == h("03 00 00 FF FF FD FD 05"), "an FD is inserted after FF FF FD"
    assert int.from_bytes(packet[5:7], "little") == len(body) + 2, "length counts the stuffed bytes"
    assert dxl.crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little"), "CRC covers the stuffed bytes"
    (decoded,) = dxl.PacketParser().feed(packet)
    assert decoded.params == params


def test_stuffing_matches_the_official_sdk():
    sdk = Protocol2PacketHandler()
    params = list(h("10 00 FF FF FD 01 FF FF FD FD"))
    tx = [0xFF, 0xFF, 0xFD, 0x00, 1, len(params) + 3, 0, dxl.WRITE] + params + [0, 0]
    stuffed = sdk.addStuffing(tx)
    length = stuffed[5] | stuffed[6] << 8
    assert bytes(stuffed[7:7 + length - 2]) == dxl.encode(1, dxl.WRITE, bytes(params))[7:-2]


def test_parser_resynchronises_after_garbage_and_split_reads():
    ping = dxl.encode(3, dxl.PING)
    stream = h("FF 00 FF FF FD 13 37") + ping + h("FF FF") + ping
    parser = dxl.PacketParser()
    packets = []
    for i in range(0, len(stream), 3):  # three bytes at a time, as a slow line delivers them
        packets += parser.feed(stream[i:i + 3])
    assert [(p.id, p.instruction) for p in packets] == [(3, dxl.PING), (3, dxl.PING)]


def test_parser_drops_and_counts_a_bad_crc():
    bad = bytearray(dxl.encode(5, dxl.PING))
    bad[-1] ^= 0x01
    parser = dxl.PacketParser()
    assert parser.feed(bytes(bad)) == []
    assert parser.crc_errors == 1 and parser.last_bad_id == 5
    assert len(parser.feed(dxl.encode(5, dxl.PING))) == 1, "the next good packet still gets through"


def test_units_follow_the_calibration():
    units = dxl.ServoUnits(direction=np.array([1.0, -1.0]), offset_rad=np.array([0.0, 1.57]),
                           torque_constant=np.array([2.409, 2.409]), kp_per_unit=0.025, kd_per_unit=0.001)
    ticks = units.rad_to_ticks(np.array([0.5, 1.57 + 0.5]))
    step = 2 * math.pi / 4096
    assert ticks[0] == 2048 + round(0.5 / step) and ticks[1] == 2048 - round(0.5 / step)
    assert np.allclose(units.ticks_to_rad(ticks), [0.5, 2.07], atol=step / 2)
    one_unit = 0.229 * 2 * math.pi / 60  # 0.229 rpm in rad/s
    assert np.allclose(units.units_to_rad_s(np.array([1, 1])), [one_unit, -one_unit])
    assert np.allclose(units.current_to_nm(np.array([1000, 1000])), [2.69 * 2.409, -2.69 * 2.409])
    assert list(units.kp_to_units(np.array([20.0, 0.0]))) == [800, 0]
    assert list(units.kd_to_units(np.array([0.5, 1.0]))) == [500, 1000]


def test_signed_registers():
    assert dxl.signed(0xFFFF, 2) == -1 and dxl.signed(0x7FFF, 2) == 32767
    assert dxl.signed(0xFFFFFFFE, 4) == -2
