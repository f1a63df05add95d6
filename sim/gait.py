"""From policy output to joint targets: action scale, default pose and a trotting generator.

A residual policy over a joint-space trajectory generator (PMTG, Iscen et al. 2018;
the foot trajectory generator of Lee et al. 2020). The generator trots: diagonal leg
pairs swing in turn, each swing flexing thigh and knee along half a sine, and every thigh sweeps fore and aft
once per cycle (forward in swing, back in stance) by a stride the policy sets. The
policy adds a residual per joint and modulates the generator through three more outputs:

    targets = default_pos + action_scale * actions[:n] + amplitude * lift(phase) + stride * sweep(phase)
    frequency = frequency_hz + frequency_range_hz * clip(actions[n], -1, 1)
    amplitude = clip(1 + 0.5 * actions[n + 1], 0.5, 1.5)
    stride = stride_rad * clip(actions[n + 2], -1, 1)
    sweep: per leg, thigh offset cos(2 pi psi) (leg back at lift-off, forward at touch-down)

With zero outputs the generator trots in place; speed comes from the stride. The amplitude
has a floor: the feet always step (a policy allowed to stop stepping settles on standing still).

This one module is used by the training env and by the policy node on the robot, and
`to_metadata`/`from_metadata` carry its parameters in the ONNX file, so the two cannot
drift. It needs only numpy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

# Leg order FR, FL, RR, RL: FR+RL swing together, then FL+RR.
LEG_PHASE_OFFSETS = (0.0, 0.5, 0.5, 0.0)
GAIT_OUTPUTS = 3
"""Policy outputs beyond one per joint: frequency, amplitude and stride."""


@dataclass
class TrotGenerator:
    """Parameters of the trotting generator (see module docstring)."""

    frequency_hz: float
    swing_hip_rad: float
    swing_thigh_rad: float
    swing_knee_rad: float
    frequency_range_hz: float
    stride_rad: float = 0.0
    type: str = "trot_pmtg"


class ActionMap:
    """Turns raw policy outputs into joint position targets, keeping the gait phase.

    Args:
        default_pos: Default joint pose (rad), in the robot's joint order (FR, FL, RR, RL legs of 3 joints).
        action_scale: Radians per unit of residual action.
        gait: The trajectory generator.
    """

    def __init__(self, default_pos: np.ndarray, action_scale: float, gait: TrotGenerator):
        self.default_pos = np.asarray(default_pos, dtype=np.float64)
        self.action_scale = float(action_scale)
        self.gait = gait
        self.n_joints = len(self.default_pos)
        self.n_actions = self.n_joints + GAIT_OUTPUTS
        self.phase = 0.0
        """Global gait phase in [0, 1)."""
        swing = np.array([gait.swing_hip_rad, gait.swing_thigh_rad, gait.swing_knee_rad])
        self._swing = np.tile(swing, 4)
        self._sweep = np.tile(np.array([0.0, gait.stride_rad, 0.0]), 4)
        self._leg_offsets = np.repeat(np.asarray(LEG_PHASE_OFFSETS), 3)

    @classmethod
    def from_robot(cls, robot_cfg) -> ActionMap:
        """Build from a `RobotConfig`."""
        g = robot_cfg.gait
        gait = TrotGenerator(g.frequency_hz, g.swing_hip_rad, g.swing_thigh_rad, g.swing_knee_rad, g.frequency_range_hz,
                             g.stride_rad)
        return cls(np.asarray(robot_cfg.default_joint_pos), robot_cfg.action_scale, gait)

    def reset(self, phase: float = 0.0) -> None:
        self.phase = float(phase) % 1.0

    def swing_offsets(self, phase: float, amplitude: float = 1.0, stride: float = 0.0) -> np.ndarray:
        """The generator's joint offsets at a phase (stride in [-1, 1] of `stride_rad`)."""
        leg = (phase + self._leg_offsets) % 1.0
        angle = 2.0 * np.pi * leg
        lift = np.where(leg < 0.5, np.sin(angle), 0.0)
        return amplitude * lift * self._swing + stride * np.cos(angle) * self._sweep

    def targets(self, actions: np.ndarray, dt: float) -> np.ndarray:
        """Joint targets for this control step, then advance the phase by one step.

        Args:
            actions: Raw policy output, `n_actions` values.
            dt: Control period (s).

        Returns:
            Joint position targets (rad).
        """
        a = np.asarray(actions, dtype=np.float64)
        n = self.n_joints
        amplitude = min(1.5, max(0.5, 1.0 + 0.5 * float(a[n + 1])))
        frequency = self.gait.frequency_hz + self.gait.frequency_range_hz * min(1.0, max(-1.0, float(a[n])))
        stride = min(1.0, max(-1.0, float(a[n + 2])))
        out = self.default_pos + self.action_scale * a[:n] + self.swing_offsets(self.phase, amplitude, stride)
        self.phase = (self.phase + frequency * dt) % 1.0
        return out

    def phase_observation(self) -> np.ndarray:
        """What the policy sees of the phase: (sin, cos) of 2*pi*phase."""
        angle = 2.0 * np.pi * self.phase
        return np.array([np.sin(angle), np.cos(angle)])

    def to_metadata(self) -> str:
        """The `gait` ONNX metadata value (JSON)."""
        return json.dumps({**asdict(self.gait), "leg_phase_offsets": list(LEG_PHASE_OFFSETS),
                           "outputs": ["frequency", "amplitude", "stride"],
                           "formula": "targets = default + scale*a[:n] + clip(1+0.5*a[n+1],0.5,1.5)*lift(psi)*"
                                      "(swing_hip, swing_thigh, swing_knee) + clip(a[n+2],-1,1)*cos(2 pi psi)*"
                                      "(0, stride_rad, 0), per leg with psi=(phase+leg_offset)%1 and "
                                      "lift=sin(2 pi psi) if psi<0.5 else 0; then phase += (f + f_range*clip(a[n],-1,1))*dt"})

    @classmethod
    def from_metadata(cls, default_pos: list[float], action_scale: float, gait_json: str) -> ActionMap:
        """Rebuild from ONNX metadata values."""
        g = json.loads(gait_json)
        if g.get("type") != "trot_pmtg":
            raise ValueError(f"unknown gait generator type {g.get('type')!r}; this metaloco knows 'trot_pmtg'")
        gait = TrotGenerator(g["frequency_hz"], g["swing_hip_rad"], g["swing_thigh_rad"], g["swing_knee_rad"],
                             g["frequency_range_hz"], g.get("stride_rad", 0.0))
        return cls(np.asarray(default_pos), action_scale, gait)
