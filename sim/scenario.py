"""Scenario files: a robot, a task, a command profile and a timeline of events.

Schema (DESIGN.md, contract): `name`, `robot`, `seed`, `duration_s`, `command` (one
{vx, vy, yaw_rate} or a list of {t, vx, vy, yaw_rate}), `terrain`, `dynamics` and
`events`, each event at time `t` with exactly one of `fault`, `terrain`, `dynamics`,
`push`, `clear_faults`. Terrain and dynamics events change only the keys they name.

Loading resolves every event into a complete, validated spec, so a bad joint name or
value is an error naming the file and key before any simulation starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from metaloco.hardware.robot_config import RobotConfig, load_robot
from metaloco.paths import config_dir
from metaloco.schema import ConfigError, from_dict, load_yaml, spec, to_dict
from metaloco.sim.tasks import DynamicsSpec, JointFault, Task, TerrainSpec

EVENT_KINDS = ("fault", "terrain", "dynamics", "push", "clear_faults")
TOP_KEYS = ("name", "robot", "seed", "duration_s", "command", "terrain", "dynamics", "events")


@dataclass
class CommandPoint:
    """The velocity command from time `t` on."""

    t: float = spec(0.0, doc="Start time (s).", range=(0.0, None))
    vx: float = spec(0.0, doc="Forward velocity (m/s).", range=(-3.0, 3.0))
    vy: float = spec(0.0, doc="Lateral velocity (m/s).", range=(-3.0, 3.0))
    yaw_rate: float = spec(0.0, doc="Yaw rate (rad/s).", range=(-5.0, 5.0))


@dataclass
class Push:
    """A force on the base."""

    force_n: list[float] = spec(length=3, range=(-1000.0, 1000.0), doc="World-frame force (N).")
    duration_s: float = spec(0.2, doc="How long it acts.", range=(0.0, 10.0))


@dataclass
class FaultEvent:
    """A fault event's body: the joint and the fault."""

    joint: str = spec(doc="URDF joint name.")
    mode: str = spec(doc="locked, limp, weak or bias.", choices=("locked", "limp", "weak", "bias"))
    strength: float = spec(1.0, range=(0.0, 1.0), doc="For weak.")
    offset_rad: float = spec(0.0, range=(-0.5, 0.5), doc="For bias.")


@dataclass
class Event:
    """One resolved event: `kind` and the complete spec it sets."""

    t: float
    kind: str
    joint: str | None = None
    fault: JointFault | None = None
    terrain: TerrainSpec | None = None
    dynamics: DynamicsSpec | None = None
    force_n: list[float] | None = None
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The form `LocomotionEnv.apply_event` and `sim/events` messages use."""
        return {"t": self.t, "kind": self.kind, "joint": self.joint, "fault": self.fault, "terrain": self.terrain,
                "dynamics": self.dynamics, "force_n": self.force_n, "duration_s": self.duration_s}

    def to_json(self) -> dict[str, Any]:
        """Plain data, as published on `sim/events`."""
        out: dict[str, Any] = {"t": self.t, "kind": self.kind}
        if self.kind == "fault":
            out.update(joint=self.joint, fault=to_dict(self.fault))
        elif self.kind == "terrain":
            out["terrain"] = to_dict(self.terrain)
        elif self.kind == "dynamics":
            out["dynamics"] = to_dict(self.dynamics)
        elif self.kind == "push":
            out.update(force_n=self.force_n, duration_s=self.duration_s)
        return out


def event_from_json(data: dict[str, Any], robot: RobotConfig, source: str = "sim/events") -> Event:
    """Rebuild an `Event` from `Event.to_json` data (e.g. a `sim/events` message), validating it."""
    kind = data.get("kind")
    if kind not in EVENT_KINDS:
        raise ConfigError(source, "kind", f"got {kind!r}; allowed values are {list(EVENT_KINDS)}")
    t = float(data.get("t", 0.0))
    if kind == "fault":
        robot.joint_index(str(data.get("joint")))
        return Event(t, kind, joint=data["joint"], fault=from_dict(JointFault, data.get("fault"), source, "fault"))
    if kind == "terrain":
        return Event(t, kind, terrain=from_dict(TerrainSpec, data.get("terrain"), source, "terrain"))
    if kind == "dynamics":
        return Event(t, kind, dynamics=from_dict(DynamicsSpec, data.get("dynamics"), source, "dynamics"))
    if kind == "push":
        push = from_dict(Push, {"force_n": data.get("force_n"), "duration_s": data.get("duration_s", 0.2)}, source)
        return Event(t, kind, force_n=push.force_n, duration_s=push.duration_s)
    return Event(t, kind)


@dataclass
class Scenario:
    """A loaded, validated scenario."""

    name: str
    robot: RobotConfig
    seed: int
    duration_s: float
    commands: list[CommandPoint]
    task: Task
    events: list[Event] = field(default_factory=list)
    source: str = ""

    def command_at(self, t: float) -> np.ndarray:
        """The command in force at time `t`."""
        current = self.commands[0]
        for point in self.commands:
            if point.t <= t + 1e-9:
                current = point
        return np.array([current.vx, current.vy, current.yaw_rate])

    @property
    def last_event_s(self) -> float | None:
        return self.events[-1].t if self.events else None


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario file by path or by name under config/scenarios/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return config_dir() / "scenarios" / f"{name_or_path}.yaml"


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario file.

    Args:
        name_or_path: A path, or a name under config/scenarios/.

    Returns:
        The scenario with every event resolved.

    Raises:
        ConfigError: Naming the file, the key and what is allowed.
    """
    path = scenario_path(name_or_path)
    src = str(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(src, "", f"expected a mapping with keys {list(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(src, str(key), f"unknown key; allowed keys are {list(TOP_KEYS)}")
    if "name" not in data:
        raise ConfigError(src, "name", "required key is missing")
    try:
        robot = load_robot(str(data.get("robot", "a1")))
    except ConfigError as err:
        raise ConfigError(src, "robot", err.problem) from None
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(src, "seed", f"expected a whole number, got {seed!r}")
    duration = from_dict(CommandPoint, {"t": data.get("duration_s", 10.0)}, src, "duration_s").t
    if duration <= 0:
        raise ConfigError(src, "duration_s", "must be positive")
    raw_cmd = data.get("command", {})
    if isinstance(raw_cmd, dict):
        commands = [from_dict(CommandPoint, raw_cmd, src, "command")]
    elif isinstance(raw_cmd, list) and raw_cmd:
        commands = [from_dict(CommandPoint, c, src, f"command[{i}]") for i, c in enumerate(raw_cmd)]
        commands.sort(key=lambda c: c.t)
    else:
        raise ConfigError(src, "command", "expected {vx, vy, yaw_rate} or a non-empty list of {t, vx, vy, yaw_rate}")
    terrain_data = _mapping(data.get("terrain", {}), src, "terrain")
    dynamics_data = _mapping(data.get("dynamics", {}), src, "dynamics")
    task = Task(terrain=from_dict(TerrainSpec, terrain_data, src, "terrain"),
                dynamics=from_dict(DynamicsSpec, dynamics_data, src, "dynamics"))
    events = _resolve_events(data.get("events") or [], robot, terrain_data, dynamics_data, duration, src)
    return Scenario(name=str(data["name"]), robot=robot, seed=seed, duration_s=duration, commands=commands,
                    task=task, events=events, source=src)


def _mapping(value: Any, src: str, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(src, key, f"expected a mapping, got {value!r}")
    return dict(value)


def _resolve_events(raw: Any, robot: RobotConfig, terrain: dict, dynamics: dict, duration: float,
                    src: str) -> list[Event]:
    if not isinstance(raw, list):
        raise ConfigError(src, "events", "expected a list of events")
    terrain, dynamics = copy.deepcopy(terrain), copy.deepcopy(dynamics)
    events, last_t = [], 0.0
    for i, item in enumerate(raw):
        key = f"events[{i}]"
        if not isinstance(item, dict) or "t" not in item:
            raise ConfigError(src, key, "each event is a mapping with a time 't' and one of " + str(list(EVENT_KINDS)))
        kinds = [k for k in item if k != "t"]
        unknown = [k for k in kinds if k not in EVENT_KINDS]
        if unknown:
            raise ConfigError(src, f"{key}.{unknown[0]}", f"unknown event kind; allowed are {list(EVENT_KINDS)}")
        if len(kinds) != 1:
            raise ConfigError(src, key, f"exactly one of {list(EVENT_KINDS)} per event, got {kinds}")
        t = from_dict(CommandPoint, {"t": item["t"]}, src, key).t
        if t < last_t:
            raise ConfigError(src, f"{key}.t", f"events must be in time order; {t} comes after {last_t}")
        if t > duration:
            raise ConfigError(src, f"{key}.t", f"{t} is after the end of the scenario (duration_s {duration})")
        last_t = t
        kind, body = kinds[0], item[kinds[0]]
        if kind == "fault":
            f = from_dict(FaultEvent, body, src, f"{key}.fault")
            if f.joint not in robot.joint_names:
                raise ConfigError(src, f"{key}.fault.joint",
                                  f"robot '{robot.name}' has no joint '{f.joint}'; its joints are {robot.joint_names}")
            fault = JointFault(mode=f.mode, strength=f.strength, offset_rad=f.offset_rad)
            events.append(Event(t, kind, joint=f.joint, fault=fault))
        elif kind == "terrain":
            terrain.update(_mapping(body, src, f"{key}.terrain"))
            events.append(Event(t, kind, terrain=from_dict(TerrainSpec, terrain, src, f"{key}.terrain")))
        elif kind == "dynamics":
            dynamics.update(_mapping(body, src, f"{key}.dynamics"))
            events.append(Event(t, kind, dynamics=from_dict(DynamicsSpec, dynamics, src, f"{key}.dynamics")))
        elif kind == "push":
            p = from_dict(Push, body, src, f"{key}.push")
            events.append(Event(t, kind, force_n=p.force_n, duration_s=p.duration_s))
        else:
            if body is not True:
                raise ConfigError(src, f"{key}.clear_faults", f"expected true, got {body!r}")
            events.append(Event(t, kind))
    return events


@dataclass
class Trace:
    """What happened in one scenario run, step by step (arrays over control steps)."""

    t: np.ndarray
    command: np.ndarray
    lin_vel_base: np.ndarray
    base_pos: np.ndarray
    reward: np.ndarray
    torques: np.ndarray
    joint_vel: np.ndarray
    fell: bool
    events_s: list[float]
    reward_terms: dict[str, float] = field(default_factory=dict)
    """Each weighted reward term summed over the run (before the step total is clipped at zero)."""


def run_scenario(scenario: Scenario, policy: Callable[[np.ndarray, dict], np.ndarray], env=None,
                 on_event: Callable[[Event], None] | None = None, episode: int = 0) -> Trace:
    """Run a scenario to its end (or a fall) in a `LocomotionEnv`.

    Args:
        scenario: The loaded scenario.
        policy: Maps (observation, info) to an action; `info` holds the privileged vector for oracles.
        env: A `LocomotionEnv` for the scenario's robot (made if None).
        on_event: Called with each event as it is applied (adaptive policies may listen).
        episode: Episode index: 0 starts at gait phase 0 with the scenario's seed; episode i > 0 uses
            seed + i (terrain noise) and a gait phase drawn from it.

    Returns:
        The run's `Trace`.
    """
    from metaloco.sim.env import EnvConfig, LocomotionEnv

    own = env is None
    if own:
        env = LocomotionEnv(EnvConfig(robot=scenario.robot.name, randomize_tasks=False), seed=scenario.seed,
                            robot_cfg=scenario.robot)
    seed = scenario.seed + episode
    phase = 0.0 if episode == 0 else float(np.random.default_rng(seed).uniform())
    follow, env.robot.follow_terrain = env.robot.follow_terrain, True  # a scenario may walk as far as it likes
    obs, info = env.reset(seed=seed, options={"task": scenario.task, "command": scenario.command_at(0.0),
                                              "phase": phase})
    pending = list(scenario.events)
    steps = int(round(scenario.duration_s / env.dt))
    rows: dict[str, list] = {k: [] for k in ("t", "command", "lin_vel_base", "base_pos", "reward", "torques", "qd")}
    terms: dict[str, float] = {}
    fell = False
    for k in range(steps):
        t = k * env.dt
        while pending and pending[0].t <= t + 1e-9:
            event = pending.pop(0)
            env.apply_event(event.as_dict())
            if on_event is not None:
                on_event(event)
        env.set_command(scenario.command_at(t))
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        for key, value in (("t", info["time_s"]), ("command", info["command"]), ("lin_vel_base", info["lin_vel_base"]),
                           ("base_pos", info["base_pos"]), ("reward", reward), ("torques", env.robot._tau.copy()),
                           ("qd", env.robot._qd.copy())):
            rows[key].append(value)
        for name, value in info["reward_terms"].items():
            terms[name] = terms.get(name, 0.0) + value
        if terminated:
            fell = True
            break
    env.robot.follow_terrain = follow
    if own:
        env.close()
    return Trace(t=np.asarray(rows["t"]), command=np.asarray(rows["command"]),
                 lin_vel_base=np.asarray(rows["lin_vel_base"]), base_pos=np.asarray(rows["base_pos"]),
                 reward=np.asarray(rows["reward"]), torques=np.asarray(rows["torques"]),
                 joint_vel=np.asarray(rows["qd"]), fell=fell, events_s=[e.t for e in scenario.events],
                 reward_terms=terms)
