"""A robot in pybullet behind the hardware `RobotInterface`: the sim driver.

`SimRobot` loads a robot description, builds its terrain, and applies the whole
task family at the physics rate: PD torques computed every physics step from the
latest (possibly delayed) `JointCommand`, scaled by motor strength and per-joint
faults, clipped to the torque limits. `LocomotionEnv`, the bridge's `sim` driver
and the serial-device emulators all drive the robot through this one class, so
nothing is simulated two ways.

Fault semantics (DESIGN.md): `locked` holds the joint where it was when the fault
began (a stiff velocity motor plus joint limits closed on that angle); `limp` gives
zero torque; `weak` scales the joint's torque (and its limit) by `strength`; `bias`
offsets the encoder reading only, i.e. what the policy sees.

Payload: `payload_kg` is added to the base mass; `com_offset_m` is where that mass
sits relative to the base COM, applied as the payload's gravity moment each step.
"""

from __future__ import annotations

import collections
from time import perf_counter

import numpy as np
import pybullet

from metaloco.hardware.interface import JointCommand, RobotState
from metaloco.hardware.robot_config import RobotConfig, resolve_urdf
from metaloco.schema import ConfigError
from metaloco.sim.tasks import DynamicsSpec, JointFault, Task, TerrainSpec
from metaloco.sim.terrain import Ground, GroundBuilder, set_friction

GRAVITY = 9.81
LOCK_TORQUE_NM = 1000.0
"""Holding torque of a locked (jammed) joint: far above any motor's."""


class SimRobot:
    """One robot in its own pybullet world.

    Args:
        cfg: The robot description.
        seed: Seed for terrain randomness.
        gui: Open the pybullet GUI (needs a display).
    """

    def __init__(self, cfg: RobotConfig, seed: int = 0, gui: bool = False):
        self.cfg = cfg
        self.joint_names = list(cfg.joint_names)
        self.rng = np.random.default_rng(seed)
        urdf = resolve_urdf(cfg)
        self.client = pybullet.connect(pybullet.GUI if gui else pybullet.DIRECT)
        c = self.client
        pybullet.setGravity(0, 0, -GRAVITY, physicsClientId=c)
        pybullet.setTimeStep(cfg.physics_dt, physicsClientId=c)
        self.body = pybullet.loadURDF(str(urdf), [0, 0, cfg.base_height_m], physicsClientId=c)
        by_name, links = {}, {}
        for i in range(pybullet.getNumJoints(self.body, physicsClientId=c)):
            info = pybullet.getJointInfo(self.body, i, physicsClientId=c)
            by_name[info[1].decode()] = i
            links[info[12].decode()] = i
        missing = [j for j in self.joint_names if j not in by_name]
        if missing:
            raise ConfigError(cfg.source, "joint_names", f"joints {missing} are not in {urdf}; it has {sorted(by_name)}")
        missing = [f for f in cfg.foot_links if f not in links]
        if missing:
            raise ConfigError(cfg.source, "foot_links", f"links {missing} are not in {urdf}; it has {sorted(links)}")
        self.joint_ids = [by_name[j] for j in self.joint_names]
        self.foot_ids = [links[f] for f in cfg.foot_links]
        n = len(self.joint_ids)
        pybullet.setJointMotorControlArray(self.body, self.joint_ids, pybullet.VELOCITY_CONTROL,
                                           forces=[0.0] * n, physicsClientId=c)
        for foot in self.foot_ids:
            pybullet.changeDynamics(self.body, foot, lateralFriction=1.0, physicsClientId=c)
        self.base_mass = pybullet.getDynamicsInfo(self.body, -1, physicsClientId=c)[0]
        self.default_pos = np.asarray(cfg.default_joint_pos, dtype=np.float64)
        self.torque_limits = np.asarray(cfg.torque_limits, dtype=np.float64)
        self.kp = np.asarray(cfg.kp, dtype=np.float64)
        self.kd = np.asarray(cfg.kd, dtype=np.float64)
        self.ground: Ground | None = None
        self._grounds = GroundBuilder(c)
        self.follow_terrain = False
        """Move a heightfield's window with the robot as it nears the edge (`GroundBuilder.follow`), so that it
        can walk as far as it likes. Off in training, whose episodes end at the edge."""
        self.task = Task()
        self.time_s = 0.0
        """Simulated time since reset (s)."""
        self.physics_wall_s = 0.0
        """Wall time spent inside pybullet.stepSimulation, for `bench sim`."""
        self.physics_steps = 0
        self.task_version = 0
        """Bumped whenever the task changes (caches of the task vector key on it)."""
        self.torque_enabled = True
        self._scale = np.ones(n)          # torque scale per joint (motor strength x fault)
        self._locked = np.zeros(n, bool)
        self._bias = np.zeros(n)
        self._free = list(self.joint_ids)  # joints under torque control (not locked)
        self._free_mask = np.ones(n, bool)
        self._pending: collections.deque[tuple[float, JointCommand]] = collections.deque()
        self._command = self._hold_command()
        self._tau = np.zeros(n)
        self._q = self.default_pos.copy()
        self._qd = np.zeros(n)
        self._pushes: list[tuple[np.ndarray, float]] = []
        self._payload_moment = False
        self._last_vel = np.zeros(3)
        self._last_read_t = 0.0

    # ------------------------------------------------------------------ task
    def reset(self, task: Task | None = None, joint_pos: np.ndarray | None = None) -> None:
        """Put the robot back at the origin, standing, in `task` (default: the nominal task).

        Args:
            task: The task to run.
            joint_pos: Initial joint angles (default: the default stance).
        """
        c = self.client
        task = (task or Task()).copy()
        self._build_ground(task.terrain, origin=(0.0, 0.0))
        z = self.ground.height_at(0.0, 0.0) + self.cfg.base_height_m + 0.02
        pybullet.resetBasePositionAndOrientation(self.body, [0, 0, z], [0, 0, 0, 1], physicsClientId=c)
        pybullet.resetBaseVelocity(self.body, [0, 0, 0], [0, 0, 0], physicsClientId=c)
        q0 = self.default_pos if joint_pos is None else np.asarray(joint_pos, dtype=np.float64)
        for jid, q in zip(self.joint_ids, q0):
            pybullet.resetJointState(self.body, jid, float(q), 0.0, physicsClientId=c)
        self._q, self._qd = q0.copy(), np.zeros_like(q0)
        self.time_s = 0.0
        self._last_read_t = 0.0
        self._last_vel = np.zeros(3)
        self._pending.clear()
        self._pushes.clear()
        self._command = self._hold_command()
        self._tau[:] = 0.0
        self.task = Task(terrain=task.terrain)
        self.task_version += 1
        for i in range(len(self.joint_ids)):
            self._unlock(i)
        self.set_dynamics(task.dynamics)
        self.task.faults = {}
        for joint, fault in task.faults.items():
            self.set_fault(joint, fault)

    def set_terrain(self, terrain: TerrainSpec) -> None:
        """Change the ground mid-episode. A new shape is built under the robot, starting at the height of the
        ground it stands on; friction alone changes in place."""
        old = self.task.terrain
        same_shape = (old.type, old.slope_deg, old.roughness_m, old.step_height_m) == (
            terrain.type, terrain.slope_deg, terrain.roughness_m, terrain.step_height_m)
        if same_shape and self.ground is not None:
            set_friction(self.client, self.ground, terrain.friction)
        else:
            pos = pybullet.getBasePositionAndOrientation(self.body, physicsClientId=self.client)[0]
            under = self.ground.height_at(pos[0], pos[1]) if self.ground is not None else 0.0
            self._build_ground(terrain, origin=(pos[0], pos[1]), base_z=under)
        self.task.terrain = terrain
        self.task_version += 1

    def set_dynamics(self, dynamics: DynamicsSpec) -> None:
        """Change payload, payload offset, motor strength or latency, effective from the next physics step."""
        pybullet.changeDynamics(self.body, -1, mass=self.base_mass + dynamics.payload_kg, physicsClientId=self.client)
        self.task.dynamics = dynamics
        self._payload_moment = dynamics.payload_kg > 0 and any(v != 0.0 for v in dynamics.com_offset_m)
        self._update_scale()

    def set_fault(self, joint: str, fault: JointFault | None) -> None:
        """Start (or, with None, clear) a fault on one joint.

        Args:
            joint: URDF joint name.
            fault: The fault, or None to repair the joint.
        """
        i = self.cfg.joint_index(joint)
        self._unlock(i)
        self._bias[i] = 0.0
        self.task.faults.pop(joint, None)
        if fault is not None:
            self.task.faults[joint] = fault
            if fault.mode == "locked":
                self._lock(i)
            elif fault.mode == "bias":
                self._bias[i] = fault.offset_rad
        self._update_scale()

    def clear_faults(self) -> None:
        """Repair every joint."""
        for joint in list(self.task.faults):
            self.set_fault(joint, None)
        self.task_version += 1

    def push(self, force_n: list[float], duration_s: float) -> None:
        """Push the base with a world-frame force (N) for `duration_s`."""
        self._pushes.append((np.asarray(force_n, dtype=np.float64), self.time_s + duration_s))

    # ------------------------------------------------------------ interface
    def write_command(self, command: JointCommand) -> None:
        """Queue PD targets; they act after the task's latency."""
        due = self.time_s + self.task.dynamics.latency_ms / 1000.0
        self._pending.append((due, command))

    def set_torque_enabled(self, enabled: bool) -> None:
        self.torque_enabled = enabled

    def read_state(self) -> RobotState:
        """Sensors as a real robot has them: biased encoders, IMU in the base frame."""
        c = self.client
        _, quat = pybullet.getBasePositionAndOrientation(self.body, physicsClientId=c)
        lin, ang = pybullet.getBaseVelocity(self.body, physicsClientId=c)
        rot = np.asarray(pybullet.getMatrixFromQuaternion(quat), dtype=np.float64).reshape(3, 3)
        lin = np.asarray(lin)
        dt = self.time_s - self._last_read_t
        acc_world = (lin - self._last_vel) / dt if dt > 0 else np.zeros(3)
        self._last_vel, self._last_read_t = lin, self.time_s
        acc_world = acc_world + np.array([0.0, 0.0, GRAVITY])
        return RobotState(
            stamp_s=self.time_s,
            joint_pos=self._q + self._bias,
            joint_vel=self._qd.copy(),
            joint_torque=self._tau.copy(),
            imu_quat=np.asarray(quat, dtype=np.float64),
            imu_ang_vel=rot.T @ np.asarray(ang),
            imu_lin_acc=rot.T @ acc_world,
        )

    def close(self) -> None:
        if self.client is not None and pybullet.isConnected(self.client):
            pybullet.disconnect(self.client)
        self.client = None

    # -------------------------------------------------------------- physics
    def step(self, substeps: int | None = None) -> None:
        """Advance physics by `substeps` physics steps (default: one control period), PD at every step."""
        c, body, free = self.client, self.body, self._free
        mask = self._free_mask
        n = self.cfg.decimation if substeps is None else substeps
        dt = self.cfg.physics_dt
        ids = self.joint_ids
        any_locked = bool(self._locked.any())
        for _ in range(n):
            if self._pending and self._pending[0][0] <= self.time_s + 1e-9:
                while self._pending and self._pending[0][0] <= self.time_s + 1e-9:
                    self._command = self._pending.popleft()[1]
            states = pybullet.getJointStates(body, ids, physicsClientId=c)
            q, qd = np.array([(s[0], s[1]) for s in states]).T
            cmd = self._command
            if self.torque_enabled:
                tau = cmd.kp * (cmd.position - q) - cmd.kd * qd
                if cmd.velocity is not None:
                    tau += cmd.kd * cmd.velocity
                if cmd.torque_ff is not None:
                    tau += cmd.torque_ff
                tau *= self._scale
                np.minimum(tau, self._limit, out=tau)
                np.maximum(tau, self._neg_limit, out=tau)
            else:
                tau = np.zeros_like(q)
            forces = tau[mask].tolist() if any_locked else tau.tolist()
            pybullet.setJointMotorControlArray(body, free, pybullet.TORQUE_CONTROL, forces=forces, physicsClientId=c)
            if self._pushes or self._payload_moment:
                self._apply_external()
            t0 = perf_counter()
            pybullet.stepSimulation(physicsClientId=c)
            self.physics_wall_s += perf_counter() - t0
            self.physics_steps += 1
            self.time_s += dt
            if any_locked:
                tau[self._locked] = [states[i][3] for i in np.flatnonzero(self._locked)]
            self._tau = tau
        states = pybullet.getJointStates(body, ids, physicsClientId=c)
        self._q, self._qd = np.array([(s[0], s[1]) for s in states]).T
        if self.follow_terrain and self.ground.heights is not None:
            x, y, _ = pybullet.getBasePositionAndOrientation(body, physicsClientId=c)[0]
            self.ground = self._grounds.follow(self.ground, x, y, self.rng)

    def base_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground truth for rewards and metrics: position, quaternion (xyzw), world linear and angular velocity."""
        c = self.client
        pos, quat = pybullet.getBasePositionAndOrientation(self.body, physicsClientId=c)
        lin, ang = pybullet.getBaseVelocity(self.body, physicsClientId=c)
        return np.asarray(pos), np.asarray(quat), np.asarray(lin), np.asarray(ang)

    def true_joint_pos(self) -> np.ndarray:
        """Joint angles without encoder bias."""
        return self._q.copy()

    def foot_contacts(self) -> np.ndarray:
        """Whether each foot touches the ground."""
        contacts = pybullet.getContactPoints(bodyA=self.body, bodyB=self.ground.body, physicsClientId=self.client)
        touching = {pt[3] for pt in contacts}
        return np.array([f in touching for f in self.foot_ids])

    def active_push(self) -> np.ndarray:
        """The sum of pushes acting now (N, world frame)."""
        total = np.zeros(3)
        for force, end in self._pushes:
            if end > self.time_s:
                total += force
        return total

    # --------------------------------------------------------------- private
    def _hold_command(self) -> JointCommand:
        return JointCommand(position=self.default_pos.copy(), kp=self.kp.copy(), kd=self.kd.copy())

    def _build_ground(self, terrain: TerrainSpec, origin: tuple[float, float], base_z: float = 0.0) -> None:
        self.ground = self._grounds.build(terrain, origin, self.rng, base_z)

    def _update_scale(self) -> None:
        scale = np.full(len(self.joint_ids), self.task.dynamics.motor_strength)
        for joint, fault in self.task.faults.items():
            i = self.joint_names.index(joint)
            if fault.mode == "limp":
                scale[i] = 0.0
            elif fault.mode == "weak":
                scale[i] *= fault.strength
        scale[self._locked] = 0.0
        self._scale = scale
        self._limit = self.torque_limits * scale
        self._neg_limit = -self._limit
        self.task_version += 1

    def _lock(self, i: int) -> None:
        c, jid = self.client, self.joint_ids[i]
        q = pybullet.getJointState(self.body, jid, physicsClientId=c)[0]
        pybullet.changeDynamics(self.body, jid, jointLowerLimit=q, jointUpperLimit=q + 1e-6,
                                jointLimitForce=LOCK_TORQUE_NM, physicsClientId=c)
        pybullet.setJointMotorControl2(self.body, jid, pybullet.VELOCITY_CONTROL, targetVelocity=0.0,
                                       force=LOCK_TORQUE_NM, physicsClientId=c)
        self._locked[i] = True
        self._refresh_free()

    def _unlock(self, i: int) -> None:
        if not self._locked[i]:
            return
        c, jid = self.client, self.joint_ids[i]
        pybullet.changeDynamics(self.body, jid, jointLowerLimit=self.cfg.joint_lower[i],
                                jointUpperLimit=self.cfg.joint_upper[i], physicsClientId=c)
        pybullet.setJointMotorControl2(self.body, jid, pybullet.VELOCITY_CONTROL, force=0.0, physicsClientId=c)
        self._locked[i] = False
        self._refresh_free()

    def _refresh_free(self) -> None:
        self._free_mask = ~self._locked
        self._free = [jid for jid, lk in zip(self.joint_ids, self._locked) if not lk]

    def _apply_external(self) -> None:
        c, body = self.client, self.body
        pos, quat = pybullet.getBasePositionAndOrientation(body, physicsClientId=c)
        self._pushes = [(f, end) for f, end in self._pushes if end > self.time_s]
        push = self.active_push()
        if push.any():
            pybullet.applyExternalForce(body, -1, push.tolist(), pos, pybullet.WORLD_FRAME, physicsClientId=c)
        if self._payload_moment:
            d = self.task.dynamics
            rot = np.asarray(pybullet.getMatrixFromQuaternion(quat)).reshape(3, 3)
            ax, ay, az = (rot @ np.asarray(d.com_offset_m)).tolist()
            fz = -d.payload_kg * GRAVITY
            # arm x (0, 0, fz), written out: np.cross took 17% of an env step (cProfile, session 13), and
            # these are np.cross's own products and differences, so the torque is the same to the bit
            moment = [ay * fz - az * 0.0, az * 0.0 - ax * fz, ax * 0.0 - ay * 0.0]
            pybullet.applyExternalTorque(body, -1, moment, pybullet.WORLD_FRAME, physicsClientId=c)
