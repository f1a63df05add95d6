"""The microcontroller of a serial-bridge robot on a pseudo-terminal, speaking hardware/PROTOCOL.md byte for byte.

It behaves as the firmware must: it answers heartbeats and state requests, applies commands without answering,
drops every frame that fails a check, refuses commands with non-finite values or another joint count, and runs
its own watchdog: when no valid host frame arrives for `mcu_watchdog_ms` while its motors are powered, it
switches to damping by itself, raises `FAULT_WATCHDOG`, and accepts PD commands again only after the host has
sent a passive one (so torque comes back only when the host re-arms).
"""

from __future__ import annotations

import time

import numpy as np

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware.interface import JointCommand, RobotInterface
from metaloco.hardware.pty_device import LinkFaults, PtyDevice
from metaloco.hardware.robot_config import RobotConfig, SerialBridgeConfig


class SerialBridgeEmulator(PtyDevice):
    """The robot's microcontroller, as the host sees it through a serial port.

    Args:
        robot: The joints and IMU behind the MCU (e.g. the sim driver).
        cfg: The robot description (joint count, damping gain, and the `serial_bridge` section if any).
        baud: The MCU's baud rate (default: the configured one).
        faults: Faults to inject into the MCU's frames.
        pace: Release replies at wire speed.
        **kwargs: `lock`, `link_dir`, `seed` of `PtyDevice`.
    """

    def __init__(self, robot: RobotInterface, cfg: RobotConfig, *, baud: int | None = None,
                 faults: LinkFaults | None = None, pace: bool = False, **kwargs):
        link = cfg.serial_bridge or SerialBridgeConfig()
        self.n = cfg.n_joints
        self.damping_kd = cfg.damping_kd
        self.watchdog_s = link.mcu_watchdog_ms / 1000.0
        self.decoder = bp.FrameDecoder()
        self.mode = bp.MODE_PASSIVE
        self.fault_bits = 0
        """MCU-level fault bits (`FAULT_WATCHDOG`)."""
        self.faulty_joints: set[int] = set()
        """Joints whose motor driver reports a fault (indices); settable at any time."""
        self.commands_applied = 0
        self.commands_refused = 0
        self._seq = 0
        self._command_seq = 0
        self._t0 = time.monotonic()
        self._last_valid = self._t0
        super().__init__(robot, baud or link.baud, "ttyMCU0", faults=faults, pace=pace, **kwargs)
        self._hold(bp.MODE_PASSIVE)

    # -------------------------------------------------------------- device
    def on_bytes(self, data: bytes, now: float) -> list[tuple[int, list[bytes]]]:
        out = []
        for packet in self.decoder.feed(data):
            if packet.type not in (bp.HEARTBEAT, bp.STATE_REQUEST, bp.COMMAND):
                continue  # an MCU-to-host type: not for us
            self._last_valid = now
            if packet.type == bp.HEARTBEAT:
                info = bp.HeartbeatReply(packet.seq, self.n, self.mode, int(self.watchdog_s * 1000),
                                         int((now - self._t0) * 1000), self._faults())
                out.append((10, [bp.encode_heartbeat_reply(self._next_seq(), info)]))
            elif packet.type == bp.STATE_REQUEST:
                out.append((10, [self._state(packet.seq, now)]))
            else:
                self._command(packet.seq, packet.body)
                out.append((12 + 12 * self.n, []))
        return out

    def on_idle(self, now: float) -> None:
        silent = now - self._last_valid > self.watchdog_s
        if silent and self.mode != bp.MODE_PASSIVE and not self.fault_bits & bp.FAULT_WATCHDOG:
            self.fault_bits |= bp.FAULT_WATCHDOG
            self._hold(bp.MODE_DAMPING)

    def corrupt_crc(self, packet: bytes, bit: int) -> bytes:
        raw = bp.cobs_decode(packet[:-1])
        return bp.cobs_encode(raw[:-1] + bytes([raw[-1] ^ (1 << bit)])) + b"\x00"

    # ------------------------------------------------------------- private
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _faults(self) -> int:
        joints = sum(1 << i for i in self.faulty_joints)
        return self.fault_bits | joints

    def _state(self, request_seq: int, now: float) -> bytes:
        with self.lock:
            s = self.robot.read_state()
        return bp.encode_state(self._next_seq(), bp.State(
            request_seq, self._command_seq, int((now - self._t0) * 1e6), self.mode, self._faults(),
            s.joint_pos, s.joint_vel, s.joint_torque, s.imu_quat, s.imu_ang_vel, s.imu_lin_acc))

    def _command(self, seq: int, cmd: bp.Command) -> None:
        finite = all(np.all(np.isfinite(a)) for a in (cmd.position, cmd.kp, cmd.kd))
        locked_out = self.fault_bits & bp.FAULT_WATCHDOG and cmd.mode == bp.MODE_PD
        if len(cmd.position) != self.n or not finite or locked_out:
            self.commands_refused += 1
            if self.mode != bp.MODE_PASSIVE:
                self._hold(bp.MODE_DAMPING)
            return
        self._command_seq = seq
        self.commands_applied += 1
        if cmd.mode == bp.MODE_PASSIVE:
            self.fault_bits &= ~bp.FAULT_WATCHDOG  # the host re-armed
            self._hold(bp.MODE_PASSIVE)
        elif cmd.mode == bp.MODE_DAMPING:
            kd = cmd.kd if np.any(cmd.kd) else np.full(self.n, self.damping_kd)
            zeros = np.zeros(self.n)
            self._write(bp.MODE_DAMPING, JointCommand(position=zeros, kp=zeros, kd=np.maximum(kd, 0.0)))
        else:
            kp, kd = np.maximum(cmd.kp, 0.0), np.maximum(cmd.kd, 0.0)
            self._write(bp.MODE_PD, JointCommand(position=cmd.position.copy(), kp=kp, kd=kd))

    def _hold(self, mode: int) -> None:
        kd = self.damping_kd if mode == bp.MODE_DAMPING else 0.0
        self._write(mode, JointCommand.damping(self.n, kd))

    def _write(self, mode: int, command: JointCommand) -> None:
        self.mode = mode
        with self.lock:
            self.robot.write_command(command)
