"""`run_serial_bench` reports the DESIGN.md keys and the protocols' byte budgets (timings are printed, not asserted)."""

from __future__ import annotations

import pytest

from metaloco.hardware.bench import bytes_per_cycle, run_serial_bench

KEYS = {"protocol", "baud", "cycle_hz", "p99_cycle_ms", "crc_errors", "timeouts", "limit_hz"}


def test_dynamixel_bytes_per_cycle_by_hand():
    # Sync Read instruction: 10 bytes of frame + 4 (address, length) + 12 IDs = 26;
    # 12 status packets: 11 bytes of frame + 10 data = 21 each; Sync Write: 10 + 4 + 12 x (ID + 4) = 74.
    assert bytes_per_cycle("dynamixel", 12) == 26 + 12 * 21 + 74 == 352


def test_serial_bridge_bytes_per_cycle_by_hand():
    # Each frame: raw bytes + 1 COBS code byte (no run reaches 254 here) + 1 delimiter.
    # Request 4 + 2 -> 8; state 4 + 14 + 12*12 + 40 + 2 = 204 -> 206; command 4 + 2 + 144 + 2 = 152 -> 154.
    assert bytes_per_cycle("serial_bridge", 12) == 8 + 206 + 154 == 368


@pytest.mark.parametrize("protocol", ["dynamixel", "serial_bridge"])
def test_bench_reports_the_design_keys(protocol):
    result = run_serial_bench(protocol, seconds=0.3)
    assert set(result) == KEYS
    assert result["protocol"] == protocol and result["baud"] == 4_000_000
    assert result["limit_hz"] == round(4_000_000 / 10 / bytes_per_cycle(protocol, 12), 1)
    assert result["cycle_hz"] > 0 and result["p99_cycle_ms"] > 0
    assert result["crc_errors"] == 0, "a clean emulated link has no CRC errors"


def test_unknown_protocol_is_named():
    with pytest.raises(ValueError, match="unknown protocol 'can'; choose one of"):
        run_serial_bench("can", seconds=0.1)
