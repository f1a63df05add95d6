"""The `serial_bridge` driver: a robot whose motor drivers sit behind a microcontroller, over pyserial.

The host is the only side that starts an exchange (hardware/PROTOCOL.md): `read_state` sends a state request
and waits for the state that echoes its sequence number, `write_command` sends a command and waits for
nothing. Frames that fail any check are counted (`stats.crc_errors`, `stats.dropped_frames`) and never acted
on; a reply to an older request (late) is counted in `stats.extra["stale"]` and dropped. When `retries + 1`
requests in a row get no valid reply, or the port fails, the driver raises `DriverError` and the bridge damps.
"""

from __future__ import annotations

import os
import select
import time

import numpy as np
import serial

from metaloco.hardware import bridge_protocol as bp
from metaloco.hardware.interface import DriverError, DriverStats, JointCommand, RobotState
from metaloco.hardware.robot_config import RobotConfig, SerialBridgeConfig
from metaloco.schema import ConfigError


class SerialBridgeDriver:
    """`RobotInterface` over metaloco's serial bridge protocol.

    Args:
        cfg: The robot description; its `serial_bridge` section gives port, baud and timeouts.
        port: Serial port (default: the configured one).

    Raises:
        ConfigError: The robot has no `serial_bridge` section.
        DriverError: The port cannot be opened, the MCU does not answer the handshake, speaks another protocol
            version or drives another number of joints.
    """

    def __init__(self, cfg: RobotConfig, port: str | None = None):
        if cfg.serial_bridge is None:
            raise ConfigError(cfg.source, "serial_bridge", f"robot '{cfg.name}' has no serial_bridge section "
                              "(port, baud, timeout_ms ...); add one to use the serial_bridge driver")
        self.cfg = cfg
        self.link: SerialBridgeConfig = cfg.serial_bridge
        self.joint_names = list(cfg.joint_names)
        self.port_name = port or self.link.port
        self.stats = DriverStats(extra={"stale": 0, "mcu_seq_gaps": 0, "rejects": {}})
        self.decoder = bp.FrameDecoder()
        self.torque_enabled = False
        self.mcu: bp.HeartbeatReply | None = None
        """The MCU's answer to the last handshake."""
        self.mcu_mode = bp.MODE_PASSIVE
        self.mcu_faults = 0
        """Fault bits of the last state, MCU-level bits (`FAULT_WATCHDOG`) included."""
        self._ser: serial.Serial | None = None
        self._seq = 0
        self._mcu_seq: int | None = None
        self._connect()

    # ------------------------------------------------------------ interface
    def read_state(self) -> RobotState:
        """Request the state and wait for the reply to this request."""
        packet = self._exchange(bp.STATE_REQUEST, bp.STATE, "state")
        s: bp.State = packet.body
        self.mcu_mode, self.mcu_faults = s.mode, s.fault_bits
        self.stats.cycles += 1
        return RobotState(stamp_s=time.monotonic(), joint_pos=s.joint_pos, joint_vel=s.joint_vel,
                          joint_torque=s.joint_torque, imu_quat=s.imu_quat, imu_ang_vel=s.imu_ang_vel,
                          imu_lin_acc=s.imu_lin_acc, fault_bits=s.fault_bits & bp.JOINT_FAULT_MASK)

    def write_command(self, command: JointCommand) -> None:
        """Send PD targets. Mode: passive while torque is off, damping when every kp is 0, else PD."""
        if not self.torque_enabled:
            mode = bp.MODE_PASSIVE
        elif not np.any(command.kp):
            mode = bp.MODE_DAMPING
        else:
            mode = bp.MODE_PD
        self._send_command(bp.Command(mode, command.position, command.kp, command.kd))

    def set_torque_enabled(self, enabled: bool) -> None:
        """Off: the MCU goes passive at once. On: the next command decides the mode."""
        self.torque_enabled = enabled
        if not enabled:
            n = len(self.joint_names)
            self._send_command(bp.Command(bp.MODE_PASSIVE, np.zeros(n), np.zeros(n), np.zeros(n)))

    def close(self) -> None:
        """Tell the MCU to go passive (if the link still works) and close the port."""
        if self._ser is None:
            return
        try:
            self.set_torque_enabled(False)
        except DriverError:
            pass
        self._disconnect()

    def reconnect(self) -> None:
        """Reopen the port and redo the handshake."""
        self._disconnect()
        self._connect()
        self.stats.reconnects += 1

    # -------------------------------------------------------------- private
    def _connect(self) -> None:
        name, baud = self.port_name, self.link.baud
        if not os.path.exists(name):
            raise DriverError(f"serial port {name} does not exist (MCU unplugged, or wrong serial_bridge.port "
                              f"in {self.cfg.source})")
        try:
            self._ser = serial.Serial(name, baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as err:
            raise DriverError(f"cannot open serial port {name} at {baud} baud: {err}") from None
        self._ser.reset_input_buffer()
        self.decoder.reset()
        try:
            reply: bp.HeartbeatReply = self._exchange(bp.HEARTBEAT, bp.HEARTBEAT_REPLY, "heartbeat").body
        except DriverError as err:
            self._disconnect()
            raise DriverError(f"{err}. Check serial_bridge.port and serial_bridge.baud in {self.cfg.source}, and that "
                              f"the firmware speaks bridge protocol v{bp.VERSION}{self._version_hint()}") from None
        if reply.n_joints != len(self.joint_names):
            self._disconnect()
            raise DriverError(f"the MCU on {name} drives {reply.n_joints} joints; "
                              f"robot '{self.cfg.name}' has {len(self.joint_names)}")
        self.mcu = reply
        self.mcu_mode, self.mcu_faults = reply.mode, reply.fault_bits

    def _version_hint(self) -> str:
        version = self.decoder.peer_version
        return f" (it sent frames of protocol v{version})" if version is not None else ""

    def _disconnect(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except (serial.SerialException, OSError):
                pass
        self._ser = None

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _send_command(self, command: bp.Command) -> None:
        self._send(bp.encode_command(self._next_seq(), command))

    def _send(self, frame: bytes) -> None:
        if self._ser is None:
            raise DriverError(f"serial bridge on {self.port_name} is not connected")
        try:
            self._ser.write(frame)
        except (serial.SerialException, OSError) as err:
            self._disconnect()
            raise DriverError(f"lost serial port {self.port_name} while sending: {err}") from None

    def _exchange(self, request: int, reply_type: int, what: str) -> bp.Packet:
        """Send `request`, return the reply of `reply_type` that echoes its seq; retry, then DriverError."""
        timeout = self.link.timeout_ms / 1000.0
        for _ in range(self.link.retries + 1):
            seq = self._next_seq()
            self._send(bp.encode(request, seq))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                for packet in self._receive(left):
                    if packet.type == reply_type and packet.body.request_seq == seq:
                        return packet
                    self.stats.extra["stale"] += 1
            self.stats.timeouts += 1
        raise DriverError(f"no valid {what} reply from the MCU on {self.port_name} at {self.link.baud} baud within "
                          f"{self.link.timeout_ms:g} ms ({self.link.retries + 1} tries; "
                          f"{self.decoder.crc_errors} CRC errors, {self.decoder.bad_frames} bad frames so far)")

    def _receive(self, wait_s: float) -> list[bp.Packet]:
        ser = self._ser
        try:
            if not select.select([ser.fileno()], [], [], wait_s)[0]:
                return []
            data = ser.read(65536)
        except (serial.SerialException, OSError, ValueError) as err:
            self._disconnect()
            raise DriverError(f"lost serial port {self.port_name} while reading: {err}") from None
        packets = self.decoder.feed(data)
        for packet in packets:
            if self._mcu_seq is not None and packet.seq != (self._mcu_seq + 1) & 0xFFFF:
                self.stats.extra["mcu_seq_gaps"] += 1
            self._mcu_seq = packet.seq
        self.stats.crc_errors = self.decoder.crc_errors
        self.stats.dropped_frames = self.decoder.bad_frames
        self.stats.extra["rejects"] = dict(self.decoder.rejects)
        return packets
