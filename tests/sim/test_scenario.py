"""Scenario files: the starter set runs, and every kind of bad input is refused before simulation."""

import glob
from pathlib import Path

import numpy as np
import pytest

from metaloco.hardware.robot_config import load_robot
from metaloco.schema import ConfigError
from metaloco.sim.env import EnvConfig, LocomotionEnv
from metaloco.sim.reward import RewardConfig
from metaloco.sim.scenario import event_from_json, load_scenario, run_scenario

STARTERS = sorted(glob.glob(str(Path(__file__).parents[2] / "config" / "scenarios" / "*.yaml")))


def test_the_starter_set_covers_the_family():
    names = {Path(p).stem for p in STARTERS}
    assert {"nominal_flat", "ice", "slope", "rough", "payload", "fr_knee_locked", "rl_thigh_limp", "fl_knee_weak",
            "fl_hip_bias", "knee_locked_then_ice"} <= names


@pytest.mark.parametrize("path", STARTERS, ids=lambda p: Path(p).stem)
def test_every_starter_scenario_loads_and_runs_to_its_end(path):
    scenario = load_scenario(path)
    trace = run_scenario(scenario, lambda obs, info: np.zeros(15))
    assert not trace.fell, f"{scenario.name}: the bare gait generator fell"
    assert len(trace.t) == int(round(scenario.duration_s / scenario.robot.control_dt))
    assert trace.t[-1] == pytest.approx(scenario.duration_s)


def test_the_trace_splits_the_return_into_its_reward_terms():
    scenario = load_scenario("nominal_flat")
    clipped = run_scenario(scenario, lambda obs, info: np.zeros(15))
    terms = clipped.reward_terms
    assert {"tracking_lin_vel", "tracking_ang_vel", "lin_vel_z", "orientation", "torques"} <= set(terms)
    assert terms["tracking_lin_vel"] > 0 and terms["torques"] < 0
    assert clipped.reward.sum() >= sum(terms.values()) - 1e-9  # each step's total is clipped at zero
    env = LocomotionEnv(EnvConfig(randomize_tasks=False, reward=RewardConfig(only_positive=False)),
                        robot_cfg=scenario.robot)
    unclipped = run_scenario(scenario, lambda obs, info: np.zeros(15), env=env)
    env.close()
    assert unclipped.reward_terms == pytest.approx(terms)
    assert unclipped.reward.sum() == pytest.approx(sum(terms.values()))


def test_events_resolve_to_complete_specs():
    s = load_scenario("knee_locked_then_ice")
    assert [e.kind for e in s.events] == ["fault", "terrain"]
    assert s.events[0].joint == "FR_lower_joint" and s.events[0].fault.mode == "locked"
    assert s.events[1].terrain.friction == 0.4 and s.events[1].terrain.type == "flat"
    assert s.last_event_s == 6.0


def test_command_profile_list():
    s = write_and_load_text("name: x\ncommand: [{t: 0, vx: 0.2}, {t: 2.0, vx: 0.8, yaw_rate: 0.1}]\n")
    assert s.command_at(1.0)[0] == 0.2
    assert list(s.command_at(2.5)) == [0.8, 0.0, 0.1]


def test_event_json_round_trip():
    robot = load_robot("a1")
    for event in load_scenario("knee_locked_then_ice").events + load_scenario("push").events:
        again = event_from_json(event.to_json(), robot)
        assert again.to_json() == event.to_json()


_tmp = {}


def write_and_load_text(text, tmp=None):
    import tempfile

    folder = Path(tempfile.mkdtemp())
    path = folder / "s.yaml"
    path.write_text(text)
    return load_scenario(path)


def bad(text, *fragments):
    with pytest.raises(ConfigError) as err:
        write_and_load_text(text)
    message = str(err.value)
    assert "s.yaml" in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_unknown_top_level_key():
    bad("name: x\nspeed: 3\n", "'speed'", "allowed keys", "duration_s")


def test_missing_name():
    bad("robot: a1\n", "'name'", "required")


def test_unknown_robot():
    bad("name: x\nrobot: spot\n", "'robot'", "unknown robot 'spot'", "a1", "aliengo")


def test_unknown_joint_name():
    bad("name: x\nevents:\n  - {t: 1.0, fault: {joint: FR_knee, mode: locked}}\n",
        "events[0].fault.joint", "no joint 'FR_knee'", "FR_lower_joint")


def test_unknown_fault_mode():
    bad("name: x\nevents:\n  - {t: 1.0, fault: {joint: FR_lower_joint, mode: broken}}\n",
        "events[0].fault.mode", "'broken'", "locked", "limp", "weak", "bias")


def test_unknown_terrain_type():
    bad("name: x\nterrain: {type: lava}\n", "terrain.type", "'lava'", "flat", "slope", "rough", "steps")


def test_value_out_of_range():
    bad("name: x\nterrain: {friction: 7.0}\n", "terrain.friction", "out of range", "[0.05, 2.0]")
    bad("name: x\nevents:\n  - {t: 1.0, fault: {joint: FR_lower_joint, mode: weak, strength: 1.5}}\n",
        "events[0].fault.strength", "out of range")


def test_wrong_type():
    bad("name: x\ndynamics: {payload_kg: heavy}\n", "dynamics.payload_kg", "expected a number")


def test_unknown_event_kind_and_two_kinds_in_one_event():
    bad("name: x\nevents:\n  - {t: 1.0, earthquake: true}\n", "events[0].earthquake", "unknown event kind")
    bad("name: x\nevents:\n  - {t: 1.0, clear_faults: true, push: {force_n: [0, 1, 0]}}\n", "exactly one")


def test_events_out_of_order_or_after_the_end():
    bad("name: x\nduration_s: 5\nevents:\n  - {t: 3.0, clear_faults: true}\n  - {t: 1.0, clear_faults: true}\n",
        "events[1].t", "time order")
    bad("name: x\nduration_s: 5\nevents:\n  - {t: 9.0, clear_faults: true}\n", "events[0].t", "after the end")


def test_parameter_for_another_terrain_type():
    bad("name: x\nterrain: {type: flat, slope_deg: 5}\n", "terrain.slope_deg", "only applies to terrain type 'slope'")


def test_missing_scenario_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario("/nonexistent/nothing.yaml")


def test_not_yaml():
    bad("name: [unclosed\n", "not valid YAML")
