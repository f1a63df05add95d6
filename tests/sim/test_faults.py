"""Each fault mode does to the joint exactly what DESIGN.md says, and nothing more."""

import numpy as np
import pytest

from metaloco.hardware.interface import JointCommand
from metaloco.sim.tasks import DynamicsSpec, JointFault

KNEE = "FR_lower_joint"


def settle(robot, seconds=0.5):
    for _ in range(int(seconds / robot.cfg.control_dt)):
        robot.step()


def command_offset(robot, offset):
    """PD targets `offset` rad away from where the joints are now."""
    return JointCommand(position=robot.true_joint_pos() + offset, kp=robot.kp, kd=robot.kd)


def test_locked_joint_does_not_move_under_torque(robot):
    settle(robot)
    i = robot.cfg.joint_index(KNEE)
    robot.set_fault(KNEE, JointFault(mode="locked"))
    before = robot.true_joint_pos()
    robot.write_command(command_offset(robot, 0.6))  # every motor pulls hard toward +0.6 rad
    settle(robot, 1.0)
    moved = np.abs(robot.true_joint_pos() - before)
    assert moved[i] < 2e-3, f"locked knee moved {moved[i]:.4f} rad"
    others = np.delete(moved, i)
    assert others.max() > 0.1, "the healthy joints should have moved under the same command"


def test_locked_joint_moves_again_when_cleared(robot):
    settle(robot)
    i = robot.cfg.joint_index(KNEE)
    robot.set_fault(KNEE, JointFault(mode="locked"))
    settle(robot, 0.2)
    robot.clear_faults()
    before = robot.true_joint_pos()[i]
    robot.write_command(command_offset(robot, 0.4))
    settle(robot, 0.5)
    assert abs(robot.true_joint_pos()[i] - before) > 0.1


def test_limp_joint_produces_no_torque(robot):
    settle(robot)
    i = robot.cfg.joint_index("RL_upper_joint")
    robot.set_fault("RL_upper_joint", JointFault(mode="limp"))
    robot.write_command(command_offset(robot, 0.3))
    robot.step(1)
    tau = robot.read_state().joint_torque
    assert tau[i] == 0.0
    assert np.abs(np.delete(tau, i)).min() > 1.0


def test_weak_joint_torque_is_scaled(a1_cfg):
    from metaloco.sim.robot import SimRobot

    torques = []
    for fault in (None, JointFault(mode="weak", strength=0.4)):
        r = SimRobot(a1_cfg, seed=0)
        r.reset()
        settle(r)
        if fault:
            r.set_fault(KNEE, fault)
        r.write_command(command_offset(r, 0.2))  # small error: no clipping at 40% of the limit
        r.step(1)
        torques.append(r.read_state().joint_torque)
        r.close()
    i = a1_cfg.joint_index(KNEE)
    assert torques[1][i] == pytest.approx(0.4 * torques[0][i], rel=1e-6)
    assert abs(torques[0][i]) > 1.0
    np.testing.assert_allclose(np.delete(torques[1], i), np.delete(torques[0], i), rtol=1e-9)


def test_weak_joint_limit_is_scaled(robot):
    i = robot.cfg.joint_index(KNEE)
    robot.set_fault(KNEE, JointFault(mode="weak", strength=0.3))
    robot.write_command(command_offset(robot, 3.0))  # saturate
    robot.step(1)
    assert abs(robot.read_state().joint_torque[i]) == pytest.approx(0.3 * robot.cfg.torque_limits[i])


def test_bias_shifts_only_what_the_policy_sees(a1_cfg):
    from metaloco.sim.robot import SimRobot

    runs = []
    for fault in (None, JointFault(mode="bias", offset_rad=0.15)):
        r = SimRobot(a1_cfg, seed=0)
        r.reset()
        settle(r, 0.3)
        seen_before = r.read_state().joint_pos
        if fault:
            r.set_fault("FL_hip_joint", fault)
        seen_after = r.read_state().joint_pos
        settle(r, 0.5)
        runs.append((seen_before, seen_after, r.true_joint_pos(), r.read_state().joint_pos))
        r.close()
    i = a1_cfg.joint_index("FL_hip_joint")
    (_, _, true_clean, seen_clean), (before, after, true_biased, seen_biased) = runs
    assert after[i] - before[i] == pytest.approx(0.15)
    np.testing.assert_allclose(np.delete(after, i), np.delete(before, i))
    # The physics is untouched: the biased robot moves exactly like the healthy one ...
    np.testing.assert_allclose(true_biased, true_clean, atol=1e-9)
    # ... and only its reading of that one joint differs.
    assert seen_biased[i] - seen_clean[i] == pytest.approx(0.15)


def test_motor_strength_scales_every_torque(robot):
    settle(robot)
    robot.write_command(command_offset(robot, 0.2))
    robot.step(1)
    full = robot.read_state().joint_torque
    robot.reset()
    settle(robot)
    robot.set_dynamics(DynamicsSpec(motor_strength=0.5))
    robot.write_command(command_offset(robot, 0.2))
    robot.step(1)
    half = robot.read_state().joint_torque
    assert np.abs(half).sum() == pytest.approx(0.5 * np.abs(full).sum(), rel=0.05)


def test_latency_delays_the_command(robot):
    settle(robot)
    robot.set_dynamics(DynamicsSpec(latency_ms=15.0))
    start = robot.true_joint_pos()
    robot.write_command(command_offset(robot, 0.3))
    robot.step(2)  # 10 ms: the old command still holds
    assert np.abs(robot.true_joint_pos() - start).max() < 0.02
    robot.step(4)  # 30 ms: the new one has acted
    assert np.abs(robot.true_joint_pos() - start).max() > 0.03
