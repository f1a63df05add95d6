"""A device at the far end of a pseudo-terminal: the plumbing both device emulators share.

A `PtyDevice` opens a pty, publishes its slave under a stable path (a symlink, as udev does for
/dev/serial/by-id/...), and answers from a thread what the host writes, through a protocol-specific
`on_bytes`. It behaves like the wire would:

- baud: the host's termios speed is visible from the master; at another speed than the device's the host's
  bytes arrive as garbage, so the device ignores them and stays silent.
- pacing (optional): a reply is released no earlier than the bytes of request and reply would have taken on
  the wire at the device's baud (10 bits per byte), so cycle rates measured over the pty include line time.
- faults (`LinkFaults`): dropped bytes, corrupted CRCs, late replies, a mute device, and `unplug()`, which
  closes the pty and removes the path, as pulling a USB adapter does; `replug()` brings a new one back there.

The device's joints live in a `RobotInterface` (the sim driver in sim-in-the-loop). Whoever else touches that
robot (a test stepping the simulation) holds `device.lock`, which the device holds around every robot call.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import tempfile
import termios
import threading
import time
import tty
from dataclasses import dataclass

from metaloco.hardware.interface import RobotInterface

_SPEEDS = {getattr(termios, f"B{b}"): b for b in (
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
    1000000, 1152000, 2000000, 2500000, 3000000, 3500000, 4000000)}


@dataclass
class LinkFaults:
    """Faults injected into a device's replies. Rates are probabilities per reply packet; change them at any time."""

    drop_byte_rate: float = 0.0
    """A random byte of the packet never arrives."""
    corrupt_crc_rate: float = 0.0
    """The packet's CRC arrives with one bit flipped."""
    late_rate: float = 0.0
    """The device answers `late_s` late (longer than the host waits)."""
    late_s: float = 0.02
    mute: bool = False
    """The device receives but never answers (a hung device, a servo without power)."""


class PtyDevice:
    """Base class of the device emulators. Subclasses implement `on_bytes` and may implement `on_idle`.

    Args:
        robot: The joints behind the device.
        baud: The device's own baud rate.
        name: File name of the port link (inside a fresh temporary folder unless `link_dir` is given).
        faults: Faults to inject (default: none).
        pace: Release replies at wire speed.
        lock: Lock around robot access shared with whoever steps the robot (default: a new one).
        link_dir: Folder for the port link.
        seed: Seed of the fault dice.
    """

    def __init__(self, robot: RobotInterface, baud: int, name: str, *, faults: LinkFaults | None = None,
                 pace: bool = False, lock: threading.RLock | None = None, link_dir: str | None = None, seed: int = 0):
        self.robot = robot
        self.baud = baud
        self.faults = faults or LinkFaults()
        self.pace = pace
        self.lock = lock or threading.RLock()
        self._own_dir = link_dir is None
        self.link_dir = tempfile.mkdtemp(prefix="metaloco-pty-") if link_dir is None else link_dir
        self.port = os.path.join(self.link_dir, name)
        """Path the host opens (a symlink to the current pty slave)."""
        self.error: BaseException | None = None
        """The first exception the device thread raised (re-raised by `close`)."""
        self.baud_mismatches = 0
        """Reads that arrived while the host's port was set to another baud rate."""
        self._rng = random.Random(seed)
        self._master: int | None = None
        self._slave: int | None = None
        self._bus_free_at = 0.0
        self._requests: list[str] = []
        self._done = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._running = True
        self._plug()
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}:{name}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------- subclass API
    def on_bytes(self, data: bytes, now: float) -> list[tuple[int, list[bytes]]]:
        """Take received bytes; return (request length on the wire, reply packets) for each request they complete."""
        raise NotImplementedError

    def on_idle(self, now: float) -> None:
        """Called at least every 5 ms, link or no link (watchdogs)."""

    def corrupt_crc(self, packet: bytes, bit: int) -> bytes:
        """`packet` with bit `bit` of its CRC flipped (default: the last byte is the CRC's high byte)."""
        return packet[:-1] + bytes([packet[-1] ^ (1 << bit)])

    # ---------------------------------------------------------------- faults
    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug(self) -> None:
        """Pull the cable: the pty closes (the host's reads and writes fail) and the port path disappears."""
        self._request("unplug")

    def replug(self) -> None:
        """Plug back in: a new pty appears at the same port path."""
        self._request("replug")

    def close(self) -> None:
        """Stop the device thread, close the pty, remove the link; re-raise any error the thread hit."""
        if self._running:
            self._running = False
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2.0)
            self._unplug()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._own_dir:
                shutil.rmtree(self.link_dir, ignore_errors=True)
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"{type(self).__name__} thread failed: {error!r}") from error

    def __enter__(self) -> PtyDevice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- private
    def _request(self, what: str) -> None:
        self._done.clear()
        self._requests.append(what)
        os.write(self._wake_w, b"x")
        if not self._done.wait(timeout=2.0):
            raise RuntimeError(f"{type(self).__name__} did not {what} within 2 s")

    def _plug(self) -> None:
        if self._master is not None:
            return
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline, from the first byte on
        tmp = self.port + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(self._slave), tmp)
        os.replace(tmp, self.port)

    def _unplug(self) -> None:
        if os.path.lexists(self.port):
            os.unlink(self.port)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def _host_baud(self) -> int | None:
        try:
            return _SPEEDS.get(termios.tcgetattr(self._master)[5])
        except termios.error:
            return None

    def _run(self) -> None:
        try:
            while self._running:
                while self._requests:
                    if self._requests.pop(0) == "unplug":
                        self._unplug()
                    else:
                        self._plug()
                    self._done.set()
                fds = [self._wake_r] if self._master is None else [self._wake_r, self._master]
                ready, _, _ = select.select(fds, [], [], 0.005)
                now = time.monotonic()
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                if self._master is not None and self._master in ready:
                    data = os.read(self._master, 65536)
                    if data:
                        self._receive(data, now)
                self.on_idle(time.monotonic())
        except BaseException as exc:  # surfaced by close(); a silent device thread would hide emulator bugs
            self.error = exc

    def _receive(self, data: bytes, now: float) -> None:
        if self._host_baud() != self.baud:
            self.baud_mismatches += 1
            return
        bit_time = 10.0 / self.baud
        for request_len, packets in self.on_bytes(data, now):
            start = max(now, self._bus_free_at)
            done = start + request_len * bit_time
            out = bytearray()
            if not self.faults.mute:
                for packet in packets:
                    out += self._damage(packet)
            done += len(out) * bit_time
            self._bus_free_at = done
            if not out:
                continue
            if self.faults.late_rate and self._rng.random() < self.faults.late_rate:
                time.sleep(self.faults.late_s)
            elif self.pace:
                _wait_until(done)
            if self._master is not None:
                os.write(self._master, bytes(out))

    def _damage(self, packet: bytes) -> bytes:
        f, rng = self.faults, self._rng
        if f.corrupt_crc_rate and rng.random() < f.corrupt_crc_rate:
            packet = self.corrupt_crc(packet, rng.randrange(8))
        if f.drop_byte_rate and rng.random() < f.drop_byte_rate:
            i = rng.randrange(len(packet))
            packet = packet[:i] + packet[i + 1:]
        return packet


def _wait_until(deadline: float) -> None:
    """Sleep, then spin the last stretch: time.sleep alone overshoots by ~60 us on Linux."""
    remaining = deadline - time.monotonic()
    if remaining > 2e-4:
        time.sleep(remaining - 1.5e-4)
    while time.monotonic() < deadline:
        pass
