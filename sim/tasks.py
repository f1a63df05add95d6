"""The task family: terrain, dynamics, per-joint faults and pushes, and a sampler over them.

A `Task` is everything about the world the policy is not told: it is what the
privileged vector encodes and what the adaptation module has to infer. Every part
can be set at reset and changed mid-episode (see `LocomotionEnv.apply_event`).
The schema matches the scenario files in DESIGN.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from metaloco.schema import ConfigError, spec

TERRAIN_TYPES = ("flat", "slope", "rough", "steps")
FAULT_MODES = ("locked", "limp", "weak", "bias")


@dataclass
class TerrainSpec:
    """The ground: its shape and friction."""

    type: Literal["flat", "slope", "rough", "steps"] = spec("flat", doc="Terrain kind.")
    friction: float = spec(0.8, doc="Ground friction coefficient.", range=(0.05, 2.0))
    slope_deg: float = spec(0.0, doc="Incline ahead of the start (type slope).", range=(-30.0, 30.0))
    roughness_m: float = spec(0.0, doc="Peak-to-peak height of the heightfield noise (type rough).", range=(0.0, 0.15))
    step_height_m: float = spec(0.0, doc="Rise of each stair (type steps).", range=(0.0, 0.2))

    def validate(self, source: str, prefix: str) -> None:
        needs = {"slope": "slope_deg", "rough": "roughness_m", "steps": "step_height_m"}
        for kind, key in needs.items():
            if getattr(self, key) != 0.0 and self.type != kind:
                raise ConfigError(source, f"{prefix}.{key}" if prefix else key,
                                  f"only applies to terrain type '{kind}', not '{self.type}'")


@dataclass
class DynamicsSpec:
    """Body and actuator dynamics."""

    payload_kg: float = spec(0.0, doc="Mass added to the base.", range=(0.0, 20.0))
    com_offset_m: list[float] = spec(default_factory=lambda: [0.0, 0.0, 0.0], length=3, range=(-0.2, 0.2),
                                     doc="Where the payload's mass sits, relative to the base COM, in the base frame.")
    motor_strength: float = spec(1.0, doc="Torque scale of every motor.", range=(0.0, 2.0))
    latency_ms: float = spec(0.0, doc="Delay between a command and its effect.", range=(0.0, 100.0))


@dataclass
class JointFault:
    """A fault on one joint."""

    mode: Literal["locked", "limp", "weak", "bias"] = spec(doc="locked: held where it is; limp: no torque; "
                                                               "weak: torque scaled; bias: encoder offset.")
    strength: float = spec(1.0, doc="Torque scale for mode weak.", range=(0.0, 1.0))
    offset_rad: float = spec(0.0, doc="Encoder offset for mode bias.", range=(-0.5, 0.5))


@dataclass
class Task:
    """A point in the task family."""

    terrain: TerrainSpec = field(default_factory=TerrainSpec)
    dynamics: DynamicsSpec = field(default_factory=DynamicsSpec)
    faults: dict[str, JointFault] = field(default_factory=dict)

    def copy(self) -> Task:
        return copy.deepcopy(self)


# Privileged vector layout: (name, size). n is the number of joints.
def privileged_layout(n_joints: int) -> list[tuple[str, int]]:
    """Names and sizes of the privileged vector's parts, in order."""
    return [
        ("friction", 1), ("payload_kg", 1), ("com_offset_m", 3), ("motor_strength", 1), ("latency_s", 1),
        ("slope_rad", 1), ("roughness_m", 1), ("step_height_m", 1),
        ("joint_strength", n_joints), ("joint_locked", n_joints), ("joint_bias_rad", n_joints),
        ("push_force_n", 3), ("base_lin_vel", 3),
    ]


def layout_slice(name: str, n_joints: int) -> slice:
    """Where one named part sits in the privileged vector (and in the task vector, its head)."""
    start = 0
    for part, size in privileged_layout(n_joints):
        if part == name:
            return slice(start, start + size)
        start += size
    raise KeyError(f"no part '{name}' in the privileged vector; its parts are "
                   f"{[p for p, _ in privileged_layout(n_joints)]}")


def task_vector(task: Task, joint_names: list[str]) -> np.ndarray:
    """The task part of the privileged vector (everything but push force and base velocity)."""
    n = len(joint_names)
    strength = np.ones(n)
    locked = np.zeros(n)
    bias = np.zeros(n)
    for name, fault in task.faults.items():
        i = joint_names.index(name)
        if fault.mode == "limp":
            strength[i] = 0.0
        elif fault.mode == "weak":
            strength[i] = fault.strength
        elif fault.mode == "locked":
            locked[i] = 1.0
        elif fault.mode == "bias":
            bias[i] = fault.offset_rad
    t, d = task.terrain, task.dynamics
    head = [t.friction, d.payload_kg, *d.com_offset_m, d.motor_strength, d.latency_ms / 1000.0,
            np.deg2rad(t.slope_deg), t.roughness_m, t.step_height_m]
    return np.concatenate([np.asarray(head, dtype=np.float64), strength, locked, bias])


@dataclass
class FaultRange:
    """How faults are drawn during training."""

    probability: float = spec(0.5, doc="Chance that an episode has a fault at all.", range=(0.0, 1.0))
    modes: list[str] = spec(default_factory=lambda: list(FAULT_MODES), choices=None, doc="Fault modes to draw from.")
    joints: list[str] = spec(default_factory=list, doc="Joints that may fail (empty: all but the held-out ones).")
    held_out_joints: list[str] = spec(default_factory=lambda: ["FL_lower_joint"],
                                      doc="Joints whose faults are never trained on (the test split).")
    weak_strength: list[float] = spec(default_factory=lambda: [0.2, 0.7], length=2, range=(0.0, 1.0),
                                      doc="Range of the weak joint's torque scale.")
    bias_rad: list[float] = spec(default_factory=lambda: [0.05, 0.2], length=2, range=(0.0, 0.5),
                                 doc="Range of the encoder offset's magnitude.")
    onset_s: list[float] = spec(default_factory=lambda: [0.0, 8.0], length=2, range=(0.0, 100.0),
                                doc="When in the episode the fault starts (0: from the start).")

    def validate(self, source: str, prefix: str) -> None:
        for mode in self.modes:
            if mode not in FAULT_MODES:
                raise ConfigError(source, f"{prefix}.modes", f"unknown fault mode '{mode}'; allowed are {list(FAULT_MODES)}")


@dataclass
class PushRange:
    """Random shoves on the base during training (legged_gym's `push_robots`: a 1 m/s kick every 15 s).

    A push of F newtons for `duration_s` changes a 12 kg A1's velocity by about F * duration_s / 12 m/s, so the
    default range, up to 60 N for 0.2 s on each horizontal axis, is legged_gym's kick of up to 1 m/s per axis.
    Off (`probability` 0) unless a preset turns it on; no random number is drawn for pushes while it is off.
    """

    probability: float = spec(0.0, doc="Chance that an episode is pushed at all.", range=(0.0, 1.0))
    interval_s: list[float] = spec(default_factory=lambda: [8.0, 15.0], length=2, range=(0.1, 1000.0),
                                   doc="Time before the first push and between pushes (s), drawn uniformly.")
    force_n: float = spec(60.0, doc="Largest force per horizontal axis (N), scaled by the difficulty.",
                          range=(0.0, 1000.0))
    duration_s: float = spec(0.2, doc="How long each push lasts (s).", range=(0.01, 5.0))

    def validate(self, source: str, prefix: str) -> None:
        lo, hi = self.interval_s
        if lo > hi:
            raise ConfigError(source, f"{prefix}.interval_s", f"expected [shortest, longest], got [{lo}, {hi}]")

    def draw_interval(self, rng: np.random.Generator) -> float:
        """Seconds until the next push."""
        return float(rng.uniform(*self.interval_s))

    def draw_force(self, rng: np.random.Generator, difficulty: float) -> list[float]:
        """A horizontal force (N, world frame), each axis uniform in +-force_n * difficulty."""
        fx, fy = rng.uniform(-1.0, 1.0, size=2) * self.force_n * difficulty
        return [float(fx), float(fy), 0.0]


@dataclass
class TaskRanges:
    """Ranges a `TaskSampler` draws from. `difficulty` in [0, 1] scales every range from nominal to full."""

    terrain_types: list[str] = spec(default_factory=lambda: ["flat", "slope", "rough"],
                                    doc="Terrain kinds to train on.")
    friction: list[float] = spec(default_factory=lambda: [0.4, 1.2], length=2, range=(0.05, 2.0), doc="Friction range.")
    held_out_friction: list[float] = spec(default_factory=lambda: [0.0, 0.35], length=2, range=(0.0, 2.0),
                                          doc="Frictions never trained on (the test split: ice).")
    slope_deg: float = spec(10.0, doc="Largest incline magnitude.", range=(0.0, 30.0))
    roughness_m: float = spec(0.04, doc="Largest roughness.", range=(0.0, 0.15))
    step_height_m: float = spec(0.05, doc="Largest stair rise.", range=(0.0, 0.2))
    payload_kg: list[float] = spec(default_factory=lambda: [0.0, 3.0], length=2, range=(0.0, 20.0), doc="Payload range.")
    com_offset_m: float = spec(0.05, doc="Largest payload offset per axis.", range=(0.0, 0.2))
    motor_strength: list[float] = spec(default_factory=lambda: [0.8, 1.1], length=2, range=(0.0, 2.0), doc="Range.")
    latency_ms: list[float] = spec(default_factory=lambda: [0.0, 20.0], length=2, range=(0.0, 100.0), doc="Range.")
    faults: FaultRange = field(default_factory=FaultRange)
    pushes: PushRange = field(default_factory=PushRange)

    def validate(self, source: str, prefix: str) -> None:
        for kind in self.terrain_types:
            if kind not in TERRAIN_TYPES:
                raise ConfigError(source, f"{prefix}.terrain_types",
                                  f"unknown terrain type '{kind}'; allowed are {list(TERRAIN_TYPES)}")


class TaskSampler:
    """Draws tasks from `TaskRanges`, never from the held-out split.

    Args:
        ranges: What to draw from.
        joint_names: The robot's joints (faults are drawn on these, minus the held-out ones).
        seed: Random seed.
    """

    def __init__(self, ranges: TaskRanges, joint_names: list[str], seed: int = 0):
        self.ranges = ranges
        self.joint_names = list(joint_names)
        self.rng = np.random.default_rng(seed)
        self.difficulty = 1.0
        """Curriculum level in [0, 1]: 0 draws only the nominal task, 1 the full ranges."""
        fr = ranges.faults
        for name in list(fr.joints) + list(fr.held_out_joints):
            if name not in self.joint_names:
                raise ConfigError("", "faults.joints", f"no joint '{name}'; the robot's joints are {self.joint_names}")
        pool = fr.joints or self.joint_names
        self.fault_joints = [j for j in pool if j not in fr.held_out_joints]
        self.fault_kinds = [(j, m) for j in self.fault_joints for m in fr.modes]
        """Every (joint, mode) a drawn fault can have, in a fixed order (`fault_kind`'s index)."""
        self.kind_weights: np.ndarray | None = None
        """Probabilities over `fault_kinds` for a drawn fault (None: joint and mode uniform and independent)."""

    def fault_kind(self, task: Task) -> int:
        """Index in `fault_kinds` of the task's fault (-1: none, more than one, or one never drawn)."""
        if len(task.faults) != 1:
            return -1
        (joint, fault), = task.faults.items()
        try:
            return self.fault_kinds.index((joint, fault.mode))
        except ValueError:
            return -1

    def _lerp(self, nominal: float, low: float, high: float) -> float:
        value = self.rng.uniform(low, high)
        return nominal + self.difficulty * (value - nominal)

    def sample(self) -> tuple[Task, float]:
        """Draw one task.

        Returns:
            The task, and the time (s) at which its faults begin (0: at reset).
        """
        r, d = self.ranges, self.difficulty
        kind = self.rng.choice(r.terrain_types) if d > 0 else "flat"
        terrain = TerrainSpec(type=str(kind))
        while True:
            terrain.friction = self._lerp(0.8, *r.friction)
            lo, hi = r.held_out_friction
            if not (lo <= terrain.friction <= hi):
                break
        if kind == "slope":
            terrain.slope_deg = float(self.rng.uniform(-1, 1) * r.slope_deg * d)
        elif kind == "rough":
            terrain.roughness_m = float(self.rng.uniform(0, r.roughness_m) * d)
        elif kind == "steps":
            terrain.step_height_m = float(self.rng.uniform(0, r.step_height_m) * d)
        dynamics = DynamicsSpec(
            payload_kg=float(self._lerp(0.0, *r.payload_kg)),
            com_offset_m=[float(self.rng.uniform(-1, 1) * r.com_offset_m * d) for _ in range(3)],
            motor_strength=float(self._lerp(1.0, *r.motor_strength)),
            latency_ms=float(self._lerp(0.0, *r.latency_ms)),
        )
        task = Task(terrain=terrain, dynamics=dynamics)
        fr = r.faults
        onset = 0.0
        if self.fault_joints and self.rng.random() < fr.probability * d:
            if self.kind_weights is None:
                joint = str(self.rng.choice(self.fault_joints))
                mode = str(self.rng.choice(fr.modes))
            else:
                joint, mode = self.fault_kinds[int(self.rng.choice(len(self.fault_kinds), p=self.kind_weights))]
            fault = JointFault(mode=mode)
            if mode == "weak":
                fault.strength = float(self.rng.uniform(*fr.weak_strength))
            elif mode == "bias":
                fault.offset_rad = float(self.rng.choice([-1, 1]) * self.rng.uniform(*fr.bias_rad))
            task.faults[joint] = fault
            onset = float(self.rng.uniform(*fr.onset_s))
        return task, onset
