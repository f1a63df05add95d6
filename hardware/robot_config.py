"""Robot descriptions: `config/robots/<name>.yaml` loaded into a `RobotConfig`.

The joint order in this file is the joint order everywhere: sim, ONNX metadata,
ROS messages (which are always addressed by name) and drivers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from metaloco.paths import config_dir
from metaloco.schema import ConfigError, from_dict, load_yaml, spec


@dataclass
class GaitConfig:
    """The trotting trajectory generator under the policy (PMTG, Iscen et al. 2018)."""

    frequency_hz: float = spec(2.0, doc="Nominal stepping frequency.", range=(0.5, 5.0))
    swing_hip_rad: float = spec(0.0, doc="Hip abduction offset at mid-swing.", range=(-0.5, 0.5))
    swing_thigh_rad: float = spec(0.35, doc="Thigh flexion at mid-swing (added to the default pose).", range=(0.0, 1.2))
    swing_knee_rad: float = spec(-0.7, doc="Knee flexion at mid-swing (added to the default pose).", range=(-1.5, 0.0))
    frequency_range_hz: float = spec(1.0, doc="How far the policy may move the frequency either way.", range=(0.0, 3.0))
    stride_rad: float = spec(0.0, doc="Largest fore-aft thigh sweep the policy may ask for.", range=(0.0, 1.0))


@dataclass
class DynamixelConfig:
    """A robot whose joints are Dynamixel X-series servos on one Protocol 2.0 bus, one servo per joint.

    A joint angle q relates to the servo's Present/Goal Position ticks t as
    `q = direction * (t - 2048) * 2*pi/4096 + offset_rad`; velocities and torques carry `direction` too.
    """

    ids: list[int] = spec(doc="Servo ID per joint, in joint order.", range=(0, 252))
    port: str = spec("/dev/ttyUSB0", doc="Serial port of the bus adapter (U2D2 or similar).")
    baud: int = spec(4_000_000, doc="Bus baud rate; every servo must be set to it (Baud Rate, addr 8).",
                     choices=(57_600, 115_200, 1_000_000, 2_000_000, 3_000_000, 4_000_000))
    direction: list[int] = spec(default_factory=lambda: [1], choices=(-1, 1),
                                doc="+1 or -1 per joint (or one for all): servo sense vs joint sense.")
    offset_rad: list[float] = spec(default_factory=lambda: [0.0],
                                   doc="Joint angle (rad) at the servo's center tick 2048, per joint or one for all.")
    torque_constant_nm_per_a: list[float] = spec(default_factory=lambda: [2.409], range=(0.01, 100.0),
                                                 doc="Joint torque per motor current (Nm/A), per joint or one for all "
                                                     "(XM540-W270 at 12 V: 2.409).")
    model_number: int = spec(1120, range=(0, 65535),
                             doc="Model Number every servo must report on ping (1120: XM540-W270; 0 accepts any).")
    kp_per_unit: float = spec(0.025, range=(1e-6, 10.0),
                              doc="Joint stiffness (Nm/rad) per Position P Gain unit (addr 84), measured on the robot.")
    kd_per_unit: float = spec(0.001, range=(1e-6, 10.0),
                              doc="Joint damping (Nm s/rad) per Position D Gain unit (addr 80), measured on the robot.")
    watchdog_ms: int = spec(100, range=(20, 2540),
                            doc="Bus Watchdog (addr 98): servos stop after the bus is silent this long (x 20 ms).")
    timeout_ms: float = spec(5.0, doc="How long one transaction waits for its status packets (ms).", range=(0.5, 200.0))
    retries: int = spec(1, doc="Transactions retried within one cycle before the link counts as down.", range=(0, 5))

    def validate(self, source: str, prefix: str) -> None:
        if self.watchdog_ms % 20:
            raise ConfigError(source, f"{prefix}.watchdog_ms",
                              f"watchdog_ms {self.watchdog_ms} is not a multiple of 20 (the watchdog's unit)")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError(source, f"{prefix}.ids", f"servo ids must be unique, got {self.ids}")

    def check_joints(self, cfg: RobotConfig, source: str, prefix: str) -> None:
        """Broadcast per-joint lists to the joint count; check every joint's range fits in the servo's one turn."""
        n = cfg.n_joints
        if len(self.ids) != n:
            raise ConfigError(source, f"{prefix}.ids",
                              f"expected {n} servo IDs (one per joint in joint_names), got {len(self.ids)}")
        for key in ("direction", "offset_rad", "torque_constant_nm_per_a"):
            values = getattr(self, key)
            if len(values) == 1:
                setattr(self, key, values * n)
            elif len(values) != n:
                raise ConfigError(source, f"{prefix}.{key}",
                                  f"expected {n} values (one per joint) or 1, got {len(values)}")
        for i, name in enumerate(cfg.joint_names):
            for q in (cfg.joint_lower[i], cfg.joint_upper[i]):
                tick = 2048 + self.direction[i] * (q - self.offset_rad[i]) * 4096 / (2 * math.pi)
                if not 0 <= tick <= 4095:
                    raise ConfigError(source, f"{prefix}.offset_rad",
                                      f"joint {name}'s limit {q:+.3f} rad maps to tick {tick:.0f}, outside the "
                                      f"servo's 0..4095; center offset_rad[{i}] inside "
                                      f"[{cfg.joint_lower[i]}, {cfg.joint_upper[i]}]")


@dataclass
class SerialBridgeConfig:
    """A robot whose motor drivers sit behind a microcontroller speaking metaloco's bridge protocol.

    The protocol is specified in hardware/PROTOCOL.md.
    """

    port: str = spec("/dev/ttyACM0", doc="Serial port of the microcontroller.")
    baud: int = spec(4_000_000, doc="Baud rate of the link.", range=(9_600, 12_000_000))
    timeout_ms: float = spec(5.0, doc="How long a state request waits for its reply (ms).", range=(0.5, 200.0))
    retries: int = spec(1, doc="Requests retried within one cycle before the link counts as down.", range=(0, 5))
    mcu_watchdog_ms: int = spec(100, doc="The MCU's own watchdog: silent host this long -> the MCU damps by itself.",
                                range=(10, 5000))


@dataclass
class RobotConfig:
    """One robot: its URDF, joints, default stance, gains, limits and control period."""

    name: str = spec(doc="Robot name; the file is config/robots/<name>.yaml.")
    urdf: str = spec(doc="URDF path: absolute, relative to this file, or inside pybullet_data.")
    joint_names: list[str] = spec(doc="Actuated joints in the order used everywhere (URDF names).")
    foot_links: list[str] = spec(doc="URDF link names of the feet, one per leg.")
    default_joint_pos: list[float] = spec(doc="Standing pose (rad), in joint order.")
    kp: list[float] = spec(doc="PD stiffness (Nm/rad) per joint.", range=(0.0, 500.0))
    kd: list[float] = spec(doc="PD damping (Nm s/rad) per joint.", range=(0.0, 50.0))
    torque_limits: list[float] = spec(doc="Torque limit (Nm) per joint.", range=(0.0, 500.0))
    velocity_limits: list[float] = spec(doc="Velocity limit (rad/s) per joint.", range=(0.0, 100.0))
    joint_lower: list[float] = spec(doc="Lower position limit (rad) per joint.")
    joint_upper: list[float] = spec(doc="Upper position limit (rad) per joint.")
    control_dt: float = spec(0.02, doc="Policy period (s).", range=(0.001, 0.1))
    physics_dt: float = spec(0.005, doc="Physics and PD period (s).", range=(0.0005, 0.02))
    action_scale: float = spec(0.25, doc="Radians per unit of policy action.", range=(0.0, 2.0))
    base_height_m: float = spec(0.3, doc="Nominal standing height of the base (m).", range=(0.05, 2.0))
    min_base_height_m: float = spec(0.12, doc="Below this the robot has fallen (m).", range=(0.0, 2.0))
    max_tilt_rad: float = spec(0.9, doc="Roll or pitch beyond this is a fall, and the bridge damps.", range=(0.1, 3.2))
    damping_kd: float = spec(1.0, doc="Joint damping (Nm s/rad) in the bridge's damping state.", range=(0.0, 50.0))
    gait: GaitConfig = field(default_factory=GaitConfig)
    dynamixel: DynamixelConfig | None = spec(None, doc="Dynamixel bus of a servo-driven build (driver `dynamixel`).")
    serial_bridge: SerialBridgeConfig | None = spec(None, doc="Microcontroller link (driver `serial_bridge`).")
    source: str = spec("", doc="The file this was loaded from (filled in by load_robot).")

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def decimation(self) -> int:
        """Physics steps per control step."""
        return int(round(self.control_dt / self.physics_dt))

    def validate(self, source: str, prefix: str) -> None:
        n = len(self.joint_names)
        if n == 0:
            raise ConfigError(source, "joint_names", "at least one joint is needed")
        if len(set(self.joint_names)) != n:
            raise ConfigError(source, "joint_names", "joint names must be unique")
        for key in ("default_joint_pos", "kp", "kd", "torque_limits", "velocity_limits", "joint_lower", "joint_upper"):
            values = getattr(self, key)
            if len(values) == 1:
                setattr(self, key, values * n)
            elif len(values) != n:
                raise ConfigError(source, key, f"expected {n} values (one per joint in joint_names) or 1, got {len(values)}")
        ratio = self.control_dt / self.physics_dt
        if abs(ratio - round(ratio)) > 1e-6:
            raise ConfigError(source, "control_dt", f"must be a whole multiple of physics_dt ({self.physics_dt})")
        if len(self.foot_links) != 4 or n != 12:
            raise ConfigError(source, "joint_names", "metaloco's gait generator expects a quadruped: 12 joints and 4 foot_links")
        if self.dynamixel is not None:
            self.dynamixel.check_joints(self, source, "dynamixel")

    def joint_index(self, name: str) -> int:
        """Index of a joint in the robot's order, with an error that lists the joints."""
        if name not in self.joint_names:
            raise ConfigError(self.source, "joint", f"robot '{self.name}' has no joint '{name}'; its joints are {self.joint_names}")
        return self.joint_names.index(name)


def robot_path(name: str) -> Path:
    """The YAML file of robot `name`, with an error listing the robots there are."""
    folder = config_dir() / "robots"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(str(folder), "robot", f"unknown robot '{name}'; known robots are {known}")
    return path


def load_robot(name_or_path: str | Path) -> RobotConfig:
    """Load a robot description by name (`a1`) or path.

    Args:
        name_or_path: A robot name from config/robots/ or a YAML path.

    Returns:
        The validated `RobotConfig`.
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else robot_path(text)
    cfg = from_dict(RobotConfig, load_yaml(path), str(path))
    cfg.source = str(path)
    return cfg


def resolve_urdf(cfg: RobotConfig) -> Path:
    """Find the robot's URDF file, or raise an error naming the robot file and the places searched."""
    candidates = [Path(cfg.urdf)]
    if cfg.source:
        candidates.append(Path(cfg.source).parent / cfg.urdf)
    try:
        import pybullet_data

        candidates.append(Path(pybullet_data.getDataPath()) / cfg.urdf)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(cfg.source, "urdf", f"URDF '{cfg.urdf}' not found; looked in {[str(c) for c in candidates]}")
