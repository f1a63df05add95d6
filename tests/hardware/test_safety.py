"""The bridge's safety state machine as pure logic: message objects in, modes and clamped commands out."""

from __future__ import annotations

import numpy as np
import pytest

from metaloco.hardware.interface import JointCommand, RobotState
from metaloco.hardware.robot_config import load_robot
from metaloco.hardware.safety import Mode, SafetyError, SafetyMachine, roll_pitch


@pytest.fixture
def cfg():
    return load_robot("a1")


@pytest.fixture
def machine(cfg):
    return SafetyMachine(cfg)


def reading(cfg, quat=(0.0, 0.0, 0.0, 1.0), **changes) -> RobotState:
    n = cfg.n_joints
    state = RobotState(stamp_s=0.0, joint_pos=np.asarray(cfg.default_joint_pos, dtype=float), joint_vel=np.zeros(n),
                       joint_torque=np.zeros(n), imu_quat=np.asarray(quat, dtype=float), imu_ang_vel=np.zeros(3),
                       imu_lin_acc=np.array([0.0, 0.0, 9.81]))
    for key, value in changes.items():
        setattr(state, key, value)
    return state


def policy(cfg, offset=0.0) -> JointCommand:
    position = np.asarray(cfg.default_joint_pos) + offset
    return JointCommand(position=position, kp=np.asarray(cfg.kp), kd=np.asarray(cfg.kd))


def active(machine, cfg) -> SafetyMachine:
    machine.arm_stand()
    machine.activate(policy(cfg), stamp=1.0, now=1.0)
    return machine


def test_the_normal_path(machine, cfg):
    assert machine.mode == Mode.PASSIVE
    active(machine, cfg)
    assert machine.mode == Mode.ACTIVE


@pytest.mark.parametrize("request_, message", [
    (lambda m, c: m.activate(policy(c), 0.0, 0.0), "cannot activate from 'passive'"),
    (lambda m, c: m.rearm(), "nothing to re-arm in 'passive'"),
])
def test_refused_transitions_say_why(machine, cfg, request_, message):
    with pytest.raises(SafetyError, match=message):
        request_(machine, cfg)
    assert machine.mode == Mode.PASSIVE


def test_activation_needs_a_fresh_command(machine, cfg):
    machine.arm_stand()
    with pytest.raises(SafetyError, match="no policy command"):
        machine.activate(None, None, now=1.0)
    with pytest.raises(SafetyError, match="stale command: 100 ms old"):
        machine.activate(policy(cfg), stamp=0.9, now=1.0)
    assert machine.mode == Mode.STAND


def test_stale_after_three_control_periods(machine, cfg):
    dt = cfg.control_dt
    assert machine.check_command(policy(cfg), stamp=0.0, now=3 * dt - 1e-9) is None
    assert "stale" in machine.check_command(policy(cfg), stamp=0.0, now=3 * dt + 1e-3)


@pytest.mark.parametrize("field", ["joint_pos", "joint_vel", "joint_torque", "imu_quat", "imu_ang_vel", "imu_lin_acc"])
def test_nan_anywhere_in_the_state_is_caught(machine, cfg, field):
    state = reading(cfg)
    getattr(state, field)[0] = np.nan
    assert machine.check_state(state) == f"NaN in state.{field}"


def test_nan_in_the_command_is_caught(machine, cfg):
    command = policy(cfg)
    command.kd[3] = np.inf
    assert machine.check_command(command, 1.0, 1.0) == "NaN in command.kd"


def test_tilt_beyond_the_limit_is_a_fall_only_with_torque_on(machine, cfg):
    angle = cfg.max_tilt_rad + 0.05
    rolled = reading(cfg, quat=(np.sin(angle / 2), 0.0, 0.0, np.cos(angle / 2)))
    assert machine.check_state(rolled) is None, "passive: a robot lying on its side may be re-armed"
    machine.arm_stand()
    assert "attitude beyond limits: roll" in machine.check_state(rolled)
    slight = cfg.max_tilt_rad - 0.05
    assert machine.check_state(reading(cfg, quat=(0.0, np.sin(slight / 2), 0.0, np.cos(slight / 2)))) is None


def test_joint_fault_bits_name_the_joint(machine, cfg):
    assert machine.check_state(reading(cfg, fault_bits=1 << 5)) == "joint fault reported: ['FL_lower_joint']"


@pytest.mark.parametrize("start", ["passive", "stand", "active"])
def test_estop_damps_from_every_mode_and_rearm_goes_to_passive(machine, cfg, start):
    if start != "passive":
        machine.arm_stand()
    if start == "active":
        machine.activate(policy(cfg), 1.0, 1.0)
    machine.fault("estop")
    assert machine.mode == Mode.DAMPING and machine.reason == "estop"
    with pytest.raises(SafetyError, match="re-arm first"):
        machine.arm_stand()
    with pytest.raises(SafetyError, match="cannot activate from 'damping'"):
        machine.activate(policy(cfg), 1.0, 1.0)
    machine.rearm()
    assert machine.mode == Mode.PASSIVE, "re-arming leads to passive (torque off), never straight back to torque"


def test_clamp_to_joint_limits_gains_and_torque(machine, cfg):
    state = reading(cfg)
    command = JointCommand(position=np.full(12, 10.0), kp=np.full(12, 100.0), kd=np.full(12, -1.0),
                           torque_ff=np.full(12, 99.0), velocity=np.full(12, 99.0))
    out = machine.clamp(command, state)
    assert np.all(out.kp == cfg.kp[0]) and np.all(out.kd == 0.0), "gains never exceed the robot YAML's"
    tau = out.kp * (out.position - state.joint_pos)
    assert np.all(np.abs(tau) <= np.asarray(cfg.torque_limits) + 1e-9), "the PD torque at this pose stays within limits"
    assert np.all(out.position <= np.asarray(cfg.joint_upper)), "targets stay inside the joint limits"
    assert np.all(out.torque_ff == cfg.torque_limits[0]) and np.all(out.velocity == cfg.velocity_limits[0])
    far = state.joint_pos + 5.0
    limp = machine.clamp(JointCommand(far, np.zeros(12), np.zeros(12)), state)
    assert np.all(limp.position <= np.asarray(cfg.joint_upper)), "no torque reach limit at kp = 0, joint limits still"


def test_roll_pitch():
    assert np.allclose(roll_pitch(np.array([np.sin(0.2), 0.0, 0.0, np.cos(0.2)])), (0.4, 0.0))
    assert np.allclose(roll_pitch(np.array([0.0, np.sin(-0.15), 0.0, np.cos(-0.15)])), (0.0, -0.3))
