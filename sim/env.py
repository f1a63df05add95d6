"""LocomotionEnv: one robot, one task, the gymnasium API.

Observation: what a real robot measures (see `observation.py`). `info["privileged"]`
holds everything about the task (see `tasks.privileged_layout`), for teacher training
and for the critic. Actions are raw policy outputs mapped to joint targets by
`gait.ActionMap`; PD runs at the physics rate inside `SimRobot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from metaloco.hardware.interface import JointCommand
from metaloco.hardware.robot_config import RobotConfig, load_robot
from metaloco.schema import spec
from metaloco.sim.gait import ActionMap
from metaloco.sim.observation import build_observation, obs_layout, quat_rotate_inverse, rotation_matrix
from metaloco.sim.reward import RewardConfig, compute_reward
from metaloco.sim.robot import SimRobot
from metaloco.sim.tasks import JointFault, Task, TaskRanges, TaskSampler, privileged_layout, task_vector

PUSH_STREAM = 0x9054
"""Second word of the push generator's seed: a stream apart from every env's `seed + k` ones."""
EDGE_MARGIN_M = 0.5
"""An episode on heightfield terrain ends (as a time-out) when the base comes this close to the field's edge."""


@dataclass
class CommandRanges:
    """Velocity commands drawn at reset and every `resample_s`."""

    vx: list[float] = spec(default_factory=lambda: [0.0, 1.0], length=2, range=(-3.0, 3.0), doc="Forward (m/s).")
    vy: list[float] = spec(default_factory=lambda: [-0.2, 0.2], length=2, range=(-3.0, 3.0), doc="Lateral (m/s).")
    yaw_rate: list[float] = spec(default_factory=lambda: [-0.5, 0.5], length=2, range=(-5.0, 5.0), doc="rad/s.")
    resample_s: float = spec(10.0, doc="How often a new command is drawn.", range=(0.1, 1000.0))


@dataclass
class EnvConfig:
    """Everything that defines a training or evaluation env."""

    robot: str = spec("a1", doc="Robot name in config/robots/.")
    episode_s: float = spec(20.0, doc="Episode length (s) before a time-out.", range=(0.1, 3600.0))
    commands: CommandRanges = field(default_factory=CommandRanges)
    reward: RewardConfig = field(default_factory=RewardConfig)
    tasks: TaskRanges = field(default_factory=TaskRanges)
    randomize_tasks: bool = spec(True, doc="Draw a task at every reset (False: the nominal task).")


class LocomotionEnv(gymnasium.Env):
    """A legged robot tracking velocity commands in one task of the family.

    Args:
        cfg: Env configuration.
        seed: Seed for tasks, commands and terrain.
        robot_cfg: Robot description (default: loaded from `cfg.robot`).
    """

    metadata = {"render_modes": []}

    def __init__(self, cfg: EnvConfig | None = None, seed: int = 0, robot_cfg: RobotConfig | None = None):
        self.cfg = cfg or EnvConfig()
        self.robot_cfg = robot_cfg or load_robot(self.cfg.robot)
        self.robot = SimRobot(self.robot_cfg, seed=seed)
        self.sampler = TaskSampler(self.cfg.tasks, self.robot_cfg.joint_names, seed=seed + 1)
        self.rng = np.random.default_rng(seed + 2)
        self.push_rng = np.random.default_rng((seed, PUSH_STREAM))
        """Draws training pushes (its own stream: turning pushes on leaves tasks and commands as they were)."""
        self.action_map = ActionMap.from_robot(self.robot_cfg)
        n = self.robot_cfg.n_joints
        self.n_actions = self.action_map.n_actions
        self.obs_layout = obs_layout(n, self.n_actions)
        self.priv_layout = privileged_layout(n)
        obs_dim = sum(s for _, s in self.obs_layout)
        self.priv_dim = sum(s for _, s in self.priv_layout)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.n_actions,), np.float32)
        self.dt = self.robot_cfg.control_dt
        self.max_steps = int(round(self.cfg.episode_s / self.dt))
        self.kp = np.asarray(self.robot_cfg.kp)
        self.kd = np.asarray(self.robot_cfg.kd)
        self.command = np.zeros(3)
        self.fixed_command = False
        self.last_action = np.zeros(self.n_actions)
        self.steps = 0
        self.pending_faults: tuple[float, dict[str, JointFault]] | None = None
        self.next_push_s: float | None = None
        """When this episode's next training push comes (None: no pushes this episode)."""
        self.fault_kind = -1
        """This episode's fault as an index in `sampler.fault_kinds` (-1: none), for the fault curriculum."""
        self._last_qd = np.zeros(n)
        self._obs = np.zeros(obs_dim, np.float32)
        self._task_vec_version = -1
        self._task_vec = np.zeros(0)

    # ------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode.

        Args:
            seed: Reseeds the env's random sources.
            options: `task` (a Task; default: drawn, or nominal), `command` ((vx, vy, yaw_rate): held fixed),
                `phase` (initial gait phase).

        Returns:
            Observation and info (with `privileged`).
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.sampler.rng = np.random.default_rng(seed + 1)
            self.robot.rng = np.random.default_rng(seed + 2)
            self.push_rng = np.random.default_rng((seed, PUSH_STREAM))
        options = options or {}
        self.pending_faults = None
        self.next_push_s = None
        if "task" in options:
            task = options["task"]
            self.fault_kind = self.sampler.fault_kind(task)
        elif self.cfg.randomize_tasks:
            task, onset = self.sampler.sample()
            self.fault_kind = self.sampler.fault_kind(task)
            if onset > 0 and task.faults:
                self.pending_faults = (onset, task.faults)
                task = Task(terrain=task.terrain, dynamics=task.dynamics)
            pushes = self.cfg.tasks.pushes
            if pushes.probability > 0 and self.push_rng.random() < pushes.probability * self.sampler.difficulty:
                self.next_push_s = pushes.draw_interval(self.push_rng)
        else:
            task = Task()
            self.fault_kind = -1
        self.robot.reset(task)
        if "command" in options:
            self.command = np.asarray(options["command"], dtype=np.float64)
            self.fixed_command = True
        else:
            self.fixed_command = False
            self._resample_command()
        self.action_map.reset(options.get("phase", self.rng.uniform()))
        self.last_action = np.zeros(self.n_actions)
        self.steps = 0
        self._last_qd = np.zeros(self.robot_cfg.n_joints)
        self._obs = self._observe()
        return self._obs.copy(), {"privileged": self.privileged()}

    def step(self, action: np.ndarray):
        """Apply one policy action for one control period.

        Returns:
            obs, reward, terminated (fell), truncated (time limit, or the base within EDGE_MARGIN_M of the
            terrain's edge), info with `privileged`, `reward_terms`, `lin_vel_base`, `time_s`, `fell`,
            `left_terrain`.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.n_actions,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {self.n_actions} finite values, got shape {action.shape}: {action}")
        targets = self.action_map.targets(action, self.dt)
        self.robot.write_command(JointCommand(position=targets, kp=self.kp, kd=self.kd))
        self.robot.step()
        self.steps += 1
        t = self.steps * self.dt
        if self.pending_faults is not None and t >= self.pending_faults[0]:
            for joint, fault in self.pending_faults[1].items():
                self.robot.set_fault(joint, fault)
            self.pending_faults = None
        if self.next_push_s is not None and t >= self.next_push_s:
            pushes = self.cfg.tasks.pushes
            self.robot.push(pushes.draw_force(self.push_rng, self.sampler.difficulty), pushes.duration_s)
            self.next_push_s = t + pushes.draw_interval(self.push_rng)
        if not self.fixed_command and self.steps % max(1, int(self.cfg.commands.resample_s / self.dt)) == 0:
            self._resample_command()
        pos, quat, lin, ang = self.robot.base_state()
        rot_t = rotation_matrix(quat).T
        lin_b, ang_b = rot_t @ lin, rot_t @ ang
        grav = -rot_t[:, 2]
        fell = self._fell(pos, grav)
        qd = self.robot._qd
        reward, terms = compute_reward(self.cfg.reward, self.dt, self.command, lin_b, ang_b, grav,
                                       self.robot._tau, (qd - self._last_qd) / self.dt, action,
                                       self.last_action, fell)
        self._last_qd = qd
        self.last_action = action
        self._obs = self._observe()
        # Heightfield terrain is 8 m wide and 20 m long; past its edge there is no ground. A robot that walks
        # there has not failed: its episode ends as a time-out (bootstrapped), not a fall.
        left_terrain = not fell and not self.robot.ground.inside(pos[0], pos[1], EDGE_MARGIN_M)
        truncated = self.steps >= self.max_steps or left_terrain
        err2 = float((self.command[0] - lin_b[0]) ** 2 + (self.command[1] - lin_b[1]) ** 2)
        info = {"privileged": self.privileged(lin_b), "reward_terms": terms, "lin_vel_base": lin_b,
                "tracking": math.exp(-err2 / self.cfg.reward.tracking_sigma),
                "time_s": t, "fell": fell, "base_pos": pos, "command": self.command.copy(),
                "left_terrain": left_terrain}
        return self._obs.copy(), reward, fell, truncated and not fell, info

    def close(self) -> None:
        self.robot.close()

    # ------------------------------------------------------------ the task
    def apply_event(self, event: dict[str, Any]) -> None:
        """Apply a resolved scenario event now (see `scenario.Event`)."""
        kind = event["kind"]
        if kind == "fault":
            self.robot.set_fault(event["joint"], event["fault"])
        elif kind == "terrain":
            self.robot.set_terrain(event["terrain"])
        elif kind == "dynamics":
            self.robot.set_dynamics(event["dynamics"])
        elif kind == "push":
            self.robot.push(event["force_n"], event["duration_s"])
        elif kind == "clear_faults":
            self.robot.clear_faults()
        else:
            raise ValueError(f"unknown event kind {kind!r}")

    def set_command(self, command: np.ndarray) -> None:
        """Hold a velocity command (vx, vy, yaw_rate) until changed."""
        self.command = np.asarray(command, dtype=np.float64)
        self.fixed_command = True

    def set_difficulty(self, level: float) -> None:
        """Curriculum level in [0, 1] for tasks drawn at later resets."""
        self.sampler.difficulty = float(np.clip(level, 0.0, 1.0))

    def set_fault_weights(self, weights: np.ndarray | None) -> None:
        """Probabilities over `sampler.fault_kinds` for faults drawn at later resets (None: uniform)."""
        self.sampler.kind_weights = None if weights is None else np.asarray(weights, dtype=np.float64)

    def privileged(self, lin_vel_base: np.ndarray | None = None) -> np.ndarray:
        """The privileged vector: the task, the active push and the true base velocity."""
        if lin_vel_base is None:
            _, quat, lin, _ = self.robot.base_state()
            lin_vel_base = quat_rotate_inverse(quat, lin)
        if self._task_vec_version != self.robot.task_version:
            self._task_vec = task_vector(self.robot.task, self.robot_cfg.joint_names)
            self._task_vec_version = self.robot.task_version
        return np.concatenate([self._task_vec, self.robot.active_push(), lin_vel_base]).astype(np.float32)

    # ------------------------------------------------------------ private
    def _observe(self) -> np.ndarray:
        state = self.robot.read_state()
        return build_observation(state, self.command, self.last_action, self.action_map.phase_observation(),
                                 self.action_map.default_pos)

    def _resample_command(self) -> None:
        c = self.cfg.commands
        self.command = np.array([self.rng.uniform(*c.vx), self.rng.uniform(*c.vy), self.rng.uniform(*c.yaw_rate)])

    def _fell(self, pos: np.ndarray, grav: np.ndarray) -> bool:
        tilt = math.acos(min(1.0, max(-1.0, -float(grav[2]))))
        height = pos[2] - self.robot.ground.height_at(pos[0], pos[1])
        return bool(tilt > self.robot_cfg.max_tilt_rad or height < self.robot_cfg.min_base_height_m)
