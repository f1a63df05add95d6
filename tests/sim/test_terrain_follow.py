"""A heightfield window that follows the robot: the ground goes on wherever a sim-in-the-loop robot walks."""

import numpy as np
import pybullet
import pytest

from metaloco.hardware.robot_config import load_robot
from metaloco.sim.robot import SimRobot
from metaloco.sim.tasks import Task, TerrainSpec
from metaloco.sim.terrain import BEHIND_M, CELL_M, LENGTH_M, WIDTH_M


def _surface(robot: SimRobot, x: float, y: float) -> float:
    """The height pybullet's collision geometry has under (x, y): a ray cast straight down."""
    hit = pybullet.rayTest([x, y, 30.0], [x, y, -30.0], physicsClientId=robot.client)[0]
    assert hit[0] == robot.ground.body, f"nothing under ({x:.2f}, {y:.2f})"
    return hit[3][2]


def _put(robot: SimRobot, x: float, y: float) -> None:
    z = robot.ground.height_at(x, y) + robot.cfg.base_height_m
    pybullet.resetBasePositionAndOrientation(robot.body, [x, y, z], [0, 0, 0, 1], physicsClientId=robot.client)


@pytest.mark.parametrize("terrain", [TerrainSpec(type="slope", slope_deg=10.0, friction=0.4),
                                     TerrainSpec(type="steps", step_height_m=0.05),
                                     TerrainSpec(type="rough", roughness_m=0.04)])
def test_the_window_moves_with_the_robot_and_keeps_the_ground_it_had(terrain):
    robot = SimRobot(load_robot("a1"))
    robot.follow_terrain = True
    try:
        robot.reset(Task(terrain=terrain))
        first = robot.ground
        # Points the robot walks over near the far edge, and points the old window does not have.
        near = [(x, y) for x in np.arange(16.0, 19.0, 0.37) for y in (-0.6, 0.0, 0.45)]
        before = {p: first.height_at(*p) for p in near}
        surface = {p: _surface(robot, *p) for p in near}  # between cells: pybullet's interpolation
        robot.step()
        assert robot.ground is first  # at the origin nothing moves
        _put(robot, 19.0, 0.3)  # within 1.5 m of the far edge (the window reaches 20 m ahead)
        robot.step()
        moved = robot.ground
        assert moved is not first and moved.inside(19.0, 0.3, margin=BEHIND_M - 0.1)
        for p, h in before.items():
            assert moved.height_at(*p) == pytest.approx(h, abs=1e-9), p  # the shared cells keep their heights
            assert _surface(robot, *p) == pytest.approx(surface[p], abs=1e-6), p  # and so does pybullet
        beyond = [(x, y) for x in (24.0, 30.5, 37.0) for y in (-1.2, 0.7)]  # past the old window's end, on cells
        for p in beyond:
            assert _surface(robot, *p) == pytest.approx(moved.height_at(*p), abs=2e-3), p
        if terrain.type == "slope":  # a slope keeps climbing at its angle
            rise = moved.height_at(37.0, 0.0) - moved.height_at(24.0, 0.0)
            assert rise == pytest.approx(np.tan(np.deg2rad(10.0)) * 13.0, abs=2 * CELL_M)
        if terrain.type == "rough":
            assert np.std([moved.height_at(*p) for p in beyond]) > 0.003  # new bumps, not a flat tail
        friction = pybullet.getDynamicsInfo(moved.body, -1, physicsClientId=robot.client)[1]
        assert friction == pytest.approx(terrain.friction)
        # Sideways too: the window re-centres on the robot's y.
        _put(robot, 20.0, WIDTH_M / 2 - 1.0 + moved.window_origin()[1])
        robot.step()
        assert robot.ground.inside(20.0, WIDTH_M / 2 - 1.0 + moved.window_origin()[1], margin=WIDTH_M / 2 - 0.1)
    finally:
        robot.close()


def test_training_robots_keep_one_window_and_a_robot_without_follow_finds_the_edge():
    robot = SimRobot(load_robot("a1"))
    try:
        robot.reset(Task(terrain=TerrainSpec(type="rough", roughness_m=0.02)))
        first = robot.ground
        _put(robot, LENGTH_M - BEHIND_M - 0.5, 0.0)
        robot.step()
        assert robot.ground is first and not first.inside(LENGTH_M - BEHIND_M + 1.0, 0.0)
    finally:
        robot.close()


def test_a_scenario_walks_past_the_first_window_and_always_has_ground_around_it(tmp_path):
    # The shipped policy, 30 s at 0.8 m/s on rough ground: past the 20 m the first window reaches ahead. At every
    # step the robot must stand on the current window, at least 1 m inside its edges. Whether the policy stays up
    # that long is not this test's question (the models shipped in session 25 fall in 2 of 3 such runs, late,
    # after 15 and 30 m; models/a1/HISTORY.md, session 25), so a fall ends the walk but does not fail the test.
    from pathlib import Path

    from metaloco.adaptation.evaluate import MethodPolicy
    from metaloco.sim.env import EnvConfig, LocomotionEnv
    from metaloco.sim.scenario import load_scenario, run_scenario

    path = tmp_path / "long_rough.yaml"
    path.write_text("name: long_rough\nrobot: a1\nseed: 3\nduration_s: 30.0\ncommand: {vx: 0.8, vy: 0.0, yaw_rate: 0.0}\n"
                    "terrain: {type: rough, roughness_m: 0.03, friction: 0.8}\n")
    scenario = load_scenario(path)
    models = Path(__file__).parents[2] / "models" / "a1"
    env = LocomotionEnv(EnvConfig(robot="a1", randomize_tasks=False), seed=scenario.seed, robot_cfg=scenario.robot)
    windows, outside = set(), []
    try:
        policy = MethodPolicy("adaptive", models, scenario.robot, env.dt)

        def act(obs, info):
            robot = env.robot
            x, y, _ = pybullet.getBasePositionAndOrientation(robot.body, physicsClientId=robot.client)[0]
            windows.add(robot.ground.window)
            if not robot.ground.inside(x, y, margin=1.0):
                outside.append((round(x, 2), round(y, 2), robot.ground.window))
            return policy(obs, info)

        trace = run_scenario(scenario, act, env=env)
    finally:
        env.close()
    walked = float(np.sum(np.linalg.norm(np.diff(trace.base_pos[:, :2], axis=0), axis=1)))
    assert walked > LENGTH_M - BEHIND_M + 1.0, (walked, trace.fell)
    assert len(windows) >= 2, "the window never moved"
    assert not outside, outside[:5]