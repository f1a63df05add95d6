"""LocomotionEnv: determinism, mid-episode changes, termination, observation contents."""

import numpy as np
import pybullet
import pytest

from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.scenario import load_scenario, run_scenario
from metaloco.sim.tasks import DynamicsSpec, JointFault, Task, TerrainSpec
from metaloco.sim.terrain import WIDTH_M


def rollout(seed, steps=60):
    env = LocomotionEnv(EnvConfig(), seed=seed)
    obs, info = env.reset()
    rng = np.random.default_rng(123)
    out = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.normal(0, 0.5, env.n_actions))
        out.append(obs)
    env.close()
    return np.array(out), info["privileged"]


def test_same_seed_same_trajectory():
    a, pa = rollout(seed=5)
    b, pb = rollout(seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    c, _ = rollout(seed=6)
    assert not np.array_equal(a, c)


def test_observation_layout_and_privileged_sizes():
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    obs, info = env.reset(options={"command": [0.5, 0.0, 0.0]})
    assert obs.shape == (sum(s for _, s in env.obs_layout),)
    assert info["privileged"].shape == (env.priv_dim,)
    # level, at rest: projected gravity points down, the command sits where the layout says
    assert obs[3:6] == pytest.approx([0, 0, -1], abs=0.05)
    assert obs[6:9] == pytest.approx([0.5, 0, 0])
    env.close()


def test_bad_action_is_refused():
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(env.n_actions, np.nan))
    with pytest.raises(ValueError, match="15"):
        env.step(np.zeros(3))
    env.close()


def test_friction_change_takes_effect_at_event_time():
    scenario = load_scenario("ice")
    env = LocomotionEnv(EnvConfig(randomize_tasks=False), robot_cfg=scenario.robot)
    seen = []

    def policy(obs, info):
        seen.append((env.robot.time_s, pybullet.getDynamicsInfo(env.robot.ground.body, -1,
                                                                  physicsClientId=env.robot.client)[1]))
        return np.zeros(env.n_actions)

    run_scenario(scenario, policy, env=env)
    before = [f for t, f in seen if t < 4.0 - 1e-6]
    after = [f for t, f in seen if t >= 4.0 - 1e-6]
    assert before and after
    assert before == pytest.approx([0.8] * len(before))
    assert after == pytest.approx([0.25] * len(after))
    assert env.robot.task.terrain.friction == pytest.approx(0.25)
    env.close()


def test_payload_change_takes_effect_at_event_time():
    scenario = load_scenario("payload")
    env = LocomotionEnv(EnvConfig(randomize_tasks=False), robot_cfg=scenario.robot)
    masses = []

    def policy(obs, info):
        masses.append((env.robot.time_s, pybullet.getDynamicsInfo(env.robot.body, -1,
                                                                    physicsClientId=env.robot.client)[0]))
        return np.zeros(env.n_actions)

    run_scenario(scenario, policy, env=env)
    base = env.robot.base_mass
    assert all(m == pytest.approx(base) for t, m in masses if t < 4.0 - 1e-6)
    assert all(m == pytest.approx(base + 3.0) for t, m in masses if t >= 4.0 - 1e-6)
    env.close()


def test_payload_sinks_the_robot():
    heights = []
    for payload in (0.0, 8.0):
        env = LocomotionEnv(EnvConfig(randomize_tasks=False))
        env.reset(options={"task": Task(dynamics=DynamicsSpec(payload_kg=payload)), "command": [0, 0, 0]})
        env.robot.set_torque_enabled(True)
        for _ in range(50):
            env.robot.step()
        heights.append(env.robot.base_state()[0][2])
        env.close()
    assert heights[1] < heights[0] - 0.01


def test_push_moves_the_base_sideways():
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"command": [0, 0, 0]})
    for _ in range(25):
        env.robot.step()
    y0 = env.robot.base_state()[0][1]
    env.apply_event({"kind": "push", "force_n": [0, 150, 0], "duration_s": 0.2})
    for _ in range(15):
        env.robot.step()
    assert env.robot.base_state()[0][1] - y0 > 0.03
    env.close()


def test_fall_terminates_the_episode():
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"command": [0, 0, 0]})
    for joint in env.robot_cfg.joint_names:
        env.robot.set_fault(joint, JointFault(mode="limp"))
    terminated = False
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(np.zeros(env.n_actions))
        if terminated:
            break
    assert terminated and info["fell"]
    env.close()


@pytest.mark.parametrize("terrain", [TerrainSpec(type="rough", roughness_m=0.02), TerrainSpec(type="flat")])
def test_walking_to_the_edge_of_a_heightfield_is_a_time_out_not_a_fall(terrain):
    # Past a heightfield's edge there is no ground; a robot carried there by its commands has not failed.
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"task": Task(terrain=terrain), "command": [0, 0, 0]})
    _, _, terminated, truncated, info = env.step(np.zeros(env.n_actions))
    assert not (terminated or truncated or info["left_terrain"])
    origin = env.robot.ground.origin
    pos, quat = pybullet.getBasePositionAndOrientation(env.robot.body, physicsClientId=env.robot.client)
    edge = (origin[0] + 2.0, origin[1] - WIDTH_M / 2 + 0.3, pos[2] + env.robot.ground.height_at(2.0, -3.7))
    pybullet.resetBasePositionAndOrientation(env.robot.body, edge, quat, physicsClientId=env.robot.client)
    _, _, terminated, truncated, info = env.step(np.zeros(env.n_actions))
    on_field = terrain.type != "flat"  # flat ground is an unbounded plane
    assert (truncated, info["left_terrain"]) == (on_field, on_field) and not terminated
    env.close()


@pytest.mark.parametrize("terrain", [TerrainSpec(type="slope", slope_deg=10.0),
                                     TerrainSpec(type="steps", step_height_m=0.05),
                                     TerrainSpec(type="rough", roughness_m=0.04)])
def test_terrain_is_flat_at_the_start_and_shaped_ahead(terrain):
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"task": Task(terrain=terrain), "command": [0, 0, 0]})
    ground = env.robot.ground
    assert ground.height_at(0.0, 0.0) == 0.0
    ahead = [ground.height_at(x, 0.1) for x in np.linspace(1.5, 3.0, 7)]
    assert max(abs(h) for h in ahead) > 0.01
    # The robot really stands on the heightfield (pybullet's centring is compensated).
    for _ in range(25):
        env.robot.step()
    assert env.robot.base_state()[0][2] > 0.2
    env.close()


def test_robot_climbs_onto_the_slope_surface():
    """A body dropped onto the slope's far part rests at the heightfield's height there."""
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"task": Task(terrain=TerrainSpec(type="slope", slope_deg=10.0)), "command": [0, 0, 0]})
    c = env.robot.client
    x = 3.0
    expected = env.robot.ground.height_at(x, 0.0)
    ball = pybullet.createMultiBody(1.0, pybullet.createCollisionShape(pybullet.GEOM_SPHERE, radius=0.05,
                                                                         physicsClientId=c),
                                    basePosition=[x, 0.0, expected + 0.3], physicsClientId=c)
    pybullet.changeDynamics(ball, -1, lateralFriction=5.0, rollingFriction=1.0, physicsClientId=c)
    for _ in range(200):
        pybullet.stepSimulation(physicsClientId=c)
    z = pybullet.getBasePositionAndOrientation(ball, physicsClientId=c)[0][2]
    px = pybullet.getBasePositionAndOrientation(ball, physicsClientId=c)[0][0]
    assert z - 0.05 == pytest.approx(env.robot.ground.height_at(px, 0.0), abs=0.02)
    env.close()


def test_curriculum_difficulty_zero_draws_the_nominal_task():
    env = LocomotionEnv(EnvConfig(), seed=3)
    env.set_difficulty(0.0)
    for _ in range(5):
        env.reset()
        t = env.robot.task
        assert t.terrain.type == "flat" and not t.faults and t.dynamics.payload_kg == 0.0
    env.close()


def test_sampler_never_draws_held_out_faults_or_friction():
    from metaloco.sim.tasks import TaskRanges, TaskSampler
    from metaloco.hardware.robot_config import load_robot

    ranges = TaskRanges()
    ranges.faults.probability = 1.0
    sampler = TaskSampler(ranges, load_robot("a1").joint_names, seed=0)
    joints, frictions = set(), []
    for _ in range(400):
        task, _ = sampler.sample()
        joints.update(task.faults)
        frictions.append(task.terrain.friction)
    assert "FL_lower_joint" not in joints
    assert len(joints) == 11
    assert min(frictions) > 0.35


def test_terrain_rebuilt_after_another_sits_at_its_own_heights():
    """pybullet keeps a replaced heightfield's first bounds; the sentinels must keep every terrain true."""
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    c = env.robot.client
    terrains = [TerrainSpec(type="slope", slope_deg=10.0), TerrainSpec(type="rough", roughness_m=0.04),
                TerrainSpec(type="slope", slope_deg=-8.0), TerrainSpec(type="flat")]
    for terrain in terrains:
        env.reset(options={"task": Task(terrain=terrain), "command": [0, 0, 0]})
        for x in (0.0, 3.0):
            expected = env.robot.ground.height_at(x, 1.0)
            ball = pybullet.createMultiBody(1.0, pybullet.createCollisionShape(pybullet.GEOM_SPHERE, radius=0.05,
                                                                                 physicsClientId=c),
                                            basePosition=[x, 1.0, expected + 0.3], physicsClientId=c)
            pybullet.changeDynamics(ball, -1, lateralFriction=5.0, rollingFriction=1.0, physicsClientId=c)
            for _ in range(150):
                pybullet.stepSimulation(physicsClientId=c)
            pos = pybullet.getBasePositionAndOrientation(ball, physicsClientId=c)[0]
            assert pos[2] - 0.05 == pytest.approx(env.robot.ground.height_at(pos[0], pos[1]), abs=0.02), terrain
            pybullet.removeBody(ball, physicsClientId=c)
    env.close()


@pytest.mark.parametrize("new", [TerrainSpec(type="flat"), TerrainSpec(type="rough", roughness_m=0.02)])
def test_terrain_changed_on_a_slope_starts_where_the_robot_stands(new):
    """A robot 0.4 m up a slope keeps its footing when the terrain changes: the new ground is built at the
    height it stood on, not at z = 0 (which dropped it, or buried it under a heightfield)."""
    env = LocomotionEnv(EnvConfig(randomize_tasks=False))
    env.reset(options={"task": Task(terrain=TerrainSpec(type="slope", slope_deg=10.0)), "command": [0, 0, 0]})
    c, body = env.robot.client, env.robot.body
    x = 3.0
    up = env.robot.ground.height_at(x, 0.0)
    assert up > 0.35
    pybullet.resetBasePositionAndOrientation(body, [x, 0.0, up + env.robot.cfg.base_height_m + 0.02], [0, 0, 0, 1],
                                             physicsClientId=c)
    env.apply_event({"kind": "terrain", "terrain": new})
    assert env.robot.ground.height_at(x, 0.0) == pytest.approx(up, abs=1e-9)
    for _ in range(100):
        env.robot.step()
    pos = env.robot.base_state()[0]
    assert pos[2] - up > 0.2, f"the robot dropped to z={pos[2]:.2f} from ground at {up:.2f}"
    assert pos[2] - up < env.robot.cfg.base_height_m + 0.05
    env.close()
